"""``tollway webhooks events | attempts | replay | test`` (cli/webhook_deliveries.py) against a real Valkey and
an embedded ClickHouse of its own (each command a process, as on a host), and ``tollway dispatch --help``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event, event_id
from tollway.notifications.queue import event_row

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000


def run(code: str, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


CLI = """
import sys
from tollway.cli.webhook_deliveries import main_for_tests
from tollway.settings import Settings
raise SystemExit(main_for_tests(sys.argv[1:], Settings()))
"""

SEED = """
import sys
from tollway.notifications.history import table_rows
from tollway.warehouse.connection import connect, insert_json_rows
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.settings import WarehouseSettings
w = WarehouseSettings()
client = connect(w.dsn)
Migrator(client, w.database).migrate()
for table, data in table_rows(open(sys.argv[1]).read().splitlines()).items():
    insert_json_rows(client, w.database, table, data)
client.close()
"""


def test_webhooks_commands(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TOLLWAY_REDIS_URL": valkey_fresh.url,
        "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
    }
    events = [Event(event_id("key.revoked", n), "key.revoked", T0 + n, "acme", {"key_id": f"k{n}"}) for n in range(3)]
    rows = [event_row(e) for e in events]
    rows.append(json.dumps({"t": "webhook_deliveries", "event_id": events[0].id, "endpoint_id": "ep_a",
                            "attempt_id": "x", "attempt": 1, "ts": T0 + 5, "status": 503, "outcome": "retry",
                            "duration_ms": 7, "error": "HTTP 503"}))  # fmt: skip
    (tmp_path / "rows").write_text("\n".join(rows))
    seeded = run(SEED, env, str(tmp_path / "rows"))
    assert seeded.returncode == 0, seeded.stderr

    listed = run(CLI, env, "events", "--customer", "acme", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [e.id for e in reversed(events)]
    plain = run(CLI, env, "events", "--type", "key.revoked", "--limit", "1")
    assert plain.stdout.split()[1:3] == [events[2].id, "key.revoked"]
    tried = run(CLI, env, "attempts", "ep_a")
    assert "#1  retry" in tried.stdout
    assert "HTTP 503" in tried.stdout

    import asyncio

    from redis.asyncio import Redis as AsyncRedis

    from tests.integration.test_webhook_dispatch import PEPPER, sealed_endpoint

    async def register() -> str:
        async_client = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            return (await sealed_endpoint(async_client, "https://a.example/", "tw:"))[0]
        finally:
            await async_client.aclose()

    env["TOLLWAY_PEPPER"] = PEPPER  # replay and test read the endpoints, their secrets sealed with it
    endpoint_a = asyncio.run(register())
    client = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    replayed = run(CLI, env, "replay", events[1].id)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "replayed 1 event(s): 1 deliveries queued"
    ranged = run(CLI, env, "replay", "--since", "2026-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z")
    assert ranged.stdout.strip() == "replayed 3 event(s): 2 deliveries queued"  # one was already waiting
    tested = run(CLI, env, "test", endpoint_a)
    assert tested.returncode == 0, tested.stderr
    assert len(client.zrange(keys.due_key("tw:"), 0, -1)) == 4
    client.close()

    for argv, message in [
        (["events", "--type", "nope"], "unknown event type 'nope'"),
        (["events", "--since", "yesterday"], "not an RFC 3339 instant"),
        (["events", "--limit", "0"], "--limit takes a whole number"),
        (["replay"], "give an event id, or --since and --until"),
        (["replay", "evt_x"], "not an event id"),
        (["replay", f"evt_{'0' * 32}"], "no event evt_"),
        (["test", "ep_none"], "no endpoint 'ep_none'"),
    ]:
        bad = run(CLI, env, *argv)
        assert bad.returncode == 2, (argv, bad.stdout, bad.stderr)
        assert message in bad.stderr, (argv, bad.stderr)
        assert "Traceback" not in bad.stderr


def test_dispatch_command_is_registered() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    shown = subprocess.run(
        [sys.executable, "-m", "tollway", "dispatch", "--help"], env=env, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "--no-history" in shown.stdout


def test_tollway_meter_runs_the_dispatcher_and_writes_the_history(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    import asyncio
    import time

    from redis.asyncio import Redis

    from tests.integration.test_webhook_dispatch import PEPPER, emit, make_event, sealed_endpoint
    from tollway.harness.tollway_server import TollwayServer
    from tollway.harness.webhook_receiver import WebhookReceiver
    from tollway.notifications.queue import history_key

    chdb = f"chdb://{tmp_path / 'chdb'}"
    events = [make_event(n, f"cus_{n % 3}") for n in range(20)]

    async def deliver() -> tuple[str, list[str]]:
        receiver = WebhookReceiver()
        await receiver.start()
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        endpoint_id, receiver.secrets["/ok"] = await sealed_endpoint(redis, receiver.url(), "tw:")
        meter = TollwayServer(
            tmp_path,
            redis_url=valkey_fresh.url,
            pepper=PEPPER,
            extra_env={
                "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
                "TOLLWAY_CLICKHOUSE_DSN": chdb,
                "TOLLWAY_WEBHOOKS_ALLOW_HTTP": "true",
                "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true",
            },
            name="tollway-meter",
            command="meter",
        )
        await asyncio.to_thread(meter.start, 30)
        try:
            for event in events:
                await emit(redis, event)
            deadline = time.monotonic() + 30
            while receiver.count < 20 or await redis.llen(history_key("tw:")):
                assert time.monotonic() < deadline, (receiver.count, await redis.llen(history_key("tw:")))
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(meter.stop)
            await receiver.stop()
            await redis.aclose()
        assert receiver.bad_signatures == 0
        return endpoint_id, receiver.ids()

    endpoint_id, delivered = asyncio.run(deliver())
    assert sorted(delivered) == sorted(e.id for e in events)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOLLWAY_REDIS_URL": valkey_fresh.url}
    env["TOLLWAY_CLICKHOUSE_DSN"] = chdb
    listed = run(CLI, env, "events", "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["id"] for line in listed.stdout.splitlines()) == sorted(e.id for e in events)
    tried = run(CLI, env, "attempts", endpoint_id, "--limit", "100")
    assert len(tried.stdout.splitlines()) == 20
    assert all("delivered 204" in line for line in tried.stdout.splitlines())
