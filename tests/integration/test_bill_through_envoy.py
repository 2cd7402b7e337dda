"""Stage 4 end to end: traffic through real Envoy → the real Tollway (in this process, with an injected
``ManualClock``) meters it into its spool → the production loader puts it in the embedded ClickHouse →
``bill`` prices September, October and November 2026 → totals equal values computed by hand below.

Three customers (``tests/fixtures/billing/through_envoy.yaml``): ``utc-co`` (UTC) and ``kiri-co``
(Pacific/Kiritimati, UTC+14 all year: its months start 14 hours before UTC's) on one priced plan, and
``switch-co`` (UTC), which moves to another plan mid-October with ``tollway subscriptions set
--effective`` while the traffic flows. Requests are
decided at instants on both sides of each customer's local month boundaries; there are 404, 503 (the demo
upstream's ``?status=``), 403 and 429 answers. Each request lands in exactly one month of each customer;
a second run of a month gives the same invoices.

``inprocess_tollway`` takes no metering settings, so the test gives them the way ``tollway serve`` gets
them, as ``TOLLWAY_*`` environment variables (``Settings`` reads those it is not passed).
"""

import asyncio
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import EnvoyFactory
from tests.support.chdb_engine import ChdbDatabase
from tests.support.inprocess_tollway import inprocess_tollway
from tests.support.metering import SpoolLoader
from tests.support.tollway_cli import create_key, run_cli
from tollway.billing.aggregate import QuantitySource, reproduce
from tollway.billing.invoice_store import load_lines
from tollway.cli.bill import BillReport, bill
from tollway.clock import ManualClock
from tollway.harness import envoy_config
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "billing" / "through_envoy.yaml"
NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)  # every billed period has ended
START = "2026-01-01T00:00:00Z"
UTC_CO, KIRI_CO, SWITCH_CO = "utc-co", "kiri-co", "switch-co"
CHANGE = "2026-10-16T00:00:00Z"  # switch-co: metered → metered_plus, between T3 and T4


def at(text: str) -> datetime:
    """A UTC instant ``YYYY-MM-DD HH:MM``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# What each customer sends at each instant (the same for both). Kiritimati local time = UTC + 14 h.
#   instant (UTC)       Kiritimati local    utc-co month   kiri-co month   requests sent (per customer)
#   T1 2026-09-30 09:30 2026-09-30 23:30    September      September       1 × 200
#   T2 2026-09-30 10:30 2026-10-01 00:30    September      October         2 × 200
#   T3 2026-10-15 12:00 2026-10-16 02:00    October        October         403, 200, 404, 503, 429
#   T4 2026-10-31 09:30 2026-10-31 23:30    October        October         1 × 200
#   T5 2026-10-31 10:30 2026-11-01 00:30    October        November        2 × 200
#   T6 2026-10-31 23:30 2026-11-01 13:30    October        November        1 × 200
#   T7 2026-11-01 00:30 2026-11-01 14:30    November       November        2 × 200
# The plan allows 3 requests an hour: no two instants less than 2 hours apart send more than 3 together,
# and at T3 the 4th admitted-or-not check (after 200, 404, 503; the 403 is refused before the limiter)
# is the 429.
PLAIN = "/v1/items/{n}"
BURST = ("/v1/admin/reports", "/v1/items/{n}", "/v1/items/{n}?status=404", "/v1/items/{n}?status=503", "/v1/items/{n}")
BURST_STATUSES = (403, 200, 404, 503, 429)
TIMELINE: tuple[tuple[str, int], ...] = (
    ("2026-09-30 09:30", 1),
    ("2026-09-30 10:30", 2),
    ("2026-10-15 12:00", 0),  # 0: the burst
    ("2026-10-31 09:30", 1),
    ("2026-10-31 10:30", 2),
    ("2026-10-31 23:30", 1),
    ("2026-11-01 00:30", 2),
)

# Billable quantities. ``requests`` bills admitted requests except 5xx and 429 (the 200 and the 404 of
# T3); ``work`` bills every admitted request (also the 503). Refused requests (403, 429) bill nothing.
#   utc-co  September = T1 + T2            requests 1 + 2 = 3          work 3
#           October   = T3 + T4 + T5 + T6  requests 2 + 1 + 2 + 1 = 6  work 3 + 1 + 2 + 1 = 7
#           November  = T7                 requests 2                  work 2
#   kiri-co September = T1                 requests 1                  work 1
#           October   = T2 + T3 + T4       requests 2 + 2 + 1 = 5      work 2 + 3 + 1 = 6
#           November  = T5 + T6 + T7       requests 2 + 1 + 2 = 5      work 5
# Prices: platform 10.00 a month; calls graduated, units 1-2 at 1.00, 3+ at 0.25; work 0.125 a unit.
# Each line is rounded once to cents, half to even.
#   utc-co  Sep: calls 2×1.00 + 1×0.25 = 2.25; work 3×0.125 = 0.375 → 0.38; 10.00 + 2.25 + 0.38 = 12.63
#           Oct: calls 2.00 + 4×0.25 = 3.00;  work 7×0.125 = 0.875 → 0.88; 10.00 + 3.00 + 0.88 = 13.88
#           Nov: calls 2×1.00 = 2.00;         work 2×0.125 = 0.25;         10.00 + 2.00 + 0.25 = 12.25
#   kiri-co Sep: calls 1×1.00 = 1.00;         work 1×0.125 = 0.125 → 0.12; 10.00 + 1.00 + 0.12 = 11.12
#           Oct: calls 2.00 + 3×0.25 = 2.75;  work 6×0.125 = 0.75;         10.00 + 2.75 + 0.75 = 13.50
#           Nov: calls 2.00 + 3×0.25 = 2.75;  work 5×0.125 = 0.625 → 0.62; 10.00 + 2.75 + 0.62 = 13.37
EXPECTED: dict[str, dict[str, tuple[str, dict[str, str], list[str]]]] = {
    "2026-09": {
        UTC_CO: ("12.63", {"requests": "3", "work": "3"}, ["10.00", "2.25", "0.38"]),
        KIRI_CO: ("11.12", {"requests": "1", "work": "1"}, ["10.00", "1.00", "0.12"]),
    },
    "2026-10": {
        UTC_CO: ("13.88", {"requests": "6", "work": "7"}, ["10.00", "3.00", "0.88"]),
        KIRI_CO: ("13.50", {"requests": "5", "work": "6"}, ["10.00", "2.75", "0.75"]),
    },
    "2026-11": {
        UTC_CO: ("12.25", {"requests": "2", "work": "2"}, ["10.00", "2.00", "0.25"]),
        KIRI_CO: ("13.37", {"requests": "5", "work": "5"}, ["10.00", "2.75", "0.62"]),
    },
}
# switch-co sends what utc-co sends; September is utc-co's. October is cut at the change (UTC month, 744 h):
#   metered      2026-10-01 .. 10-16: 360/744 = 0.48387096774193... → 0.483870967742
#                platform 10.00 × 0.483870967742 = 4.83870967742 → 4.84; T3: calls 2 × 1.00 = 2.00;
#                work 3 × 0.125 = 0.375 → 0.38                                        subtotal  7.22
#   metered_plus 2026-10-16 .. 11-01: 384/744 = 0.51612903225806... → 0.516129032258
#                platform 31.00 × 0.516129032258 = 15.999999999998 → 16.00; T4-T6: calls 4 × 0.10 = 0.40;
#                work 4 × 0.125 = 0.50                                                subtotal 16.90
#   total 24.12.  November (metered_plus): 31.00 + 2 × 0.10 + 2 × 0.125 = 31.45
SWITCH_EXPECTED = {
    "2026-09": ("12.63", [(0, "metered", "10.00"), (0, "metered", "2.25"), (0, "metered", "0.38")]),
    "2026-10": (
        "24.12",
        [
            (0, "metered", "4.84"),
            (0, "metered", "2.00"),
            (0, "metered", "0.38"),
            (1, "metered_plus", "16.00"),
            (1, "metered_plus", "0.40"),
            (1, "metered_plus", "0.50"),
        ],
    ),
    "2026-11": ("31.45", [(0, "metered_plus", "31.00"), (0, "metered_plus", "0.20"), (0, "metered_plus", "0.25")]),
}

# Each customer's periods, [start, end) in UTC: Kiritimati's start 14 hours before UTC midnight.
PERIODS = {
    ("2026-10", UTC_CO): ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"),
    ("2026-10", KIRI_CO): ("2026-09-30T10:00:00Z", "2026-10-31T10:00:00Z"),
    ("2026-11", KIRI_CO): ("2026-10-31T10:00:00Z", "2026-11-30T10:00:00Z"),
}


def request_id_in_response(cfg: envoy_config.EnvoyConfig) -> envoy_config.EnvoyConfig:
    """Envoy returns its x-request-id (the usage row's ``request_id``) to the client."""
    result: envoy_config.EnvoyConfig = copy.deepcopy(cfg)
    for listener in result["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == envoy_config.HCM_FILTER:
                    network_filter["typed_config"]["always_set_request_id_in_response"] = True
    return result


def subscribe(valkey: ValkeyServer, customer: str, timezone: str) -> str:
    """An API key for ``customer`` and a calendar-month subscription to ``metered``; returns the key."""
    key = str(create_key(valkey.url, customer)["api_key"])
    done = run_cli(
        valkey.url, "subscriptions", "set", "--customer", customer, "--plan", "metered", "--json",
        "--timezone", timezone, "--start", START,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    return key


def change_plan(valkey: ValkeyServer, customer: str, plan: str, effective: str) -> None:
    done = run_cli(
        valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--effective", effective, "--json"
    )
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["plan_changes"] == [{"at": effective, "from": "metered", "to": plan}]


def stored_subscriptions(valkey: ValkeyServer) -> list[Subscription]:
    """The subscriptions as ``tollway bill`` reads them."""

    async def go() -> list[Subscription]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await RedisSubscriptionStore(redis).list()
        finally:
            await redis.aclose()

    return asyncio.run(go())


@dataclass(frozen=True)
class Sent:
    customer: str
    decided_at: datetime
    status: int


@dataclass
class Traffic:
    sent: dict[str, Sent]  # by request id
    usage: SpoolLoader


@pytest.fixture
def traffic(
    valkey_fresh: ValkeyServer,
    envoy_factory: EnvoyFactory,
    chdb_db: ChdbDatabase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Traffic]:
    """Sends the TIMELINE through Envoy and Tollway and loads every row into ``chdb_db``."""
    keys = {
        UTC_CO: subscribe(valkey_fresh, UTC_CO, "UTC"),
        KIRI_CO: subscribe(valkey_fresh, KIRI_CO, "Pacific/Kiritimati"),
        SWITCH_CO: subscribe(valkey_fresh, SWITCH_CO, "UTC"),
    }
    spool = tmp_path / "spool"
    (metering_port,) = free_ports(1)
    monkeypatch.setenv("TOLLWAY_SPOOL_DIR", str(spool))
    monkeypatch.setenv("TOLLWAY_LOADER", "off")  # the test process loads the spool (SpoolLoader)
    monkeypatch.setenv("TOLLWAY_METERING_PORT", str(metering_port))
    clock = ManualClock(at(TIMELINE[0][0]))
    sent: dict[str, Sent] = {}
    usage = SpoolLoader(chdb_db, spool)
    try:
        with inprocess_tollway(valkey_fresh.url, CATALOG, clock=clock) as tollway:
            endpoints = {"tollway_http": [tollway.http_endpoint], "tollway_metering": [(LOOPBACK, metering_port)]}
            envoy = envoy_factory("http", endpoints=endpoints, transform=request_id_in_response)
            with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
                n = 0
                for step, (instant, count) in enumerate(TIMELINE):
                    if step == 3:  # after T3: switch-co changes plan, dated between T3 and T4
                        change_plan(valkey_fresh, SWITCH_CO, "metered_plus", CHANGE)
                    clock.set(at(instant))
                    calls = [(PLAIN, 200)] * count if count else list(zip(BURST, BURST_STATUSES, strict=True))
                    for customer, key in keys.items():
                        for path, status in calls:
                            n += 1
                            response = client.get(path.format(n=n), headers={"authorization": f"Bearer {key}"})
                            assert response.status_code == status, (instant, customer, path, response.text)
                            sent[response.headers["x-request-id"]] = Sent(customer, clock.now(), status)
                admitted = {rid for rid, s in sent.items() if s.status not in (403, 429)}
                rows = usage.wait_for(
                    lambda rows: set(sent) <= set(rows) and all(rows[r]["version"] == 2 for r in admitted)
                )
        assert set(rows) == set(sent), "exactly one usage row per request"
        for request_id, expect in sent.items():
            row = rows[request_id]
            assert (row["customer_id"], row["status"]) == (expect.customer, expect.status), row
            assert row["ts_ms"] == int(expect.decided_at.timestamp() * 1000), "decided at the injected time"
        yield Traffic(sent, usage)
    finally:
        usage.close()


def stable(document: dict[str, Any]) -> dict[str, Any]:
    """A document without the times of the write (what a re-run may change)."""
    return {k: v for k, v in document.items() if k not in ("generated_at", "finalized_at", "status")}


def by_customer(report: BillReport) -> dict[str, dict[str, Any]]:
    return {result.document["customer_id"]: result.document for result in report.results}


def summary(document: dict[str, Any]) -> tuple[str, dict[str, str], list[str]]:
    quantities = {line["meter"]: line["quantity"] for line in document["lines"] if line["meter"]}
    return document["total"], quantities, [line["amount"] for line in document["lines"]]


def test_traffic_through_envoy_is_billed_per_local_month(
    traffic: Traffic, chdb_db: ChdbDatabase, valkey_fresh: ValkeyServer, tmp_path: Path
) -> None:
    client, database = chdb_db
    catalog = load_catalog(CATALOG)
    subscriptions = stored_subscriptions(valkey_fresh)
    assert {s.customer_id: s.timezone for s in subscriptions} == {
        UTC_CO: "UTC",
        KIRI_CO: "Pacific/Kiritimati",
        SWITCH_CO: "UTC",
    }

    for month, expected in EXPECTED.items():
        first = bill(client, database, catalog, subscriptions, month, now=NOW, out_dir=tmp_path / "first")
        documents = by_customer(first)
        assert {r.action for r in first.results} == {"created"}, month
        switched = documents.pop(SWITCH_CO)
        assert {c: summary(d) for c, d in documents.items()} == expected, month
        parts = [(line["part"], switched["plans"][line["part"]]["plan"], line["amount"]) for line in switched["lines"]]
        assert (switched["total"], parts) == SWITCH_EXPECTED[month], month
        documents[SWITCH_CO] = switched
        for customer, document in documents.items():
            assert document["currency"] == "USD"
            assert sum(Decimal(line["amount"]) for line in document["lines"]) == Decimal(document["total"])
            if (month, customer) in PERIODS:
                period = document["period"]
                assert (period["start"], period["end"]) == PERIODS[month, customer]
            for line in document["lines"]:  # each usage line's own query gives its quantity again
                if line["quantity_source"] is not None:
                    source = QuantitySource(line["quantity_source"]["sql"], line["quantity_source"]["parameters"])
                    assert reproduce(client, source) == Decimal(line["quantity"])
        assert documents[KIRI_CO]["period"]["local_start"].endswith("T00:00:00+14:00")

        # A second run of the month: the same invoices, replacing the drafts under the same ids.
        second = bill(client, database, catalog, subscriptions, month, now=NOW, out_dir=tmp_path / "second")
        assert {r.action for r in second.results} == {"replaced"}, month
        again = by_customer(second)
        assert {c: stable(d) for c, d in again.items()} == {c: stable(d) for c, d in documents.items()}
        for document in documents.values():
            stored = load_lines(client, database, document["invoice_id"])
            assert [Decimal(line["amount"]) for line in stored] == [Decimal(x) for x in summary(document)[2]]
            assert Decimal(document["total"]) == sum(Decimal(line["amount"]) for line in stored)

    # Every billable request was billed in exactly one month of each customer: nothing lost or doubled
    # at a boundary. Billable: admitted and not 5xx/429 for requests; admitted for work.
    for customer in (UTC_CO, KIRI_CO):
        mine = [s for s in traffic.sent.values() if s.customer == customer]
        billed = {meter: sum(int(EXPECTED[m][customer][1][meter]) for m in EXPECTED) for meter in ("requests", "work")}
        assert billed == {
            "requests": sum(1 for s in mine if s.status < 500 and s.status not in (403, 429)),
            "work": sum(1 for s in mine if s.status not in (403, 429)),
        }
