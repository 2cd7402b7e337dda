"""Reservations end to end (issue 14, item 3): a token-metered route through real Envoy, the real ext_proc
body meter and access-log stream of ``tollway meter``, a checking ``tollway serve``, Valkey and ClickHouse
(chdb). A request reserves 4000 tokens at admission; the response settles the reservation with the body
meter's value (unused tokens back, an overrun charged within the plan's allowance). ``kill -9`` of the
meter while a request is in flight loses its access-log entry: after a restart the sweeper closes that
reservation at its reserve. ``kill -9`` of the checking process while a request is in flight changes
nothing: the meter settles it. In the end every request is settled exactly once, no reservation is open,
and the reconcile identity holds: the grant minus Σ of the rows' prices is the balance left in Valkey."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import EnvoyFactory
from tests.integration.test_body_meter_through_envoy import JsonUpstream, Reply, as_json
from tests.integration.test_metering_through_envoy import request_id_in_response
from tests.support.tollway_cli import TEST_PEPPER, create_key, run_cli
from tollway.credits.grants import decode_all
from tollway.harness.envoy_body_meters import with_body_meters
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: reserve, version: "1"}
meters:
  requests: {unit: requests}
  tokens: {unit: response_json, field: usage.total_tokens, features: [chat]}
features:
  chat:
    routes: [{methods: [GET], prefix: /v1/chat/}]
plans:
  llm:
    features: [chat]
    prepaid: {unit: USD, overrun: "0.02", reserve: {tokens: 4000}}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: llm, model: per_unit, meter: tokens, unit_amount: "0.00001"}
"""
GRANT = 1_000_000  # 1.00 USD; a token costs 10 micro-USD, a reservation 40_000

_ROWS = """
import json, sys
from tollway.warehouse.connection import connect, query_rows
client = connect("chdb://" + sys.argv[1])
rows = query_rows(
    client,
    "SELECT envoy_request_id, version, price_micros, reason FROM tollway.usage FINAL WHERE outcome = 'admitted'",
)
print(json.dumps([list(r) for r in rows]))
"""


def health(server: TollwayServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/healthz", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def wait_for(what: str, condition: Any, timeout: float = 60.0, state: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f": {state()}" if state else ""))
        time.sleep(0.2)


def test_reserve_settle_overrun_and_kill_9_through_envoy(
    valkey_fresh: ValkeyServer, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    catalog, spool, chdb = tmp_path / "catalog.yaml", tmp_path / "spool", tmp_path / "chdb"
    catalog.write_text(CATALOG)
    shared = {"TOLLWAY_CATALOG": str(catalog), "TOLLWAY_SPOOL_DIR": str(spool)}
    meter_env = {
        **shared,
        "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{chdb}",
        "TOLLWAY_CLICKHOUSE_DATABASE": "tollway",
        "TOLLWAY_RESERVATION_TIMEOUT_S": "4",
        "TOLLWAY_RESERVATION_SWEEP_S": "0.5",
    }
    check_env = {**shared, "TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"}
    upstream = JsonUpstream()
    servers: list[TollwayServer] = []

    def meter_process(port: int | None = None) -> TollwayServer:
        server = TollwayServer(
            tmp_path, redis_url=valkey_fresh.url, pepper="", extra_env=meter_env, name=f"meter-{len(servers)}",
            command="meter", metering_port=port,
        )  # fmt: skip
        servers.append(server)
        return server.start(timeout=30)

    def check_process(ports: tuple[int, int] | None = None) -> TollwayServer:
        http, grpc = ports or (None, None)
        server = TollwayServer(
            tmp_path, redis_url=valkey_fresh.url, pepper=TEST_PEPPER, extra_env=check_env,
            name=f"checks-{len(servers)}", http_port=http, grpc_port=grpc,
        )  # fmt: skip
        servers.append(server)
        return server.start()

    try:
        meter = meter_process()
        checks = check_process()

        def transform(cfg: Any) -> Any:
            metered = with_body_meters(cfg, meter.metering_endpoint, ["/v1/chat/"], cluster="tollway_metering")
            return request_id_in_response(metered)

        envoy = envoy_factory(
            "http",
            endpoints={
                "tollway_http": [checks.http_endpoint],
                "tollway_metering": [meter.metering_endpoint],
                "upstream": [upstream.endpoint],
            },
            transform=transform,
        )
        key = str(create_key(valkey_fresh.url, "acme")["api_key"])
        done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "acme", "--plan", "llm", "--json")
        assert done.code == 0, done.stderr
        valkey = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
        # The meter holds the embedded ClickHouse (one process per path): the grant writes its ledger entry to
        # a scratch one, and `tollway credits sync` writes it into the meter's once the servers have stopped.
        scratch = {"TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'scratch-ledger'}", "TOLLWAY_CATALOG": str(catalog)}
        granted = run_cli(
            valkey_fresh.url, "credits", "grant", "acme", "1.00", "--unit", "USD", "--id", "g1", env=scratch
        )
        assert granted.code == 0, granted.stderr
        client = httpx.Client(base_url=envoy.base_url, headers={"authorization": f"Bearer {key}"}, timeout=20)
        sent: dict[str, str] = {}  # envoy request id -> request name

        def reply(path: str, tokens: int, pause: float = 0.0) -> None:
            body = as_json({"usage": {"total_tokens": tokens}, "pad": "x" * 200})
            upstream.replies[path] = Reply(body, chunk=64 if pause else 0, pause=pause)

        def get(name: str) -> httpx.Response:
            response = client.get(f"/v1/chat/{name}")
            sent[response.headers["x-request-id"]] = name
            return response

        reply("/v1/chat/a", 1_500)  # 2_500 tokens back
        reply("/v1/chat/b", 9_000)  # 5_000 over: 50_000 more, within the balance
        assert get("a").status_code == 200
        assert get("b").status_code == 200
        wait_for("the meter to settle a and b", lambda: health(meter)["metering"]["access_log_rows"] >= 2)

        # kill -9 of the meter while c's response is on its way: c's access-log entry is lost.
        reply("/v1/chat/c", 100, pause=0.3)
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(target=lambda: answers.append(get("c")))
        in_flight.start()
        time.sleep(0.5)
        os.kill(meter.process.pid, signal.SIGKILL)
        in_flight.join(30)
        meter.stop()
        meter = meter_process(meter.metering_port)

        # kill -9 of the checking process while d is in flight: its answer was given; the meter settles d.
        reply("/v1/chat/d", 100, pause=0.3)
        answers.clear()
        in_flight = threading.Thread(target=lambda: answers.append(get("d")))
        in_flight.start()
        time.sleep(0.5)
        os.kill(checks.process.pid, signal.SIGKILL)
        in_flight.join(30)
        assert answers[0].status_code == 200
        checks.stop()
        checks = check_process((checks.http_port, checks.grpc_port))
        reply("/v1/chat/e", 4_000)  # exactly the reserve
        assert get("e").status_code == 200

        def all_settled() -> bool:  # settled markers are deleted a timeout after their row is right
            return not any(v.startswith("R ") for v in valkey.hgetall("tw:rv:{acme}").values())

        wait_for(
            "every reservation to be settled",
            all_settled,
            state=lambda: (valkey.hgetall("tw:rv:{acme}"), health(meter)["metering"], meter.log_tail(30)),
        )
        wait_for("every reservation forgotten", lambda: not valkey.hgetall("tw:rv:{acme}"))
    finally:
        for server in servers:
            server.stop()
        upstream.close()
    rows_out = subprocess.run(
        [sys.executable, "-c", _ROWS, str(chdb)], capture_output=True, text=True, timeout=120, check=False
    )
    assert rows_out.returncode == 0, rows_out.stderr[-2000:]
    rows = {sent[rid]: (version, price, reason) for rid, version, price, reason in json.loads(rows_out.stdout)}
    # A settled request's row carries its settled price. The sweeper may have come by (after the 4 s test
    # timeout) while only the decision row was loaded: it then writes the same price as a correction.
    settled = {"", "reservation-corrected"}
    assert rows["a"][1] == 15_000
    assert rows["a"][2] in settled
    assert rows["b"][1] == 90_000
    assert rows["b"][2] in settled
    assert rows["c"] == (3, 40_000, "reservation-closed-at-reserve")
    assert rows["d"][1] == 1_000
    assert rows["d"][2] in settled
    assert rows["e"][1] == 40_000
    assert rows["e"][2] in settled
    held = sum(g.remaining + g.forfeited for g in decode_all(valkey.hgetall("tw:cr:{acme}")))
    assert held == GRANT - sum(price for _, price, _ in rows.values())  # the reconcile identity
    # ... and the command that checks it: the ledger (the grant, written by sync) and the rows agree with Valkey.
    ledger = {"TOLLWAY_CLICKHOUSE_DSN": f"chdb://{chdb}", "TOLLWAY_CLICKHOUSE_DATABASE": "tollway"}
    synced = run_cli(valkey_fresh.url, "credits", "sync", "--customer", "acme", env=ledger)
    assert synced.code == 0, synced.stderr
    reconciled = run_cli(valkey_fresh.url, "credits", "reconcile", "--customer", "acme", env=ledger)
    assert reconciled.code == 0, reconciled.stdout + reconciled.stderr
    assert "reconciled: Redis and the ledger agree" in reconciled.stdout
