"""The deployed metering topology: ``tollway serve`` only checks (and writes each decision row to the spool
before answering), ``tollway meter`` beside it takes Envoy's access log and loads the spool into ClickHouse.
Through real Envoy, every request becomes exactly one row, completed by its response facts."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.integration.test_metering_through_envoy import request_id_in_response
from tests.support.tollway_cli import TEST_PEPPER, create_key, run_cli
from tollway.cli.main import main
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "metering" / "catalog.yaml"

_ROWS = """
import json, sys
from tollway.warehouse.connection import connect, query_rows
client = connect("chdb://" + sys.argv[1])
rows = query_rows(
    client, "SELECT envoy_request_id, status, outcome, version FROM tollway.usage FINAL ORDER BY envoy_request_id"
)
print(json.dumps([list(r) for r in rows]))
"""


def health(server: TollwayServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/healthz", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def test_a_checking_process_and_a_metering_process_record_every_request_once(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    spool, chdb = tmp_path / "spool", tmp_path / "chdb"
    shared = {"TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_SPOOL_DIR": str(spool)}
    meter = TollwayServer(
        tmp_path,
        redis_url=valkey_fresh.url,
        pepper="",  # it answers no check: it needs no pepper
        extra_env={**shared, "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{chdb}", "TOLLWAY_CLICKHOUSE_DATABASE": "tollway"},
        name="tollway-meter",
        command="meter",
    )
    try:
        meter.start(timeout=30)
        checks = tollway_factory(
            {**shared, "TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"},
            redis_url=valkey_fresh.url,
        )
        envoy = envoy_factory(
            "http",
            endpoints={"tollway_http": [checks.http_endpoint], "tollway_metering": [meter.metering_endpoint]},
            transform=request_id_in_response,
        )
        key = str(create_key(valkey_fresh.url, "cust-pro")["api_key"])
        done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "cust-pro", "--plan", "pro", "--json")
        assert done.code == 0, done.stderr
        sent: dict[str, tuple[int, str]] = {}
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
            for path, auth in [
                ("/v1/items/1", True),
                ("/v1/items/2?status=404", True),
                ("/v1/items/3", True),
                ("/v1/items/4", False),
            ]:
                response = client.get(path, headers={"authorization": f"Bearer {key}"} if auth else {})
                sent[response.headers["x-request-id"]] = (response.status_code, "admitted" if auth else "")
        assert [status for status, _ in sent.values()] == [200, 404, 200, 401]
        assert "loader" not in health(checks)["metering"], "the checking process loads nothing"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # 4 decision rows and 3 access-log rows, all read by the loader
            metering = health(meter)["metering"]
            if metering["access_log_rows"] >= 3 and metering["loader"]["rows_read"] >= 7:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the metering process did not load every row: {health(meter)['metering']}")
    finally:
        meter.stop()
    done_rows = subprocess.run(
        [sys.executable, "-c", _ROWS, str(chdb)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done_rows.returncode == 0, done_rows.stderr[-2000:]
    rows = {rid: (status, outcome, version) for rid, status, outcome, version in json.loads(done_rows.stdout)}
    admitted = {rid: status for rid, (status, outcome) in sent.items() if outcome}
    assert {rid: rows[rid] for rid in admitted} == {rid: (status, "admitted", 2) for rid, status in admitted.items()}
    assert len(rows) == 4
    assert sorted(outcome for _, outcome, _ in rows.values()) == ["admitted"] * 3 + ["refused"]


def test_meter_refuses_to_start_without_a_spool_or_a_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOLLWAY_PEPPER", TEST_PEPPER)
    monkeypatch.delenv("TOLLWAY_SPOOL_DIR", raising=False)
    assert main(["meter"]) == 2
    assert "needs TOLLWAY_SPOOL_DIR" in capsys.readouterr().err
    monkeypatch.setenv("TOLLWAY_SPOOL_DIR", "/tmp/tollway-meter-test-spool")
    assert main(["meter", "--metering-port", "0"]) == 2
    assert "needs a metering port" in capsys.readouterr().err
