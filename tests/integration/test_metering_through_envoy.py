"""Stage 3 end to end: real Envoy → real Tollway (decision rows + the access-log stream into its spool) →
the production loader → the embedded ClickHouse engine. Every request, admitted or refused, becomes
exactly one row (``usage FINAL``) with the right fields, including exact byte counts of a chunked answer.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.chdb_engine import ChdbDatabase
from tests.support.metering import SpoolLoader
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "metering" / "catalog.yaml"


@dataclass
class MeteredStack:
    valkey: ValkeyServer
    tollway: TollwayServer
    envoy: EnvoyProcess
    client: httpx.Client
    usage: SpoolLoader

    def key(self, customer: str, plan: str) -> str:
        key = str(create_key(self.valkey.url, customer)["api_key"])
        done = run_cli(self.valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json")
        assert done.code == 0, done.stderr
        return key

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return self.client.request(method, path, headers=headers, **kwargs)


def metering_env(spool: Path, **extra: str) -> dict[str, str]:
    return {"TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_SPOOL_DIR": str(spool), "TOLLWAY_LOADER": "off", **extra}


def request_id_in_response(cfg: dict[str, Any]) -> dict[str, Any]:
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == "envoy.filters.network.http_connection_manager":
                    network_filter["typed_config"]["always_set_request_id_in_response"] = True
    return cfg


@pytest.fixture(params=["http", "grpc"])
def metered(
    request: pytest.FixtureRequest,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    chdb_db: ChdbDatabase,
    tmp_path: Path,
) -> Iterator[MeteredStack]:
    protocol = request.param
    spool = tmp_path / "spool"
    tollway = tollway_factory(metering_env(spool))
    endpoints = {
        "tollway_http" if protocol == "http" else "tollway_grpc": [
            tollway.http_endpoint if protocol == "http" else tollway.grpc_endpoint
        ],
        "tollway_metering": [tollway.metering_endpoint],
    }
    envoy = envoy_factory(protocol, endpoints=endpoints, transform=request_id_in_response)
    usage = SpoolLoader(chdb_db, spool)
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        yield MeteredStack(valkey_fresh, tollway, envoy, client, usage)
    usage.close()


def test_mixed_requests_become_exactly_the_expected_rows(metered: MeteredStack) -> None:
    pro = metered.key("cust-pro", "pro")
    tiny = metered.key("cust-tiny", "tiny")
    sent: dict[str, tuple[httpx.Response, dict[str, Any]]] = {}

    def call(expect: dict[str, Any], method: str, path: str, key: str | None = None, **kwargs: Any) -> None:
        response = metered.call(method, path, key, **kwargs)
        assert response.status_code == expect["status"], response.text
        sent[response.headers["x-request-id"]] = (response, expect)

    call(
        {"status": 200, "outcome": "admitted", "customer_id": "cust-pro", "feature": "items-read"},
        "GET",
        "/v1/items/1",
        pro,
    )
    call({"status": 404, "outcome": "admitted", "customer_id": "cust-pro"}, "GET", "/v1/items/2?status=404", pro)
    call({"status": 503, "outcome": "admitted", "customer_id": "cust-pro"}, "GET", "/v1/items/3?status=503", pro)
    call(
        {"status": 200, "outcome": "admitted", "customer_id": "cust-pro", "chunked": True},
        "GET",
        "/v1/items/4?chunked=1&pad=7000",
        pro,
    )
    call(
        {
            "status": 200,
            "outcome": "admitted",
            "customer_id": "cust-pro",
            "feature": "items-write",
            "request_bytes": 123,
        },
        "POST",
        "/v1/items",
        pro,
        content=b"x" * 123,
    )
    call({"status": 401, "outcome": "refused", "customer_id": "", "reason_prefix": ""}, "GET", "/v1/items/5")
    call(
        {"status": 403, "outcome": "refused", "customer_id": "cust-pro", "reason": "feature-not-entitled"},
        "GET",
        "/v1/admin/x",
        pro,
    )
    call({"status": 200, "outcome": "admitted", "customer_id": "cust-tiny"}, "GET", "/v1/items/6", tiny)
    call({"status": 200, "outcome": "admitted", "customer_id": "cust-tiny"}, "GET", "/v1/items/7", tiny)
    call(
        {"status": 429, "outcome": "refused", "customer_id": "cust-tiny", "reason": "quota-exceeded"},
        "GET",
        "/v1/items/8",
        tiny,
    )

    admitted = {rid for rid, (_, e) in sent.items() if e["outcome"] == "admitted"}
    rows = metered.usage.wait_for(
        lambda rows: set(sent) <= set(rows) and all(rows[r]["version"] == 2 for r in admitted)
    )
    assert set(rows) == set(sent), "exactly one row per request, no other rows"
    for request_id, (response, expect) in sent.items():
        row = rows[request_id]
        assert row["status"] == expect["status"]
        assert row["outcome"] == expect["outcome"]
        assert row["customer_id"] == expect["customer_id"]
        if "feature" in expect:
            assert row["feature"] == expect["feature"]
        if "reason" in expect:
            assert row["reason"] == expect["reason"]
        if expect["outcome"] == "admitted":
            assert row["version"] == 2
            assert row["response_bytes"] == len(response.content), "exact body bytes, chunked or not"
            assert row["request_bytes"] == expect.get("request_bytes", 0)
            assert row["meters"]["requests"] == Decimal(1)
            assert row["meters"]["egress"] == Decimal(len(response.content))
            assert row["meters"]["ingress"] == Decimal(expect.get("request_bytes", 0))
            assert row["meters"]["work"] == Decimal(4 if row["feature"] == "items-write" else 1)
            assert row["upstream_latency_ms"] > 0
            assert row["subject"].startswith("key_") or row["subject"]
        else:
            assert row["version"] == 1
            assert row["response_bytes"] == len(response.content), "the problem body Tollway wrote"
            assert row["reason"]
    chunked = [rows[r] for r, (_, e) in sent.items() if e.get("chunked")]
    assert chunked[0]["response_bytes"] > 7000
    assert metered.usage.scalar("SELECT count() FROM {db}.usage FINAL") == len(sent)
