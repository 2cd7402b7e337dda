"""Stage 3 end to end: real Envoy → real Tollway (decision rows + the access-log stream into its spool) →
the production loader → the embedded ClickHouse engine. Every request, admitted or refused, becomes
exactly one row (``usage FINAL``) with the right fields, including exact byte counts of a chunked answer.
"""

import asyncio
import time
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


def preserving_client_request_ids(cfg: dict[str, Any]) -> dict[str, Any]:
    """Envoy keeps a client's x-request-id (``preserve_external_request_id``) and returns it."""
    cfg = request_id_in_response(cfg)
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == "envoy.filters.network.http_connection_manager":
                    network_filter["typed_config"]["preserve_external_request_id"] = True
    return cfg


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_client_repeating_one_request_id_gets_a_row_per_request(
    protocol: str,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    chdb_db: ChdbDatabase,
    tmp_path: Path,
) -> None:
    """The usage row's key is Tollway's own id: with Envoy keeping client request ids, bursts of concurrent
    requests (decided within the same milliseconds) that all carry one x-request-id are one row each."""
    spool = tmp_path / "spool"
    tollway = tollway_factory(metering_env(spool))
    authz = ("tollway_http", tollway.http_endpoint) if protocol == "http" else ("tollway_grpc", tollway.grpc_endpoint)
    envoy = envoy_factory(
        protocol,
        endpoints={authz[0]: [authz[1]], "tollway_metering": [tollway.metering_endpoint]},
        transform=preserving_client_request_ids,
    )
    usage = SpoolLoader(chdb_db, spool)
    stack = MeteredStack(valkey_fresh, tollway, envoy, httpx.Client(base_url=envoy.base_url, timeout=5), usage)
    key = stack.key("cust-pro", "pro")
    repeated = "the-same-id-every-time"

    async def burst(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[httpx.Response]:
        return list(await asyncio.gather(*(client.get("/v1/items/1", headers=headers) for _ in range(count))))

    async def send() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(base_url=envoy.base_url, timeout=5, limits=limits) as client:
            responses: list[httpx.Response] = []
            for _ in range(3):
                responses += await burst(client, {"x-api-key": key, "x-request-id": repeated}, 20)
            responses += await burst(client, {"x-request-id": repeated}, 10)  # refused: no credential
            return responses

    try:
        responses = asyncio.run(send())
        assert {r.headers["x-request-id"] for r in responses} == {repeated}, "Envoy kept the client's id"
        # 200 and 401 as sent; on a machine too busy to answer a check within Envoy's 200 ms, Envoy's 503
        # (such a check may still have been decided, and recorded as admitted and never reported).
        statuses = [r.status_code for r in responses]
        assert set(statuses[:60]) <= {200, 503}, statuses
        assert set(statuses[60:]) <= {401, 503}, statuses
        served = [r for r in responses[:60] if r.status_code == 200]
        refused, timed_out = statuses.count(401), statuses.count(503)
        assert len(served) >= 30, f"too few requests served to mean anything: {statuses}"

        def complete(rows: list[dict[str, Any]]) -> bool:
            return len(rows) >= len(served) + refused and sum(1 for r in rows if r["version"] == 2) >= len(served)

        deadline = time.monotonic() + 15
        while True:
            usage.drain()
            rows = usage.row_list()
            if complete(rows) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        completed = [r for r in rows if r["outcome"] == "admitted" and r["version"] == 2]
        assert len(completed) == len(served), "one complete row per served request"
        assert all(r["status"] == 200 for r in completed)
        assert sum(1 for r in rows if r["outcome"] == "refused") == refused, "one row per refused request"
        unreported = [r for r in rows if r["outcome"] == "admitted" and r["version"] == 1]
        assert len(unreported) <= timed_out, "only a check Envoy gave up on leaves a decision row alone"
        assert len(rows) == len(served) + refused + len(unreported)
        assert usage.scalar("SELECT count() FROM {db}.usage FINAL") == len(rows)
        assert usage.scalar("SELECT count() FROM {db}.usage_final") == len(rows)
        assert {r["envoy_request_id"] for r in rows} == {repeated}, "Envoy's id is kept for reference"
        seen_usage_ids = {r.json()["headers"]["x-tollway-usage-id"] for r in served}
        assert len(seen_usage_ids) == len(served), "the upstream sees each request's own usage id"
        assert {r["request_id"] for r in completed} == seen_usage_ids, "each access-log entry completed its own row"
    finally:
        stack.client.close()
        usage.close()
