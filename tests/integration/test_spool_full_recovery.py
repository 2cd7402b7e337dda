"""A spool that filled recovers without a restart once its rows are loaded (issue 13, item 9).

Two checking processes share a spool smaller than two segments (TOLLWAY_SPOOL_MAX_BYTES below
writers × TOLLWAY_SPOOL_SEGMENT_BYTES) and nothing loads it yet: it fills, and every check is refused with
503 ``metering-unavailable`` — visible in the decisions metric, in ``/healthz`` ``rows_refused`` and in
``/readyz``. Then ``tollway meter`` starts and loads the rows into ClickHouse: both processes admit again,
the pending-bytes gauge falls to about nothing, and every admitted request has its row in ClickHouse.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TollwayFactory
from tests.integration.test_metrics import scrape
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "metering" / "catalog.yaml"
SPOOL_BYTES = 1 << 20  # the smallest spool Tollway accepts; one segment of the same size
PADDING = "p" * 2000  # long request ids: bigger rows, so the spool fills in fewer checks

_COUNT = """
import json, sys
from tollway.warehouse.connection import connect, query_rows
client = connect("chdb://" + sys.argv[1])
rows = query_rows(
    client, "SELECT outcome, count() FROM tollway.usage FINAL WHERE customer_id = 'cust-full' GROUP BY outcome"
)
print(json.dumps({str(outcome): int(n) for outcome, n in rows}))
"""


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


_client = httpx.Client(timeout=5)  # keep-alive connections to each process


def _check(server: TollwayServer, key: str, n: int) -> httpx.Response:
    return _client.get(
        f"http://127.0.0.1:{server.http_port}/v1/items/{n}",
        headers={"x-api-key": key, "x-request-id": f"req-{n:06d}-{PADDING}"},
    )


def test_a_full_spool_admits_again_once_loaded_without_a_restart(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, tmp_path: Path
) -> None:
    spool, chdb = tmp_path / "spool", tmp_path / "chdb"
    shared = {
        "TOLLWAY_CATALOG": str(CATALOG),
        "TOLLWAY_SPOOL_DIR": str(spool),
        "TOLLWAY_SPOOL_MAX_BYTES": str(SPOOL_BYTES),
        "TOLLWAY_SPOOL_SEGMENT_BYTES": str(SPOOL_BYTES),
        "TOLLWAY_SPOOL_FSYNC_INTERVAL_S": "0.2",
    }
    checking = {**shared, "TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"}
    servers = [tollway_factory(checking, redis_url=valkey_fresh.url) for _ in range(2)]
    key = str(create_key(valkey_fresh.url, "cust-full")["api_key"])
    done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "cust-full", "--plan", "pro", "--json")
    assert done.code == 0, done.stderr

    admitted = 0
    sent = 0
    full = [False, False]
    while not all(full):  # ClickHouse is not loaded yet: the spool fills
        assert sent < 4000, "the spool never filled"
        index = sent % 2
        response = _check(servers[index], key, sent)
        sent += 1
        if response.status_code == 200:
            admitted += 1
            continue
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("/metering-unavailable")
        full[index] = True
    time.sleep(0.5)  # both processes have seen the spool full
    refusals_before = 0
    for server in servers:
        for n in range(3):
            assert _check(server, key, sent + n).status_code == 503
        sent += 3
        metering = _get(server.admin_port, "/healthz").json()["metering"]
        assert metering["spool_full"] is True
        assert metering["rows_refused"] >= 3, metering
        refusals_before += metering["rows_refused"]
        assert _get(server.admin_port, "/readyz").status_code == 503
        decisions = scrape(server.admin_port)[0]["tollway_decisions_total"]
        refused = decisions.get((("outcome", "refused"), ("protocol", "http"), ("reason", "metering-unavailable")))
        assert refused is not None, decisions
        assert refused >= 3
    assert refusals_before == sent - admitted, "every refusal counted once, in some process"

    meter = TollwayServer(
        tmp_path,
        redis_url=valkey_fresh.url,
        pepper="",
        extra_env={
            **shared,
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{chdb}",
            "TOLLWAY_CLICKHOUSE_DATABASE": "tollway",
            "TOLLWAY_LOADER_INSERT_INTERVAL_S": "0.2",
        },
        name="tollway-meter",
        command="meter",
    )
    try:
        meter.start(timeout=30)
        deadline = time.monotonic() + 60
        recovered = [False, False]
        while not all(recovered):  # the rows load; the same processes admit again, no restart
            assert time.monotonic() < deadline, (
                f"the spool stayed full after loading: {[_get(s.admin_port, '/healthz').json() for s in servers]}"
            )
            for index, server in enumerate(servers):
                if not recovered[index]:
                    response = _check(server, key, sent)
                    sent += 1
                    recovered[index] = response.status_code == 200
                    admitted += recovered[index]
            time.sleep(0.1)
        for server in servers:
            for n in range(5):
                assert _check(server, key, sent + n).status_code == 200
            sent += 5
            admitted += 5
            assert _get(server.admin_port, "/readyz").status_code == 200
            assert _get(server.admin_port, "/healthz").json()["metering"]["spool_full"] is False
        deadline = time.monotonic() + 30
        while (pending := scrape(servers[0].admin_port)[0]["tollway_spool_pending_bytes"][()]) > 0:
            assert time.monotonic() < deadline, f"{pending} bytes still pending"
            time.sleep(0.2)
    finally:
        meter.stop()  # drains what is left and closes the embedded ClickHouse
    for server in servers:
        server.stop()
    counted = subprocess.run(
        [sys.executable, "-c", _COUNT, str(chdb)], capture_output=True, text=True, timeout=120, check=False
    )
    assert counted.returncode == 0, counted.stderr[-2000:]
    by_outcome: dict[str, Any] = json.loads(counted.stdout)
    assert by_outcome.get("admitted") == admitted, (by_outcome, admitted)
