"""``/tollway/v1/usage/budgets`` through real Envoy: routed to the usage endpoint, authenticated as the
caller by ext_authz (a budget is the caller's own), and neither refused for want of a feature nor
counted against a quota."""

import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.integration.test_usage_endpoint import CATALOG, subscribe
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

BUDGETS = "/tollway/v1/usage/budgets"


def wait_until_served(client: httpx.Client, auth: dict[str, str]) -> httpx.Response:
    """The first answer of the usage endpoint that is not 503 (it opens the embedded ClickHouse first)."""
    deadline = time.monotonic() + 20
    while True:
        response = client.get(BUDGETS, headers=auth)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_caller_sets_and_reads_their_budgets_through_envoy(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    tollway = tollway_factory(
        {
            "TOLLWAY_CATALOG": str(CATALOG),
            "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
        }
    )
    envoy = envoy_factory(
        "http",
        endpoints={
            "tollway_http": [tollway.http_endpoint],
            "tollway_metering": [tollway.metering_endpoint],
            "tollway_usage": [tollway.usage_endpoint],
        },
    )
    acme = subscribe(valkey_fresh, "acme")
    other = subscribe(valkey_fresh, "other")
    budget = {"budgets": [{"id": "half", "quota": "monthly", "percent": 50}]}
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        auth = {"authorization": f"Bearer {acme}"}
        first = wait_until_served(client, auth)
        assert (first.status_code, first.json()) == (200, {"budgets": [], "max": 10})
        assert client.put(BUDGETS, json=budget).status_code == 401  # no key: refused by ext_authz
        put = client.put(BUDGETS, json=budget, headers=auth)
        assert put.status_code == 200, put.text
        expected = {"budgets": [{"id": "half", "kind": "quota", "quota": "monthly", "percent": "50"}], "max": 10}
        assert put.json() == expected
        assert client.get(BUDGETS, headers=auth).json() == expected
        assert client.get(BUDGETS, headers={"authorization": f"Bearer {other}"}).json()["budgets"] == []
        bad = client.put(BUDGETS, json={"budgets": [{"id": "x", "quota": "nope", "percent": 5}]}, headers=auth)
        assert (bad.status_code, bad.headers["content-type"]) == (422, "application/problem+json")
        assert bad.json()["type"].endswith("/unknown-quota")
        assert client.delete(BUDGETS, headers=auth).json()["budgets"] == []
    store = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    try:
        counted = [int(store.get(key) or 0) for key in store.keys("*q:{acme}:monthly:*")]
    finally:
        store.close()
    assert sum(counted) == 0, "the caller's own endpoints count against no quota"
