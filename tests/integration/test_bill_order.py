"""Billing order and late usage (issue 13, items 12 and 15): each late row is claimed by exactly one
finalized invoice whatever order periods are drafted and finalized in; a period is finalized only once
it has ended (unless forced) and never past an earlier draft; an adjustment's *billed* figure is what
was invoiced; and ``invoice_lines FINAL`` returns exactly an invoice's current lines."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_bill import CATALOG, NEW_CATALOG, USAGE, catalog, row
from tests.support.chdb_engine import ChdbDatabase
from tollway.billing.invoice_store import load_finalized, load_lines
from tollway.cli.bill import BillReport, bill
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator, load_migrations

pytestmark = pytest.mark.integration

ACME = Subscription.new("acme", "metered", datetime(2026, 1, 1, tzinfo=UTC))
MONTHS = ("2026-10", "2026-11", "2026-12", "2027-01")
LATER = datetime(2027, 3, 5, tzinfo=UTC)  # every period of MONTHS (and February) has ended


def mid(month: str) -> datetime:
    """The 7th of ``month``, 12:00 UTC: its period has begun, not ended."""
    year, number = (int(part) for part in month.split("-"))
    return datetime(year, number, 7, 12, tzinfo=UTC)


def after(month: str) -> datetime:
    """The 2nd of the month after ``month``: its period has ended."""
    year, number = (int(part) for part in month.split("-"))
    return datetime(year + number // 12, number % 12 + 1, 2, tzinfo=UTC)


def run(db: ChdbDatabase, month: str, now: datetime, **options: Any) -> BillReport:
    return bill(db.client, db.name, catalog(), [ACME], month, now=now, **options)


def acme(report: BillReport) -> dict[str, Any]:
    [result] = [r for r in report.results if r.document["customer_id"] == "acme"]
    return result.document


def adjustments(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in document["lines"] if line["kind"] == "adjustment"]


def claimed(db: ChdbDatabase) -> dict[str, tuple[Decimal, Decimal]]:
    """Month → (requests, amount of the requests) invoiced for it by every finalized invoice: its own
    ``calls`` line, plus each finalized adjustment line of it (now − billed requests, its amount)."""
    documents = load_finalized(db.client, db.name, ["acme"]).get("acme", [])
    month_of = {d["invoice_id"]: d["period"]["month"] for d in documents}
    totals: dict[str, tuple[Decimal, Decimal]] = {}

    def add(month: str, requests: Decimal, amount: Decimal) -> None:
        before = totals.get(month, (Decimal(0), Decimal(0)))
        totals[month] = (before[0] + requests, before[1] + amount)

    for document in documents:
        for line in document["lines"]:
            if line["charge_id"] == "calls":
                add(document["period"]["month"], Decimal(line["quantity"]), Decimal(line["amount"]))
            elif line["kind"] == "adjustment":
                requests = line["quantities"]["requests"]
                add(
                    month_of[line["adjusts"]],
                    Decimal(requests["now"]) - Decimal(requests["billed"]),
                    Decimal(line["amount"]),
                )
    return totals


def present(db: ChdbDatabase) -> dict[str, int]:
    """Month → acme's billable requests now in ClickHouse (the test's rows: one request each)."""
    counts: dict[str, int] = {}
    for month, count in db.client.query(
        f"SELECT formatDateTime(ts, '%Y-%m', 'UTC'), count() FROM {db.name}.usage FINAL "
        "WHERE customer_id = 'acme' AND request_id LIKE 'p%' GROUP BY 1"
    ).result_rows:
        counts[str(month)] = int(count)
    return counts


@pytest.fixture
def acme_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    Migrator(chdb_db.client, chdb_db.name).migrate()
    insert_json_rows(chdb_db.client, chdb_db.name, "usage", b"".join(USAGE))
    return chdb_db


# --- the reported order ------------------------------------------------------------------------------


def test_the_reported_order_bills_the_late_row_once(acme_db: ChdbDatabase) -> None:
    """Finalize October; a late October row; November as a draft; December finalized on December 7th
    (mid-period); then November finalized: the 0.50 is claimed once."""
    october = acme(run(acme_db, "2026-10", after("2026-10"), finalize=True))
    insert_json_rows(
        acme_db.client, acme_db.name, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1})
    )
    november = acme(run(acme_db, "2026-11", datetime(2026, 12, 3, tzinfo=UTC)))
    assert [line["amount"] for line in adjustments(november)] == ["0.50"]

    december = run(acme_db, "2026-12", datetime(2026, 12, 7, tzinfo=UTC), finalize=True)
    assert december.results == ()
    [refusal] = december.failures
    assert refusal.customer_id == "acme"
    assert "while an earlier period is still a draft (2026-11)" in str(refusal)

    finalized = acme(run(acme_db, "2026-11", datetime(2026, 12, 7, tzinfo=UTC), finalize=True))
    assert [(line["adjusts"], line["amount"]) for line in adjustments(finalized)] == [(october["invoice_id"], "0.50")]

    early = run(acme_db, "2026-12", datetime(2026, 12, 7, tzinfo=UTC), finalize=True)
    [refusal] = early.failures
    assert "cannot finalize 2026-12: its period ends at 2027-01-01" in str(refusal)
    assert "--force-finalize" in str(refusal)
    december_doc = acme(run(acme_db, "2026-12", datetime(2027, 1, 2, tzinfo=UTC), finalize=True))
    assert adjustments(december_doc) == []


def test_a_later_period_finalized_first_leaves_nothing_for_the_earlier_one(acme_db: ChdbDatabase) -> None:
    """November never drafted (nothing blocks December): December claims October's late row, and
    November, finalized afterwards, does not claim it again."""
    run(acme_db, "2026-10", after("2026-10"), finalize=True)
    insert_json_rows(
        acme_db.client, acme_db.name, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1})
    )
    december = acme(run(acme_db, "2026-12", after("2026-12"), finalize=True))
    assert [line["amount"] for line in adjustments(december)] == ["0.50"]
    november = acme(run(acme_db, "2026-11", after("2026-12"), finalize=True))
    assert adjustments(november) == []
    assert sum(Decimal(line["amount"]) for line in adjustments(november) + adjustments(december)) == Decimal("0.50")


def test_force_finalizes_a_period_that_has_not_ended(acme_db: ChdbDatabase) -> None:
    forced = acme(run(acme_db, "2026-11", mid("2026-11"), finalize=True, force=True))
    assert forced["status"] == "finalized"
    insert_json_rows(
        acme_db.client, acme_db.name, "usage", row("p1", "2026-11-20 00:00:00.000", "acme", 200, {"requests": 1})
    )
    december = acme(run(acme_db, "2026-12", after("2026-12"), finalize=True))
    assert [line["amount"] for line in adjustments(december)] == ["0.50"]


# --- any order: a property over sequences of runs ---------------------------------------------------


@dataclass(frozen=True)
class Step:
    action: str  # "late": a row for month arrives; "draft"; "finalize"; "force" (finalize mid-period)
    month: str
    early: bool = False  # the run happens while the month's period is still open


STEPS = st.builds(Step, st.sampled_from(["late", "draft", "finalize", "force"]), st.sampled_from(MONTHS), st.booleans())


@pytest.fixture
def databases(chdb_client: Any) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        chdb_client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEPS, min_size=1, max_size=8))
def test_every_late_row_is_claimed_by_exactly_one_finalized_invoice(
    chdb_client: Any, databases: list[str], steps: list[Step]
) -> None:
    name = f"order_{uuid.uuid4().hex[:12]}"
    chdb_client.command(f"CREATE DATABASE {name}")
    databases.append(name)
    db = ChdbDatabase(chdb_client, name)
    Migrator(chdb_client, name).migrate()
    for number, step in enumerate(steps):
        now = mid(step.month) if step.early else after(step.month)
        if step.action == "late":
            ts = f"{step.month}-0{1 + number % 6} 12:00:00.000"
            insert_json_rows(chdb_client, name, "usage", row(f"p{number}", ts, "acme", 200, {"requests": 1}))
        else:
            run(db, step.month, now, finalize=step.action != "draft", force=step.action == "force")
        rows, invoiced = present(db), claimed(db)
        for month, (requests, amount) in invoiced.items():  # never more than there is, never twice
            assert requests <= rows.get(month, 0), (month, steps)
            assert amount == requests * Decimal("0.50"), (month, steps)
    # Settle: finalize every month in order, then the next one; everything is now claimed exactly once.
    for month in (*MONTHS, "2027-02"):
        report = run(db, month, LATER, finalize=True)
        assert report.failures == (), report.failures
    rows, invoiced = present(db), claimed(db)
    for month in MONTHS:
        assert invoiced[month] == (rows.get(month, 0), rows.get(month, 0) * Decimal("0.50")), (month, steps)
    # The ledger agrees: every finalized invoice is fully billed.
    from tollway.billing.invoices import Ledger

    documents = load_finalized(chdb_client, name, ["acme"])["acme"]
    ledger = Ledger(documents)
    for document in documents:
        quantities, _ = ledger.billed(document, 0)
        assert quantities.get("requests", Decimal(0)) == rows.get(document["period"]["month"], 0)


# --- item 15: the billed figure is what was invoiced; no stale lines -----------------------------------


def test_an_adjustment_bills_against_what_was_invoiced_not_a_repricing(acme_db: ChdbDatabase) -> None:
    client, database = acme_db
    october = acme(run(acme_db, "2026-10", after("2026-10"), finalize=True))
    assert october["total"] == "13.22"
    insert_json_rows(client, database, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1}))
    # Prices change before November is billed: calls 0.50 -> 0.40, platform 10.00 -> 12.00.
    november = acme(bill(client, database, catalog(NEW_CATALOG), [ACME], "2026-11", now=after("2026-11")))
    [line] = adjustments(november)
    assert line["billed_total"] == "13.22"  # October's invoice, as stored
    assert line["amount"] == "0.40"  # the late request at the price now in force
    assert line["now_total"] == "13.62"
    assert line["breakdown"][-1] == "2026-10 total: 13.62 now − 13.22 billed = 0.40"


def test_reading_lines_with_final_returns_no_stale_line_after_a_shorter_rerun(acme_db: ChdbDatabase) -> None:
    client, database = acme_db
    first = acme(run(acme_db, "2026-10", after("2026-10")))
    assert len(first["lines"]) == 3
    without_egress = CATALOG.replace(
        '        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.001"}\n', ""
    )
    second = acme(bill(client, database, catalog(without_egress), [ACME], "2026-10", now=after("2026-10")))
    assert [line["charge_id"] for line in second["lines"]] == ["platform", "calls"]
    natural = client.query(
        f"SELECT line_no, charge_id FROM {database}.invoice_lines FINAL WHERE invoice_id = %(id)s ORDER BY line_no",
        parameters={"id": first["invoice_id"]},
    ).result_rows
    assert [tuple(r) for r in natural] == [(1, "platform"), (2, "calls")]
    assert [line["charge_id"] for line in load_lines(client, database, first["invoice_id"])] == ["platform", "calls"]
    third = acme(run(acme_db, "2026-10", after("2026-10")))  # longer again: the line comes back
    assert len(third["lines"]) == 3
    assert len(load_lines(client, database, first["invoice_id"])) == 3


def test_migration_0005_keeps_current_lines_and_drops_stale_ones(
    chdb_db: ChdbDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, database = chdb_db
    Migrator(client, database, [m for m in load_migrations() if m.version <= 4]).migrate()
    insert_json_rows(client, database, "usage", b"".join(USAGE))
    first = acme(bill(client, database, catalog(), [ACME], "2026-10", now=after("2026-10")))
    without_egress = CATALOG.replace(
        '        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.001"}\n', ""
    )
    # What the writer of 0004 did: a shorter re-run leaves line 3 of the first write behind.
    monkeypatch.setattr("tollway.billing.invoice_store._tombstones", lambda *_: [])
    bill(client, database, catalog(without_egress), [ACME], "2026-10", now=after("2026-10"))
    stale = f"SELECT count() FROM {database}.invoice_lines FINAL WHERE invoice_id = %(id)s"
    assert client.query(stale, parameters={"id": first["invoice_id"]}).result_rows == [(3,)]
    Migrator(client, database).migrate()
    natural = client.query(
        f"SELECT charge_id FROM {database}.invoice_lines FINAL WHERE invoice_id = %(id)s ORDER BY line_no",
        parameters={"id": first["invoice_id"]},
    ).result_rows
    assert [r[0] for r in natural] == ["platform", "calls"]
