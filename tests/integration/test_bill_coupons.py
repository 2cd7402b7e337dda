"""A fixed-amount coupon carried across invoices, end to end on the embedded ClickHouse: docs/billing.md's
worked example (OpenMeter's published numbers) billed month by month, finalized twice each; a crash
between the lines and the invoice row; drafts; plans without coupons billing as before."""

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.billing import invoice_store
from tollway.billing.invoice_store import load_current, load_lines
from tollway.cli.bill import BillReport, bill
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "billing.md"


def doc_example(marker: str) -> tuple[str, list[list[list[str]]]]:
    """The YAML catalog after ``<!-- marker -->`` in docs/billing.md and the tables of its section (each a
    list of rows of cells, header and separator left out)."""
    section = DOC.read_text().split(f"<!-- {marker} -->", 1)[1].split("\n## ", 1)[0]
    catalog = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in section.split("```", 2)[2].splitlines():
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current[2:])
            current = []
    if current:
        tables.append(current[2:])
    return catalog, tables


COUPON_CATALOG, (COUPON_TABLE,) = doc_example("coupon-example")
ACME = Subscription.new("acme", "api", datetime(2026, 1, 1, tzinfo=UTC))
MONTHS = {"2026-10": (300, datetime(2026, 11, 2, tzinfo=UTC)), "2026-11": (250, datetime(2026, 12, 2, tzinfo=UTC))}
MONTHS["2026-12"] = (100, datetime(2027, 1, 2, tzinfo=UTC))


def catalog(text: str = COUPON_CATALOG) -> Catalog:
    return load_catalog_text(text, "coupons.yaml")


@pytest.fixture
def coupon_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    rows = [usage_row(f"r-{m}", f"{m}-15 12:00:00.000", "acme", {"requests": n}) for m, (n, _) in MONTHS.items()]
    insert_json_rows(client, database, "usage", b"".join(rows))
    return chdb_db


def run(db: ChdbDatabase, month: str, *, finalize: bool = True, text: str = COUPON_CATALOG) -> dict[str, Any]:
    client, database = db
    report: BillReport = bill(client, database, catalog(text), [ACME], month, now=MONTHS[month][1], finalize=finalize)
    (result,) = report.results
    return result.document


def row_of(document: dict[str, Any]) -> list[str]:
    """The document as a row of the doc's table: month, requests, calls, welcome, total, carried."""
    (calls,) = (line for line in document["lines"] if line["charge_id"] == "calls")
    coupons = [line for line in document["lines"] if line["kind"] == "coupon"]
    welcome = coupons[0]["amount"] if coupons else ""
    carried = coupons[0]["coupon"]["balance_after"] if coupons else ""
    return [document["period"]["month"], calls["quantity"], calls["amount"], welcome, document["total"], carried]


def test_the_documented_coupon_is_used_up_across_three_invoices_finalized_twice_each(coupon_db: ChdbDatabase) -> None:
    """OpenMeter's usage discount consumed across invoices, as published in Kong's Konnect Metering &
    Billing docs (repository Kong/developer.konghq.com, ``app/_includes/konnect/metering-and-billing/
    discounts.md``): a 500 discount meets usage of 300, 250 and 100; it applies 300 (200 left), then 200
    (0 left, 50 billed), then nothing (100 billed). Here a 500.00 USD coupon at 1.00 a request; every
    month finalized twice, the second run leaving the invoice (and the coupon) as it was."""
    assert COUPON_TABLE == [
        ["2026-10", "300", "300.00", "-300.00", "0.00", "200.00"],
        ["2026-11", "250", "250.00", "-200.00", "50.00", "0.00"],
        ["2026-12", "100", "100.00", "", "100.00", ""],
    ]
    client, database = coupon_db
    for expected in COUPON_TABLE:
        month = expected[0]
        first = run(coupon_db, month)
        again = run(coupon_db, month)
        assert again == first  # "already finalized, left unchanged": the stored document
        assert row_of(first) == expected
        assert sum(Decimal(line["amount"]) for line in first["lines"]) == Decimal(first["total"])
        stored = load_lines(client, database, first["invoice_id"])
        assert [(line["kind"], line["discount_id"], Decimal(line["amount"])) for line in stored][1:] == (
            [("coupon", "welcome", Decimal(expected[3]))] if expected[3] else []
        )
    october = run(coupon_db, "2026-10")
    assert october["subtotal"] == "300.00"
    assert "interim" not in october
    assert october["lines"][-1]["breakdown"] == [
        "500.00 left = 500.00 − 0.00 used before",
        "500.00 off 300.00 due: capped at 300.00",
        "carried to the next invoice: 200.00",
    ]


def test_a_draft_shows_the_balance_and_uses_none_of_it(coupon_db: ChdbDatabase) -> None:
    # the same plan without its coupon writes the document it always wrote: no coupon line, no subtotal
    plain = run(coupon_db, "2026-10", finalize=False, text=re.sub(r"\n      coupons:\n.*\n", "\n", COUPON_CATALOG))
    assert (plain["total"], [line["kind"] for line in plain["lines"]]) == ("300.00", ["charge"])
    assert "subtotal" not in plain
    for _ in range(2):
        draft = run(coupon_db, "2026-10", finalize=False)
        assert draft["status"] == "draft"
        assert row_of(draft) == ["2026-10", "300", "300.00", "-300.00", "0.00", "200.00"]
    run(coupon_db, "2026-10")
    assert row_of(run(coupon_db, "2026-11", finalize=False))[3:] == ["-200.00", "50.00", "0.00"]


@pytest.fixture
def crash_next(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Append to the list it gives to make the next write of invoice rows crash, after the run wrote its
    invoice lines and before the invoice row (the list is emptied when it has)."""
    real = invoice_store.insert_json_rows
    armed: list[str] = []

    def insert(client: Any, database: str, table: str, rows: bytes) -> None:
        if table == "invoices" and armed:
            armed.clear()
            raise RuntimeError("killed between the lines and the invoice row")
        real(client, database, table, rows)

    monkeypatch.setattr(invoice_store, "insert_json_rows", insert)
    return armed


def test_a_rerun_after_a_crash_uses_the_coupon_once(coupon_db: ChdbDatabase, crash_next: list[str]) -> None:
    run(coupon_db, "2026-10")
    client, database = coupon_db
    crash_next.append("november")
    with pytest.raises(RuntimeError, match="killed"):
        run(coupon_db, "2026-11")
    assert not crash_next
    november = run(coupon_db, "2026-11")  # the re-run
    assert row_of(november)[3:] == ["-200.00", "50.00", "0.00"]
    assert run(coupon_db, "2026-11") == november
    stored = load_current(client, database, [november["invoice_id"]])
    assert stored[november["invoice_id"]].status == "finalized"
    assert [line["kind"] for line in load_lines(client, database, november["invoice_id"])] == ["charge", "coupon"]
    assert row_of(run(coupon_db, "2026-12"))[3:] == ["", "100.00", ""]


def test_a_coupon_with_periods_expires_with_what_it_has_left(coupon_db: ChdbDatabase) -> None:
    """Subscribed from 2026-10-01 with ``periods: 2``: October (index 0) and November (1) use it, and the
    100.00 left in December (index 2) expires."""
    text = COUPON_CATALOG.replace('amount: "500.00"}', 'amount: "600.00", periods: 2}')
    client, database = coupon_db
    started = Subscription.new("acme", "api", datetime(2026, 10, 1, tzinfo=UTC))
    documents = []
    for month, (_, now) in MONTHS.items():
        report = bill(client, database, catalog(text), [started], month, now=now, finalize=True)
        documents.append(report.results[0].document)
    assert [row_of(d)[3:] for d in documents] == [
        ["-300.00", "0.00", "300.00"],
        ["-250.00", "0.00", "50.00"],
        ["", "100.00", ""],
    ]
