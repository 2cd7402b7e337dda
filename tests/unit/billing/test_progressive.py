"""Progressive billing over random months (``build_invoice`` with the quantities given, no warehouse):
whatever the usage and however often the pass runs, the interim invoices and the period's invoice bill
the single invoice's amount exactly once, a coupon is used exactly once across them, and a pass run
twice in a row never issues a second interim invoice."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.billing.aggregate import Quantities
from tollway.billing.invoices import BillingMonth, Invoice, build_invoice
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: progressive, version: "1"}
meters:
  requests: {unit: requests}
plans:
  pro:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - id: calls
          model: graduated
          meter: requests
          tiers:
            - {up_to: 100, unit_amount: "0.125"}
            - {up_to: null, unit_amount: "0.0333", flat_amount: "1.00"}
      minimum_commitment: "MINIMUM"
      discounts:
        - {id: partner, percent: "15"}
      progressive_billing: {threshold: "THRESHOLD"}
      COUPONS
"""
OCTOBER = BillingMonth(2026, 10)
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
PRO = Subscription.new("acme", "pro", datetime(2026, 1, 1, tzinfo=UTC))


def catalog(minimum: int, threshold: int, coupon: int | None) -> Catalog:
    coupons = f'coupons: [{{id: welcome, amount: "{coupon}.00"}}]' if coupon else ""
    text = CATALOG.replace("MINIMUM", f"{minimum}.00").replace("THRESHOLD", f"{threshold}.00")
    return load_catalog_text(text.replace("COUPONS", coupons), "p.yaml")


def usage(requests: int) -> Quantities:
    return Quantities("acme", START, END, {"requests": Decimal(requests)}, {})


def price(cat: Catalog, requests: int, history: list[dict[str, Any]], *, interim: bool) -> Invoice:
    invoice = build_invoice(None, "db", cat, PRO, OCTOBER, history, usage=usage(requests), interim=interim)
    assert invoice is not None
    return invoice


def finalized(invoice: Invoice) -> dict[str, Any]:
    return {**invoice.as_dict(), "status": "finalized"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=80),
    st.integers(min_value=1, max_value=60),
    st.none() | st.integers(min_value=1, max_value=90),
)
def test_interim_and_final_invoices_bill_the_single_invoice_once(
    batches: list[int], tail: int, minimum: int, threshold: int, coupon: int | None
) -> None:
    cat = catalog(minimum, threshold, coupon)
    history: list[dict[str, Any]] = []
    requests = 0
    for batch in batches:  # usage arrives, then a pass runs (twice: the second must issue nothing)
        requests += batch
        for attempt in range(2):
            interim = price(cat, requests, history, interim=True)
            if interim.subtotal >= Decimal(threshold):
                assert attempt == 0, "a pass run twice issued a second interim invoice"
                assert interim.sequence == len(history) + 1
                history.append(finalized(interim))
    requests += tail
    final = price(cat, requests, history, interim=False)
    single = price(cat, requests, [], interim=False)
    subtotals = [Decimal(d["subtotal"]) for d in history] + [final.subtotal]
    assert sum(subtotals, Decimal(0)) == single.subtotal  # the period billed its total once
    assert all(s >= 0 for s in subtotals)  # monotone charges: no interim bills more than is owed
    totals = sum((Decimal(d["total"]) for d in history), Decimal(0)) + final.total
    assert totals == max(Decimal(0), single.subtotal - (coupon or 0))  # the coupon used once, fully if it can
    assert [line["interim_invoice"] for line in final.as_dict()["lines"] if line["kind"] == "interim"] == [
        d["invoice_id"] for d in history
    ]
