"""Add-ons billed on the embedded ClickHouse: one invoice per customer and period, a section per
subscription (the plan, then each add-on span), each priced by its own pricing over the time it was
held. Totals computed by hand.

``acme`` (UTC, calendar months) is on ``pro`` since October. November 2026 is 30 days = 720 hours.
Seats (10.00 each) are bought mid-period, re-sized, then removed; a calls pack (20.00) is bought on
the 20th and kept. Each fraction is the time held over 720 h, rounded half to even to 12 places; each
line is the flat fee × quantity × fraction, rounded once to cents:

    pro           platform 49.00 × 1                                         = 49.00
                  calls 4 requests × 0.10                                    =  0.40   (section 49.40)
    seats × 3     2026-11-10 12:00 → 2026-11-15 00:00 = 108 h; 108/720 = 0.15
                  30.00 × 0.15 = 4.50                                        =  4.50
    seats × 5     2026-11-15 00:00 → 2026-11-24 06:00 = 222 h; 222/720 = 0.3083333… → 0.308333333333
                  50.00 × 0.308333333333 = 15.41666666665                    → 15.42
    calls_pack    2026-11-20 00:00 → 2026-12-01 00:00 = 264 h; 264/720 = 0.3666666… → 0.366666666667
                  20.00 × 0.366666666667 = 7.33333333334                     →  7.33
    total         49.40 + 4.50 + 15.42 + 7.33                                = 76.65

December: pro 49.00 (no usage) + calls_pack all month 20.00 = 69.00. ``plain`` (pro, no add-ons) is
billed in the same run exactly as before add-ons existed. The catalog and the sections are
docs/billing.md's worked example ("Add-ons"), read from the page.
"""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.billing.render import to_html
from tollway.cli.bill import bill
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.addons import with_quantity
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2027, 1, 5, tzinfo=UTC)

DOC = Path(__file__).parents[2] / "docs" / "billing.md"


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def doc_example() -> tuple[str, list[tuple[object, ...]], str]:
    """docs/billing.md's add-on example: its catalog, its sections and its total."""
    section = DOC.read_text().split("<!-- addons-example -->", 1)[1].split("\n## ", 1)[0]
    catalog = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    rows = [cells(line) for line in section.splitlines() if line.startswith("|")][2:]
    sections = [
        (name, int(q) if q else None, start, end, fraction, subtotal)
        for name, q, start, end, fraction, _, subtotal in rows[:-1]
    ]
    return catalog, sections, rows[-1][-1]


CATALOG, SECTIONS, TOTAL = doc_example()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def acme() -> Subscription:
    subscription = Subscription.new("acme", "pro", at("2026-10-01T00:00"))
    subscription = with_quantity(subscription, "seats", 3, at("2026-11-10T12:00"))
    subscription = with_quantity(subscription, "seats", 5, at("2026-11-15T00:00"))
    subscription = with_quantity(subscription, "calls_pack", 1, at("2026-11-20T00:00"))
    return with_quantity(subscription, "seats", 0, at("2026-11-24T06:00"))


PLAIN = Subscription.new("plain", "pro", at("2026-10-01T00:00"))


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    rows = [
        usage_row(f"r{n}", f"2026-11-{day} 12:00:00.000", customer, {"requests": 1}, plan="pro")
        for n, (day, customer) in enumerate(
            [("02", "acme"), ("12", "acme"), ("21", "acme"), ("29", "acme"), ("03", "plain")]
        )
    ]
    insert_json_rows(client, database, "usage", b"".join(rows))
    return chdb_db


def sections(document: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (p["plan"], p.get("quantity"), p["start"], p["end"], p["fraction"], p["subtotal"]) for p in document["plans"]
    ]


def test_an_add_on_bought_mid_period_and_removed_later_is_charged_for_the_time_held(
    db: ChdbDatabase, tmp_path: Path
) -> None:
    client, database = db
    catalog = load_catalog_text(CATALOG, "addons.yaml")
    report = bill(client, database, catalog, [acme(), PLAIN], "2026-11", now=NOW, finalize=True, out_dir=tmp_path)
    november, plain = (result.document for result in report.results)
    assert november["customer_id"] == "acme"
    assert november["plan"] == "pro"  # the plan, not an add-on
    assert sections(november) == [
        ("pro", None, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "1", "49.40"),
        ("seats", 3, "2026-11-10T12:00:00Z", "2026-11-15T00:00:00Z", "0.150000000000", "4.50"),
        ("seats", 5, "2026-11-15T00:00:00Z", "2026-11-24T06:00:00Z", "0.308333333333", "15.42"),
        ("calls_pack", 1, "2026-11-20T00:00:00Z", "2026-12-01T00:00:00Z", "0.366666666667", "7.33"),
    ]
    assert sections(november) == SECTIONS  # the page shows what billing does
    assert TOTAL == "76.65"
    assert [(line["part"], line["charge_id"], line["description"], line["amount"]) for line in november["lines"]] == [
        (0, "platform", "platform (flat)", "49.00"),
        (0, "calls", "calls (per-unit, requests)", "0.40"),
        (1, "seat", "Seat × 3 (flat)", "4.50"),
        (2, "seat", "Seat × 5 (flat)", "15.42"),
        (3, "pack", "pack (flat)", "7.33"),
    ]
    assert november["total"] == "76.65"
    assert sum(Decimal(line["amount"]) for line in november["lines"]) == Decimal("76.65")
    page = (tmp_path / f"{november['invoice_id']}.html").read_text()
    assert "Add-on seats × 5 from 2026-11-15T00:00:00Z to 2026-11-24T06:00:00Z" in page
    assert to_html(november) == page

    # A customer without add-ons: one section with exactly the keys it always had.
    assert [sorted(p) for p in plain["plans"]] == [["end", "fraction", "part", "plan", "start", "subtotal"]]
    assert plain["total"] == "49.10"

    [row] = client.query(
        f"SELECT plan_id, toString(total) FROM {database}.invoices FINAL WHERE invoice_id = %(id)s",
        parameters={"id": november["invoice_id"]},
    ).result_rows
    assert row == ("pro", "76.65")

    [december] = [r.document for r in bill(client, database, catalog, [acme()], "2026-12", now=NOW).results]
    assert sections(december) == [
        ("pro", None, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "1", "49.00"),
        ("calls_pack", 1, "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "1", "20.00"),
    ]
    assert december["total"] == "69.00"
