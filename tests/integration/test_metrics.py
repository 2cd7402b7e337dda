"""``GET /metrics`` on the admin port after a known run through real Envoy: every listed series exists,
parses with Prometheus' own parser, and counts exactly what was sent."""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_compiled_catalog

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements" / "stage2.yaml"
SERIES = (
    "tollway_decisions_total",
    "tollway_check_duration_seconds",
    "tollway_redis_round_trips_total",
    "tollway_redis_errors_total",
    "tollway_redis_round_trip_seconds",
    "tollway_capacity_leases_total",
    "tollway_requests_from_leases_total",
    "tollway_spool_pending_bytes",
    "tollway_usage_rows_loaded_total",
    "tollway_catalog_info",
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(admin_port: int) -> tuple[Samples, set[str]]:
    response = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples, families


def decisions(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["outcome"], dict(labels)["reason"]): value
        for labels, value in samples.get("tollway_decisions_total", {}).items()
    }


def test_metrics_count_a_known_run(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    tollway = tollway_factory(
        {
            "TOLLWAY_CATALOG": str(CATALOG),
            "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
            "TOLLWAY_LOADER_INSERT_INTERVAL_S": "0.2",
        }
    )
    envoy = envoy_factory(
        "http", endpoints={"tollway_http": [tollway.http_endpoint], "tollway_metering": [tollway.metering_endpoint]}
    )
    key = create_key(valkey_fresh.url, "acme")["api_key"]
    done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "acme", "--plan", "metered", "--json")
    assert done.code == 0, done.stderr
    auth = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        sent: list[int] = [client.get(f"/v1/items/{n}", headers=auth).status_code for n in range(7)]  # burst: 5/h
        sent.append(client.get("/v1/items/1").status_code)  # no key
        sent.append(client.get("/v1/items/1", headers={"authorization": "Bearer tw_live_nope"}).status_code)
        sent.append(client.get("/v1/nothing", headers=auth).status_code)  # no feature has the route
    assert sent == [200] * 5 + [429, 429, 401, 401, 403]

    samples, families = scrape(tollway.admin_port)
    assert {name.removesuffix("_total") for name in SERIES} <= families, sorted(families)  # the parser drops _total
    assert decisions(samples) == {
        ("admitted", ""): 5,
        ("refused", "quota-exceeded"): 2,
        ("refused", "missing-credentials"): 1,
        ("refused", "malformed-api-key"): 1,
        ("refused", "route-not-granted"): 1,
    }
    assert samples["tollway_check_duration_seconds_count"] == {(("protocol", "http"),): 10}
    assert samples["tollway_redis_round_trips_total"][()] >= 1, "the limiter asked Redis"
    assert samples["tollway_redis_errors_total"][()] == 0
    assert samples["tollway_redis_round_trip_seconds_count"][()] == samples["tollway_redis_round_trips_total"][()]
    live = load_compiled_catalog(CATALOG)
    assert samples["tollway_catalog_info"] == {
        (("digest", live.digest), ("name", live.name), ("version", live.version)): 1
    }
    # Every decision becomes one usage row; the loader's count catches up within seconds.
    rows: Any = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = scrape(tollway.admin_port)[0]["tollway_usage_rows_loaded_total"][()]
        if rows >= 10:
            break
        time.sleep(0.3)
    assert rows >= 10, rows  # decision rows and the response rows that complete them
    assert "tollway_spool_pending_bytes" in scrape(tollway.admin_port)[0]
