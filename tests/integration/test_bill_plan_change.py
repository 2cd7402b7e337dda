"""A mid-period plan change, billed on the embedded ClickHouse: the old plan's flat fee and minimum
for the time it was held, the new plan's from the change on, usage split at the change instant (to the
millisecond), late usage of each part adjusted against that part, totals computed by hand.

``switch`` (Europe/Paris, calendar months) moves from ``basic`` to ``pro`` at 2026-10-16 00:00 Paris
time (2026-10-15 22:00 UTC). Paris October is 2026-09-30 22:00Z .. 2026-10-31 23:00Z: 745 hours (the
clocks go back on October 25). ``basic`` held 360 of them, ``pro`` 385:
    basic fraction 360/745 = 0.48322147651006... → 0.483221476510 (12 places, half to even)
    pro   fraction 385/745 = 0.51677852348993... → 0.516778523490
Lines, each rounded once to cents:
    basic: platform 10.00 × 0.483221476510 = 4.8322147651 → 4.83
           calls 3 × 0.50 = 1.50
           minimum 20.00 × 0.483221476510 = 9.6644295302, less 6.33 = 3.3344295302 → 3.33
    pro:   platform 31.00 × 0.516778523490 = 16.02013422819 → 16.02
           calls 5 × 0.25 = 1.25
    total 4.83 + 1.50 + 3.33 + 16.02 + 1.25 = 26.93
November (pro all month): 31.00 + 2 × 0.25 = 31.50; with October's late pro request (5 → 6 calls,
17.27 → 17.52) adjusted: 31.75.
"""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.billing.invoices import build_invoice, build_invoices, parse_month
from tollway.billing.render import to_html
from tollway.cli.bill import bill
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
CHANGE = datetime(2026, 10, 15, 22, 0, tzinfo=UTC)  # 2026-10-16 00:00 in Paris

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: plan-change, version: "1"}
meters:
  requests:
    unit: requests
    billable: {exclude_statuses: ["5xx"]}
plans:
  basic:
    pricing:
      currency: EUR
      interval: month
      minimum_commitment: "20.00"
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
  pro:
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: platform, model: flat, amount: "31.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.25"}
  dollars:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "5.00"}
"""


def request(request_id: str, instant: str, status: int = 200, customer: str = "switch") -> bytes:
    # The row's plan is what the gate saw; billing prices by the subscription's history.
    return usage_row(request_id, instant, customer, {"requests": 1}, status=status, plan="any")


USAGE = (
    request("b0", "2026-09-30 21:59:59.999"),  # September in Paris: not October's
    request("b1", "2026-09-30 22:00:00.000"),  # basic
    request("b2", "2026-10-10 12:00:00.000"),  # basic
    request("b3", "2026-10-15 21:59:59.999"),  # basic: the last millisecond before the change
    request("b4", "2026-10-12 12:00:00.000", status=503),  # not billable
    request("p1", "2026-10-15 22:00:00.000"),  # pro: the change instant itself
    request("p2", "2026-10-20 12:00:00.000"),
    request("p3", "2026-10-25 01:30:00.000"),  # the night the clocks go back
    request("p4", "2026-10-31 12:00:00.000"),
    request("p5", "2026-10-31 22:59:59.999"),  # the last millisecond of Paris October
    request("n1", "2026-10-31 23:00:00.000"),  # November
    request("n2", "2026-11-15 12:00:00.000"),
)

SWITCH = Subscription.new("switch", "basic", datetime(2026, 1, 1, tzinfo=UTC), timezone="Europe/Paris").changed_to(
    "pro", CHANGE
)


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", b"".join(USAGE))
    return chdb_db


def lines(document: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (line["part"], line["kind"], line["charge_id"], line["quantity"], line["amount"]) for line in document["lines"]
    ]


def test_a_mid_period_plan_change_prices_each_part_with_its_plan(db: ChdbDatabase, tmp_path: Path) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "plan-change.yaml")
    [result] = bill(client, database, catalog, [SWITCH], "2026-10", now=NOW, finalize=True, out_dir=tmp_path).results
    october = result.document
    assert october["plan"] == "pro"
    assert october["plans"] == [
        {
            "part": 0,
            "plan": "basic",
            "start": "2026-09-30T22:00:00Z",
            "end": "2026-10-15T22:00:00Z",
            "fraction": "0.483221476510",
            "subtotal": "9.66",
        },
        {
            "part": 1,
            "plan": "pro",
            "start": "2026-10-15T22:00:00Z",
            "end": "2026-10-31T23:00:00Z",
            "fraction": "0.516778523490",
            "subtotal": "17.27",
        },
    ]
    assert lines(october) == [
        (0, "charge", "platform", "0.483221476510", "4.83"),
        (0, "charge", "calls", "3", "1.50"),
        (0, "minimum", "minimum_commitment", None, "3.33"),
        (1, "charge", "platform", "0.516778523490", "16.02"),
        (1, "charge", "calls", "5", "1.25"),
    ]
    assert october["total"] == "26.93"
    assert sum(Decimal(line["amount"]) for line in october["lines"]) == Decimal(october["total"])
    sources = [line["quantity_source"]["parameters"] for line in october["lines"] if line["quantity_source"]]
    assert [(s["start"], s["end"]) for s in sources] == [  # usage split at the change instant
        ("2026-09-30 22:00:00.000000", "2026-10-15 22:00:00.000000"),
        ("2026-10-15 22:00:00.000000", "2026-10-31 23:00:00.000000"),
    ]
    page = (tmp_path / f"{october['invoice_id']}.html").read_text()
    assert "Plan basic from 2026-09-30T22:00:00Z to 2026-10-15T22:00:00Z" in page
    assert "Plan pro from 2026-10-15T22:00:00Z" in page
    assert to_html(october) == page

    # A late pro request for October, after it was finalized: adjusted against the pro part only.
    insert_json_rows(client, database, "usage", request("p6", "2026-10-28 12:00:00.000"))
    [november] = [r.document for r in bill(client, database, catalog, [SWITCH], "2026-11", now=NOW).results]
    assert [part["plan"] for part in november["plans"]] == ["pro"]
    [adjustment] = [line for line in november["lines"] if line["kind"] == "adjustment"]
    assert (adjustment["adjusts"], adjustment["adjusts_part"]) == (october["invoice_id"], 1)
    assert adjustment["quantities"] == {"requests": {"billed": "5", "now": "6"}}
    assert adjustment["amount"] == "0.25"
    assert november["total"] == "31.75"
    json.dumps(november)  # a JSON document all the way down


def test_a_plan_change_outside_the_period_bills_one_plan() -> None:
    assert [t.plan_id for t in SWITCH.terms(datetime(2026, 9, 1, tzinfo=UTC), CHANGE)] == ["basic"]
    assert [t.plan_id for t in SWITCH.terms(CHANGE, datetime(2027, 1, 1, tzinfo=UTC))] == ["pro"]


def test_a_plan_change_cannot_change_the_currency_within_a_period(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "plan-change.yaml")
    to_dollars = SWITCH.changed_to("dollars", datetime(2026, 10, 20, tzinfo=UTC))
    [failure] = bill(client, database, catalog, [to_dollars], "2026-10", now=NOW).failures
    assert re.search(r"plan 'dollars' bills in USD.*cannot change the currency", str(failure))
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows == [(0,)], "nothing written"


def test_every_plan_of_the_history_must_be_in_the_catalog(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG.replace("  basic:", "  basic2:"), "plan-change.yaml")
    [failure] = bill(client, database, catalog, [SWITCH], "2026-12", now=NOW).failures
    assert "plan 'basic', which the catalog does not have" in str(failure)


class CountingClient:
    """The client, counting the queries sent through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.queries: list[str] = []

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.queries.append(sql)
        return self._client.query(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_customers_changing_plan_at_one_instant_are_summed_together_per_part(db: ChdbDatabase) -> None:
    """``switch`` and ``twin`` move from basic to pro at CHANGE, ``stay`` keeps basic: a bill run sums
    usage with one query per span shared by customers (the month; before the change; after it), not
    one per customer and part, and every invoice is the one ``build_invoice`` builds for the customer
    alone (``switch``: 26.93, the module docstring's arithmetic; ``twin`` 1 basic and 2 pro calls:
    4.83 + 0.50 + (9.6644295302 − 5.33 = 4.3344295302 → 4.33) + 16.02 + 0.50 = 26.18; ``stay``, 2 calls on
    basic all month: 10.00 + 1.00 + a 9.00 true-up to the 20.00 minimum = 20.00)."""
    client, database = db
    insert_json_rows(
        client,
        database,
        "usage",
        b"".join(
            (
                request("t1", "2026-10-01 12:00:00.000", customer="twin"),  # basic
                request("t2", "2026-10-15 22:00:00.000", customer="twin"),  # pro: the change instant
                request("t3", "2026-10-30 12:00:00.000", customer="twin"),  # pro
                request("s1", "2026-10-02 12:00:00.000", customer="stay"),
                request("s2", "2026-10-29 12:00:00.000", customer="stay"),
            )
        ),
    )
    catalog = load_catalog_text(CATALOG, "plan-change.yaml")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    twin = Subscription.new("twin", "basic", started, timezone="Europe/Paris").changed_to("pro", CHANGE)
    stay = Subscription.new("stay", "basic", started, timezone="Europe/Paris")
    month = parse_month("2026-10", NOW)
    counting = CountingClient(client)
    invoices, skipped = build_invoices(counting, database, catalog, [SWITCH, twin, stay], month, now=NOW)
    assert skipped == []
    assert len(counting.queries) == 1  # one scan: the change cuts switch's and twin's periods in SQL
    assert {i.customer_id: str(i.total) for i in invoices} == {"stay": "20.00", "switch": "26.93", "twin": "26.18"}
    for invoice, subscription in zip(invoices, [stay, SWITCH, twin], strict=True):
        alone = build_invoice(client, database, catalog, subscription, month, now=NOW)
        assert alone is not None
        assert invoice.as_dict() == alone.as_dict()


METERS_CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: parts-meters, version: "1"}
meters:
  requests:
    unit: requests
    billable: {exclude_statuses: ["5xx"]}
  bytes:
    unit: response_bytes
    billable: {exclude_statuses: ["429"]}
plans:
  calls:
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
  volume:
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: volume, model: per_unit, meter: bytes, unit_amount: "0.01"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.10"}
  free:
    limits: []
"""


def test_customers_cut_at_different_instants_pricing_different_meters_share_one_scan(db: ChdbDatabase) -> None:
    """Four UTC customers of October, one scan: ``mover`` goes calls → volume at 10-10 06:00:00.250 (the
    millisecond row at .249 is the old plan's, the one at .250 the new one's); ``late`` subscribes on the
    20th (its rows before that are not billed); ``freed`` goes volume → free on the 5th then free → calls
    on the 25th (the free part is not billed); ``plain`` keeps volume. Each part sums its own plan's meters
    under their rules (a 5xx is not a billable request, a 429 is not billable bytes), and every invoice
    is the one ``build_invoice`` builds alone, part by part."""
    client, database = db

    def row(request_id: str, instant: str, customer: str, status: int = 200) -> bytes:
        return usage_row(request_id, instant, customer, {"requests": 1, "bytes": 1000}, status=status, plan="any")

    insert_json_rows(
        client,
        database,
        "usage",
        b"".join(
            (
                row("m1", "2026-10-10 06:00:00.249", "mover"),  # calls: 0.50
                row("m2", "2026-10-10 06:00:00.250", "mover"),  # volume: 0.10 + 10.00
                row("m3", "2026-10-12 06:00:00.000", "mover", status=503),  # volume: bytes only, 10.00
                row("m4", "2026-10-01 00:00:00.000", "mover", status=503),  # calls: not billable
                row("l1", "2026-10-19 23:59:59.999", "late"),  # before its subscription: not billed
                row("l2", "2026-10-20 00:00:00.000", "late", status=429),  # calls: 0.50
                row("f1", "2026-10-02 00:00:00.000", "freed"),  # volume: 0.10 + 10.00
                row("f2", "2026-10-06 00:00:00.000", "freed"),  # free: not billed
                row("f3", "2026-10-26 00:00:00.000", "freed"),  # calls: 0.50
                row("p1", "2026-10-15 00:00:00.000", "plain", status=429),  # volume: 0.10, no bytes
            )
        ),
    )
    catalog = load_catalog_text(METERS_CATALOG, "parts-meters.yaml")
    started = datetime(2026, 1, 1, tzinfo=UTC)
    subscriptions = [
        Subscription.new("freed", "volume", started)
        .changed_to("free", datetime(2026, 10, 5, tzinfo=UTC))
        .changed_to("calls", datetime(2026, 10, 25, tzinfo=UTC)),
        Subscription.new("late", "calls", datetime(2026, 10, 20, tzinfo=UTC)),
        Subscription.new("mover", "calls", started).changed_to("volume", datetime(2026, 10, 10, 6, 0, 0, 250_000, UTC)),
        Subscription.new("plain", "volume", started),
    ]
    month = parse_month("2026-10", NOW)
    counting = CountingClient(client)
    invoices, skipped = build_invoices(counting, database, catalog, subscriptions, month, now=NOW)
    assert skipped == []
    assert len(counting.queries) == 1
    assert {i.customer_id: str(i.total) for i in invoices} == {
        "freed": "10.60",
        "late": "0.50",
        "mover": "20.60",
        "plain": "0.10",
    }
    for invoice, subscription in zip(invoices, subscriptions, strict=True):
        alone = build_invoice(client, database, catalog, subscription, month, now=NOW)
        assert alone is not None
        assert invoice.as_dict() == alone.as_dict()
