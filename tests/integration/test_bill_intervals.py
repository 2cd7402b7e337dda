"""Quarterly and weekly subscriptions billed on the embedded ClickHouse (issue 16, item 4): a quarterly
anniversary plan started on the 31st, a calendar quarter entered on the 31st, ISO weeks across the
spring DST change, and a subscription whose interval is not its plan's. Figures computed by hand.

``anniv`` (America/New_York, anniversary quarters) starts on 2026-01-31 09:00 local (14:00Z). Its
quarters start on the 31st or the month's last day, at 09:00 local, never drifting:
    Q1 2026-01-31 14:00Z .. 2026-04-30 13:00Z  89 days less the March DST hour = 2135 h (billed in 2026-01)
    Q2 2026-04-30 13:00Z .. 2026-07-31 13:00Z  92 days = 2208 h                      (billed in 2026-04)
    Q3 2026-07-31 13:00Z .. 2026-10-31 13:00Z  92 days = 2208 h                      (billed in 2026-07)
    Q4 2026-10-31 13:00Z .. 2027-01-31 14:00Z  92 days plus the November DST hour = 2209 h (2026-10)
Plan ``quarterly`` (per quarter: platform 300.00 in advance, support 90.00 in arrears, 0.50 a request,
minimum 400.00); plan ``quarterly_pro`` (platform 600.00, 0.25 a request).
    Q1, whole, 3 requests: 300.00 + 90.00 + 1.50 = 391.50, minimum true-up 8.50 → 400.00
    Q2: moves to quarterly_pro at 2026-06-10 13:00Z (09:00 EDT), 41 of the quarter's 92 days in:
        quarterly  984/2208 = 41/92 = 0.44565217391304… → 0.445652173913 (12 places, half to even)
                   platform 300.00 × 0.445652173913 = 133.6956521739 → 133.70
                   support   90.00 × 0.445652173913 =  40.10869565217 → 40.11
                   calls 2 × 0.50 = 1.00; subtotal 174.81
                   minimum 400.00 × 0.445652173913 = 178.2608695652, less 174.81 = 3.4508695652 → 3.45
                   part 133.70 + 40.11 + 1.00 + 3.45 = 178.26
        pro        1224/2208 = 51/92 = 0.55434782608695… → 0.554347826087
                   platform 600.00 × 0.554347826087 = 332.6086956522 → 332.61; calls 4 × 0.25 = 1.00
                   part 333.61
        total 178.26 + 333.61 = 511.87
    Q4 (pro, whole, 1 request): 600.00 + 0.25 = 600.25
``calq`` (UTC, calendar quarters, plan ``quarterly``) starts on 2026-01-31 00:00Z: the first quarter,
2026-01-01 .. 2026-04-01 (90 days), is covered for 60 days: 2/3 → 0.666666666667.
    platform 300.00 × 0.666666666667 = 200.0000000001 → 200.00; support 90.00 × … = 60.00000000003 → 60.00
    calls 0 → 0.00; minimum 400.00 × 0.666666666667 = 266.6666666668, less 260.00 = 6.6666666668 → 6.67
    total 266.67
``wk`` (Europe/Paris, calendar ISO weeks, plan ``weekly``: 10.00 a week, 0.10 a request) starts on
Wednesday 2026-03-04 00:00 Paris. March 2026 bills the five weeks starting on a Monday in March (Paris):
    Mar 2 (5 of 7 days: 0.714285714286 × 10.00 = 7.14285714286 → 7.14), Mar 9, Mar 16,
    Mar 23 (167 h: the clocks go forward on the 29th; 2 requests, one at 03:30 CEST that night) 10.20,
    Mar 30 (starts in March, ends in April) 10.00 + 1 request = 10.10.
"""

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.cli.bill import bill
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.model import Subscription
from tollway.usage.caller_report import _warehouse_part
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2027, 2, 15, 12, 0, tzinfo=UTC)
CHANGE = datetime(2026, 6, 10, 13, 0, tzinfo=UTC)  # 09:00 EDT, 41 days into Q2

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: intervals, version: "1"}
meters:
  requests: {unit: requests}
plans:
  quarterly:
    pricing:
      currency: USD
      interval: quarter
      minimum_commitment: "400.00"
      charges:
        - {id: platform, model: flat, amount: "300.00"}
        - {id: support, model: flat, amount: "90.00", timing: in_arrears}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
  quarterly_pro:
    pricing:
      currency: USD
      interval: quarter
      charges:
        - {id: platform, model: flat, amount: "600.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.25"}
  weekly:
    pricing:
      currency: USD
      interval: week
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.10"}
  weekly_coupon:
    pricing:
      currency: USD
      interval: week
      coupons: [{id: welcome, amount: "25.00"}]
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.10"}
"""

ANNIV = Subscription.new(
    "anniv",
    "quarterly",
    datetime(2026, 1, 31, 14, 0, tzinfo=UTC),
    timezone="America/New_York",
    alignment="anniversary",
    interval="quarter",
).changed_to("quarterly_pro", CHANGE)
CALQ = Subscription.new("calq", "quarterly", datetime(2026, 1, 31, tzinfo=UTC), interval="quarter")
WK = Subscription.new("wk", "weekly", datetime(2026, 3, 3, 23, 0, tzinfo=UTC), timezone="Europe/Paris", interval="week")


def request(request_id: str, instant: str, customer: str) -> bytes:
    return usage_row(request_id, instant, customer, {"requests": 1}, plan="any")


USAGE = (
    request("a0", "2026-01-31 13:59:59.999", "anniv"),  # before the start: not billed
    request("a1", "2026-01-31 14:00:00.000", "anniv"),  # Q1
    request("a2", "2026-03-08 07:00:00.000", "anniv"),  # Q1, the morning the clocks go forward
    request("a3", "2026-04-30 12:59:59.999", "anniv"),  # Q1: its last millisecond
    request("a4", "2026-04-30 13:00:00.000", "anniv"),  # Q2, quarterly
    request("a5", "2026-06-10 12:59:59.999", "anniv"),  # Q2, quarterly: the last millisecond before the change
    request("a6", "2026-06-10 13:00:00.000", "anniv"),  # Q2, quarterly_pro
    request("a7", "2026-07-01 00:00:00.000", "anniv"),
    request("a8", "2026-07-20 00:00:00.000", "anniv"),
    request("a9", "2026-07-31 12:59:59.999", "anniv"),  # Q2: its last millisecond
    request("a10", "2026-12-25 00:00:00.000", "anniv"),  # Q4
    request("w1", "2026-03-10 12:00:00.000", "wk"),  # week of Mar 9
    request("w2", "2026-03-29 01:30:00.000", "wk"),  # week of Mar 23: 03:30 CEST, just after the jump
    request("w3", "2026-03-29 21:59:59.999", "wk"),  # week of Mar 23: its last millisecond
    request("w4", "2026-03-29 22:00:00.000", "wk"),  # week of Mar 30: Monday 00:00 CEST
)


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", b"".join(USAGE))
    return chdb_db


def lines(document: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (line["part"], line["kind"], line["charge_id"], line["quantity"], line["amount"], line["timing"])
        for line in document["lines"]
    ]


def one(client: Any, database: str, subscription: Subscription, month: str, **options: Any) -> dict[str, Any]:
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    report = bill(client, database, catalog, [subscription], month, now=NOW, **options)
    assert not report.failures, report.failures
    [result] = report.results
    return result.document


def test_a_quarterly_anniversary_plan_started_on_the_31st(db: ChdbDatabase, tmp_path: Path) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")

    q1 = one(client, database, ANNIV, "2026-01", finalize=True, out_dir=tmp_path)
    assert (q1["period"]["start"], q1["period"]["end"]) == ("2026-01-31T14:00:00Z", "2026-04-30T13:00:00Z")
    assert (q1["period"]["local_start"], q1["period"]["local_end"]) == (
        "2026-01-31T09:00:00-05:00",
        "2026-04-30T09:00:00-04:00",
    )
    assert lines(q1) == [
        (0, "charge", "platform", "1", "300.00", "in_advance"),
        (0, "charge", "support", "1", "90.00", "in_arrears"),
        (0, "charge", "calls", "3", "1.50", "in_arrears"),
        (0, "minimum", "minimum_commitment", None, "8.50", "in_arrears"),
    ]
    assert q1["total"] == "400.00"

    for month in ("2026-02", "2026-03", "2026-05", "2026-06"):  # no quarter starts in these months
        report = bill(client, database, catalog, [ANNIV], month, now=NOW)
        assert (report.results, report.skipped) == ((), ("anniv",))

    q2 = one(client, database, ANNIV, "2026-04", finalize=True, out_dir=tmp_path)
    assert (q2["period"]["start"], q2["period"]["end"]) == ("2026-04-30T13:00:00Z", "2026-07-31T13:00:00Z")
    assert [(p["plan"], p["start"], p["end"], p["fraction"], p["subtotal"]) for p in q2["plans"]] == [
        ("quarterly", "2026-04-30T13:00:00Z", "2026-06-10T13:00:00Z", "0.445652173913", "178.26"),
        ("quarterly_pro", "2026-06-10T13:00:00Z", "2026-07-31T13:00:00Z", "0.554347826087", "333.61"),
    ]
    assert lines(q2) == [
        (0, "charge", "platform", "0.445652173913", "133.70", "in_advance"),
        (0, "charge", "support", "0.445652173913", "40.11", "in_arrears"),
        (0, "charge", "calls", "2", "1.00", "in_arrears"),
        (0, "minimum", "minimum_commitment", None, "3.45", "in_arrears"),
        (1, "charge", "platform", "0.554347826087", "332.61", "in_advance"),
        (1, "charge", "calls", "4", "1.00", "in_arrears"),
    ]
    assert q2["total"] == "511.87"
    assert q2["period"]["index"] == 1, "the subscription's second quarter (coupons count from 0)"

    q3 = one(client, database, ANNIV, "2026-07")
    assert (q3["period"]["start"], q3["period"]["end"]) == ("2026-07-31T13:00:00Z", "2026-10-31T13:00:00Z")
    assert q3["total"] == "600.00"
    q4 = one(client, database, ANNIV, "2026-10")
    assert (q4["period"]["local_start"], q4["period"]["local_end"]) == (
        "2026-10-31T09:00:00-04:00",
        "2027-01-31T09:00:00-05:00",
    )
    assert lines(q4) == [
        (0, "charge", "platform", "1", "600.00", "in_advance"),
        (0, "charge", "calls", "1", "0.25", "in_arrears"),
    ]
    assert q4["total"] == "600.25"
    assert sum(Decimal(line["amount"]) for line in q2["lines"]) == Decimal(q2["total"])


def test_a_calendar_quarter_entered_on_the_31st_pays_its_fraction(db: ChdbDatabase) -> None:
    client, database = db
    first = one(client, database, CALQ, "2026-01")
    assert (first["period"]["start"], first["period"]["end"]) == ("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z")
    assert first["period"]["fraction"] == "0.666666666667"
    assert lines(first) == [
        (0, "charge", "platform", "0.666666666667", "200.00", "in_advance"),
        (0, "charge", "support", "0.666666666667", "60.00", "in_arrears"),
        (0, "charge", "calls", "0", "0.00", "in_arrears"),
        (0, "minimum", "minimum_commitment", None, "6.67", "in_arrears"),
    ]
    assert first["total"] == "266.67"
    second = one(client, database, CALQ, "2026-04")
    assert (second["period"]["start"], second["period"]["end"]) == ("2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z")
    assert second["total"] == "400.00"  # 390.00 of fees, the minimum's true-up 10.00


def test_a_weekly_subscription_gets_an_invoice_for_each_week_starting_in_the_month(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    drafts = bill(client, database, catalog, [WK], "2026-03", now=NOW)
    weeks = [r.document for r in drafts.results]
    assert [(w["period"]["local_start"][:10], w["period"]["local_end"][:10]) for w in weeks] == [
        ("2026-03-02", "2026-03-09"),
        ("2026-03-09", "2026-03-16"),
        ("2026-03-16", "2026-03-23"),
        ("2026-03-23", "2026-03-30"),
        ("2026-03-30", "2026-04-06"),
    ]
    assert [w["period"]["start"] for w in weeks][3:] == ["2026-03-22T23:00:00Z", "2026-03-29T22:00:00Z"]
    assert [w["period"]["fraction"] for w in weeks] == ["0.714285714286", "1", "1", "1", "1"]
    assert [w["total"] for w in weeks] == ["7.14", "10.10", "10.00", "10.20", "10.10"]
    assert len({w["invoice_id"] for w in weeks}) == 5
    assert {r.action for r in drafts.results} == {"created"}
    # Finalizing the month finalizes the five weeks in order: the earlier drafts of the run do not block.
    final = bill(client, database, catalog, [WK], "2026-03", now=NOW, finalize=True)
    assert not final.failures, final.failures
    assert [r.action for r in final.results] == ["finalized"] * 5
    april = bill(client, database, catalog, [WK], "2026-04", now=NOW).results
    assert [r.document["period"]["local_start"][:10] for r in april] == [
        "2026-04-06",
        "2026-04-13",
        "2026-04-20",
        "2026-04-27",
    ]


def test_a_coupon_is_carried_across_the_weeks_of_one_run(db: ChdbDatabase) -> None:
    """The five weeks of March are built in one run: each week's coupon sees what the earlier weeks of
    the run take (7.14, 10.10, then 7.76 of the 25.00), drafts and finalized alike, and a second run
    changes nothing."""
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    wk = Subscription.new(
        "wk", "weekly_coupon", datetime(2026, 3, 3, 23, 0, tzinfo=UTC), timezone="Europe/Paris", interval="week"
    )
    for finalize in (False, True, True):
        report = bill(client, database, catalog, [wk], "2026-03", now=NOW, finalize=finalize)
        assert not report.failures, report.failures
        weeks = [r.document for r in report.results]
        assert [w["total"] for w in weeks] == ["0.00", "0.00", "2.24", "10.20", "10.10"], finalize
    coupon = [line["amount"] for w in weeks for line in w["lines"] if line["kind"] == "coupon"]
    assert coupon == ["-7.14", "-10.10", "-7.76"]


def test_finalizing_weeks_stops_at_the_first_that_has_not_ended(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    mid_march = datetime(2026, 3, 18, 12, tzinfo=UTC)
    report = bill(client, database, catalog, [WK], "2026-03", now=mid_march, finalize=True)
    assert [r.document["period"]["local_start"][:10] for r in report.results] == ["2026-03-02", "2026-03-09"]
    [refused] = report.failures  # the week of Mar 16 has not ended; later weeks have not begun
    assert "cannot finalize 2026-03: its period ends at 2026-03-22T23:00:00Z" in str(refused)


def test_a_subscription_billed_on_another_interval_than_its_plan_is_not_billed(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    monthly = Subscription.new("monthly", "quarterly", datetime(2026, 1, 1, tzinfo=UTC))  # stored before the check
    report = bill(client, database, catalog, [monthly, CALQ], "2026-04", now=NOW)
    [failure] = report.failures
    assert re.search(
        r"customer 'monthly' is billed monthly, but plan 'quarterly' is priced per quarter: its amounts do not "
        r"fit the subscription's periods",
        str(failure),
    )
    assert [r.document["customer_id"] for r in report.results] == ["calq"]
    rows = client.query(f"SELECT customer_id FROM {database}.invoices FINAL").result_rows
    assert rows == [("calq",)], "nothing written for the mismatched subscription"
    # A plan change to a plan of another interval is refused the same way.
    changed = CALQ.changed_to("weekly", datetime(2026, 5, 1, tzinfo=UTC))
    [failure] = bill(client, database, catalog, [changed], "2026-04", now=NOW).failures
    assert "plan 'weekly' is priced per week" in str(failure)


def test_late_usage_of_a_week_is_adjusted_on_one_invoice_of_the_run(db: ChdbDatabase) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    mid_march = datetime(2026, 3, 18, 12, tzinfo=UTC)
    finalized = bill(client, database, catalog, [WK], "2026-03", now=mid_march, finalize=True).results
    first_week = finalized[0].document["invoice_id"]
    insert_json_rows(client, database, "usage", request("late", "2026-03-05 12:00:00.000", "wk"))  # week of Mar 2
    weeks = [r.document for r in bill(client, database, catalog, [WK], "2026-03", now=NOW).results]
    adjusted = [
        (w["period"]["local_start"][:10], line["amount"])
        for w in weeks
        for line in w["lines"]
        if line["kind"] == "adjustment" and line["adjusts"] == first_week
    ]
    assert adjusted == [("2026-03-30", "0.10")], "claimed once, by the run's latest week"
    assert [w["total"] for w in weeks] == ["7.14", "10.10", "10.00", "10.20", "10.20"]


def test_the_callers_usage_report_prices_the_current_week(db: ChdbDatabase) -> None:
    """``GET /tollway/v1/usage``'s charges so far are the current period's invoice, not the first period
    starting in the month (a weekly customer has five in March)."""
    client, database = db
    catalog = load_catalog_text(CATALOG, "intervals.yaml")
    now = datetime(2026, 3, 29, 12, tzinfo=UTC)  # Sunday: the week of Mar 23, after the DST change
    period = WK.current_period(now)
    assert (period.start, period.end) == (datetime(2026, 3, 22, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    quantities, invoice, _ = _warehouse_part(catalog, WK, period.start, period.end, now)(client, database)
    assert quantities["requests"] == 1  # w2; w3 comes later that day
    assert invoice is not None
    assert (invoice["period"]["start"], invoice["period"]["end"]) == ("2026-03-22T23:00:00Z", "2026-03-29T22:00:00Z")
    assert invoice["total"] == "10.20"  # the invoice as billing would price the week: both its requests
