"""Add-ons with the other things that cut or split a period, on the embedded ClickHouse, totals by hand:
a plan change in the middle of the period while an add-on is held (each plan's part prorated, the
add-on's section over the whole time held, across the change), and progressive (threshold) invoicing
with an add-on (the interim invoice bills the add-on's section like the plan's flat fee, and the
interim and final invoices add up to the single invoice of the same usage and add-ons)."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.cli.bill import bill, progressive
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.addons import with_quantity
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: addons-changes, version: "1"}
meters:
  requests: {unit: requests}
plans:
  pro:
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "49.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.10"}
  team:
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "99.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.05"}
  threshold:
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
      progressive_billing: {threshold: "20.00"}
  single:
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
  seats:
    addon: {max_quantity: 20}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: seat, model: flat, amount: "10.00"}
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def requests(customer: str, day: str, count: int, month: str = "11") -> bytes:
    return b"".join(
        usage_row(f"{customer}-{month}-{day}-{n}", f"2026-{month}-{day} 08:00:00.000", customer, {"requests": 1})
        for n in range(count)
    )


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    return chdb_db


def sections(document: dict[str, Any]) -> list[tuple[object, ...]]:
    return [
        (p["plan"], p.get("quantity"), p["start"], p["end"], p["fraction"], p["subtotal"]) for p in document["plans"]
    ]


def test_a_plan_change_mid_period_while_an_add_on_is_held(db: ChdbDatabase) -> None:
    """November 2026: 30 days, 720 hours. ``acme`` on ``pro`` since October buys 2 seats on 10 November
    at 12:00 and keeps them; moves to ``team`` on 16 November at 00:00. 2 requests on the 5th (pro),
    4 on the 20th (team).

        pro    2026-11-01 → 2026-11-16: 360 h / 720 h = 0.5;  49.00 × 0.5 = 24.50, 2 × 0.10 = 0.20  → 24.70
        team   2026-11-16 → 2026-12-01: 0.5;                  99.00 × 0.5 = 49.50, 4 × 0.05 = 0.20  → 49.70
        seats × 2  2026-11-10 12:00 → 2026-12-01: 492 h / 720 h = 0.6833… → 0.683333333333;
                   20.00 × 0.683333333333 = 13.66666666666 → 13.67 (one section across the change)
        total  24.70 + 49.70 + 13.67 = 88.07
    """
    client, database = db
    insert_json_rows(client, database, "usage", requests("acme", "05", 2) + requests("acme", "20", 4))
    subscription = Subscription.new("acme", "pro", at("2026-10-01T00:00"))
    subscription = with_quantity(subscription, "seats", 2, at("2026-11-10T12:00"))
    subscription = subscription.changed_to("team", at("2026-11-16T00:00"))
    catalog = load_catalog_text(CATALOG, "addons.yaml")

    report = bill(client, database, catalog, [subscription], "2026-11", now=at("2027-01-05T00:00"))

    assert report.failures == ()
    (result,) = report.results
    document = result.document
    assert sections(document) == [
        ("pro", None, "2026-11-01T00:00:00Z", "2026-11-16T00:00:00Z", "0.500000000000", "24.70"),
        ("team", None, "2026-11-16T00:00:00Z", "2026-12-01T00:00:00Z", "0.500000000000", "49.70"),
        ("seats", 2, "2026-11-10T12:00:00Z", "2026-12-01T00:00:00Z", "0.683333333333", "13.67"),
    ]
    assert (document["plan"], document["total"]) == ("team", "88.07")


def test_interim_invoices_with_an_add_on_add_up_to_the_single_invoice(db: ChdbDatabase) -> None:
    """October 2026: 31 days, 744 hours. ``acme`` on ``threshold`` (progressive billing at 20.00) and its
    ``twin`` on ``single`` (the same prices, no threshold), both since January, both buy 3 seats on
    10 October at 12:00 and keep them: 516 h / 744 h = 0.693548387096… → 0.693548387097;
    30.00 × 0.693548387097 = 20.80645161291 → 20.81 (the add-on's section, whole span like a flat fee).

        pass on 12 October 12:00, 10 requests (9th): 10.00 + 10 × 0.50 + 20.81 = 35.81 ≥ 20.00
            → interim invoice 1 of 35.81
        period end, 30 requests: 10.00 + 15.00 + 20.81 = 45.81; final = 45.81 − 35.81 = 10.00
        twin: one invoice of 45.81 = 35.81 + 10.00
    """
    client, database = db
    insert_json_rows(client, database, "usage", requests("acme", "09", 10, "10") + requests("twin", "09", 10, "10"))
    subscriptions = [
        with_quantity(Subscription.new(c, plan, at("2026-01-01T00:00")), "seats", 3, at("2026-10-10T12:00"))
        for c, plan in (("acme", "threshold"), ("twin", "single"))
    ]
    catalog = load_catalog_text(CATALOG, "addons.yaml")

    interim = progressive(client, database, catalog, subscriptions, "2026-10", now=at("2026-10-12T12:00"))

    assert interim.failures == ()
    (issued,) = (r.document for r in interim.results if r.action == "finalized")
    assert (issued["customer_id"], issued["interim"]["sequence"], issued["total"]) == ("acme", 1, "35.81")
    assert sections(issued)[-1] == (
        "seats",
        3,
        "2026-10-10T12:00:00Z",
        "2026-11-01T00:00:00Z",
        "0.693548387097",
        "20.81",
    )

    insert_json_rows(client, database, "usage", requests("acme", "20", 20, "10") + requests("twin", "20", 20, "10"))
    final = bill(client, database, catalog, subscriptions, "2026-10", now=at("2026-11-02T00:00"), finalize=True)

    assert final.failures == ()
    documents = {r.document["customer_id"]: r.document for r in final.results}
    priced = sum(Decimal(line["amount"]) for line in documents["acme"]["lines"] if line["kind"] != "interim")
    assert (priced, documents["acme"]["total"]) == (Decimal("45.81"), "10.00")
    assert [s[1:] for s in sections(documents["acme"])] == [s[1:] for s in sections(documents["twin"])]
    assert documents["twin"]["total"] == "45.81"
    assert Decimal(issued["total"]) + Decimal(documents["acme"]["total"]) == Decimal(documents["twin"]["total"])
