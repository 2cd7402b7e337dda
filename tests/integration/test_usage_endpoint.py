"""``GET /tollway/v1/usage`` through real Envoy: a caller sees this period's usage (equal to what
ClickHouse holds), their quota (equal to the Redis counter) and their charges so far (priced by the
billing code), authenticated like any call."""

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import http_sf
import httpx
import pytest
import redis

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "usage" / "caller.yaml"
USAGE = "/tollway/v1/usage"


def subscribe(valkey: ValkeyServer, customer: str, plan: str | None = "metered") -> str:
    key = str(create_key(valkey.url, customer)["api_key"])
    if plan is not None:
        done = run_cli(
            valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json",
            "--start", "2026-01-01T00:00:00Z",  # a whole current period: its flat fee is not prorated
        )  # fmt: skip
        assert done.code == 0, done.stderr
    return key


def report_when(client: httpx.Client, key: str, ready: Any) -> dict[str, Any]:
    """The usage document once ``ready(document)`` holds (rows reach ClickHouse within a second or two)."""
    deadline = time.monotonic() + 15
    while True:
        response = client.get(USAGE, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        if ready(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


def fields_when(client: httpx.Client, auth: dict[str, str], ready: Any) -> tuple[dict[str, int], Any]:
    """(Tollway-Usage as meter → quantity, Tollway-Cost as (value, parameters)) parsed with an RFC 9651
    parser, once ``ready(usage, cost)`` holds."""
    deadline = time.monotonic() + 10
    while True:
        response = client.get("/v1/items/1", headers=auth)
        assert response.status_code == 200, response.text
        usage_field: dict[str, int] = {}
        cost_field: Any = None
        if "tollway-usage" in response.headers:
            items: Any = http_sf.parse(response.headers["tollway-usage"].encode(), tltype="list")
            usage_field = {name: params["q"] for name, params in items}
        if "tollway-cost" in response.headers:
            cost_field = http_sf.parse(response.headers["tollway-cost"].encode(), tltype="item")
        if (cost_field is not None and ready(usage_field, cost_field)) or time.monotonic() > deadline:
            return usage_field, cost_field
        time.sleep(0.1)


def test_a_caller_sees_usage_quota_and_charges_equal_to_the_stores(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    chdb = tmp_path / "chdb"
    tollway = tollway_factory(
        {
            "TOLLWAY_CATALOG": str(CATALOG),
            "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{chdb}",
            "TOLLWAY_LOADER_INSERT_INTERVAL_S": "0.2",
            "TOLLWAY_USAGE_HEADERS_REFRESH_S": "0.2",
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
    stranger = subscribe(valkey_fresh, "stranger", plan=None)
    plain_auth = {"authorization": f"Bearer {subscribe(valkey_fresh, 'plain-co', plan='plain')}"}
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        auth = {"authorization": f"Bearer {acme}"}
        report_when(client, acme, lambda d: True)  # the embedded ClickHouse is open and migrated
        statuses = [
            client.get(f"/v1/items/{n}{query}", headers=auth).status_code
            for n, query in enumerate(["", "", "", "", "?status=404", "?status=503", "?pad=5000"])
        ]
        assert statuses == [200, 200, 200, 200, 404, 503, 200]
        # Billable requests: all but the 503. Egress: every admitted response's bytes.
        document = report_when(client, acme, lambda d: d["usage"].get("requests") == "6")
        assert document["customer_id"] == "acme"
        assert document["plan"] == "metered"
        assert document["usage"]["requests"] == "6"
        assert int(document["usage"]["egress"]) > 5000
        [quota] = document["quotas"]
        store = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            [key] = store.keys("*q:{acme}:monthly:*")
            counted = int(store.get(key) or 0)
        finally:
            store.close()
        assert (quota["name"], quota["limit"], quota["used"], quota["remaining"]) == ("monthly", 1000, 7, 993)
        assert quota["used"] == counted, "the quota is what the Redis counter holds (usage calls are not counted)"
        assert quota["resets_at"] == document["period"]["end"]
        charges = document["charges"]
        assert charges["currency"] == "USD"
        assert [(line["charge_id"], line["amount"]) for line in charges["lines"]] == [
            ("platform", "10.00"),
            ("calls", "0.60"),
        ]
        assert charges["total"] == "10.60"

        # The plan enables usage headers: every admitted call tells the same numbers as structured fields
        # (read in the background, at most every TOLLWAY_USAGE_HEADERS_REFRESH_S).
        # Each call polled here is billable too, so the numbers move while we look: the fields must equal the
        # report read right after them (retried when a load landed in between).
        deadline = time.monotonic() + 20
        while True:
            usage_field, cost_field = fields_when(client, auth, lambda u, c: u.get("requests", 0) >= 6)
            now = report_when(client, acme, lambda d: True)
            expected = {"requests": int(now["usage"]["requests"]), "egress": int(now["usage"]["egress"])}
            total = Decimal(now["charges"]["total"])
            if (usage_field == expected and cost_field[0] == total) or time.monotonic() > deadline:
                break
        assert usage_field == expected
        assert usage_field["requests"] >= 6
        assert cost_field[0] == total == Decimal("10.00") + Decimal("0.10") * usage_field["requests"]
        assert cost_field[1]["currency"] == "USD"
        # A plan without them: none.
        assert not {"tollway-usage", "tollway-cost"} & set(client.get("/v1/items/1", headers=plain_auth).headers)

        # Another customer sees their own, even when sending acme's id in the identity header.
        spoofed = client.get(USAGE, headers={"authorization": f"Bearer {other}", "x-tollway-customer-id": "acme"})
        assert spoofed.status_code == 200, spoofed.text
        assert spoofed.json()["customer_id"] == "other"
        assert spoofed.json()["usage"].get("requests", "0") == "0"
        # No credential: ext_authz refuses; no subscription: the endpoint says so.
        missing = client.get(USAGE)
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        unsubscribed = client.get(USAGE, headers={"authorization": f"Bearer {stranger}"})
        assert unsubscribed.status_code == 403, unsubscribed.text
        assert unsubscribed.json()["type"].endswith("/no-subscription")
        assert unsubscribed.headers["content-type"] == "application/problem+json"
        # The last word, once every admitted call above is loaded with its response facts (the report
        # no longer changes): compared with what ClickHouse holds below.
        previous: dict[str, Any] = {}
        for _ in range(50):
            document = report_when(client, acme, lambda d: True)
            if document["usage"] == previous.get("usage") and document["quotas"] == previous.get("quotas"):
                break
            previous = document
            time.sleep(0.5)
        assert document["quotas"][0]["used"] == int(document["usage"]["requests"]) + 1, "all billable but one 503"
    tollway.stop()

    # What ClickHouse holds, read directly once Tollway has let go of the embedded engine (in a process of
    # its own: this one may already hold the session's embedded engine, and chdb opens one path per process).
    assert held_in_clickhouse(chdb, "acme", document) == document["usage"]


_HELD = """
import json, sys
from datetime import datetime
from pathlib import Path
from tollway.billing.aggregate import billable_quantities
from tollway.plans.loader import load_catalog
from tollway.warehouse.connection import connect
chdb, catalog, customer, start, end = sys.argv[1:]
rules = {name: meter.billable for name, meter in load_catalog(Path(catalog)).meters.items()}
client = connect("chdb://" + chdb)
held = billable_quantities(
    client, "tollway", customer, datetime.fromisoformat(start), datetime.fromisoformat(end), rules
).quantities
print(json.dumps({meter: str(quantity) for meter, quantity in held.items()}))
"""


def held_in_clickhouse(chdb: Path, customer: str, document: dict[str, Any]) -> dict[str, str]:
    period = document["period"]
    done = subprocess.run(
        [sys.executable, "-c", _HELD, str(chdb), str(CATALOG), customer, period["start"], period["end"]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    held: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return held
