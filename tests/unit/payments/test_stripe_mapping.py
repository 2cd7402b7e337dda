"""A finalized invoice document → Stripe parameters (pure): real documents from ``build_invoice`` (charges,
a minimum, a percent discount, a coupon: negative lines), the h1 fields (number, due date, buyer) when
present, and every refusal."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.billing.test_progressive import OCTOBER, PRO, catalog, usage
from tollway.billing.invoices import build_invoice
from tollway.payments.minor_units import to_minor_units
from tollway.payments.stripe_mapping import NotPushable, PushOptions, idempotency_key, plan_invoice


def finalized_document(requests: int, coupon: int | None = 5) -> dict[str, Any]:
    invoice = build_invoice(None, "db", catalog(20, 1000, coupon), PRO, OCTOBER, [], usage=usage(requests))
    assert invoice is not None
    return {**invoice.as_dict(), "status": "finalized"}


@settings(max_examples=40, deadline=None)
@given(requests=st.integers(0, 5000), coupon=st.one_of(st.none(), st.integers(1, 100)))
def test_every_line_becomes_one_item_of_its_exact_amount_and_the_items_add_up_to_the_total(
    requests: int, coupon: int | None
) -> None:
    document = finalized_document(requests, coupon)
    plan = plan_invoice(document, PushOptions())

    assert [item.amount for item in plan.items] == [to_minor_units(line["amount"], "USD") for line in document["lines"]]
    assert sum(item.amount for item in plan.items) == plan.total == to_minor_units(document["total"], "USD")
    assert [item.line for item in plan.items] == list(range(1, len(document["lines"]) + 1))
    for item in plan.items:
        assert item.params["amount"] == item.amount
        assert item.params["currency"] == "usd"
        assert item.params["discountable"] is False  # Tollway's discounts are lines: never discounted again
        assert item.params["metadata"]["tollway_invoice_id"] == document["invoice_id"]
        assert item.params["metadata"]["tollway_line"] == str(item.line)
        assert item.idempotency_key == f"tollway:{document['invoice_id']}:line:{item.line}:v1"


def test_discounts_and_coupons_are_negative_items() -> None:
    document = finalized_document(400, coupon=5)
    plan = plan_invoice(document, PushOptions())
    kinds = {line["kind"]: item.amount for line, item in zip(document["lines"], plan.items, strict=True)}
    assert kinds["discount"] < 0
    assert kinds["coupon"] == -500


def test_the_invoice_carries_the_contract_metadata_and_is_created_as_a_draft_stripe_cannot_advance() -> None:
    document = finalized_document(10)
    plan = plan_invoice(document, PushOptions(auto_advance=True))
    invoice_id, customer_id = document["invoice_id"], document["customer_id"]
    assert plan.invoice["metadata"] == {"tollway_invoice_id": invoice_id, "tollway_customer_id": customer_id}
    assert plan.customer["metadata"] == {"tollway_customer_id": customer_id}
    assert plan.invoice["auto_advance"] is False
    assert plan.finalize == {"auto_advance": True}
    assert plan.invoice["pending_invoice_items_behavior"] == "exclude"
    assert plan.invoice["collection_method"] == "send_invoice"
    assert plan.invoice["days_until_due"] == 30
    assert not {"due_date", "number"} & set(plan.invoice)
    assert (plan.customer_key, plan.invoice_key, plan.finalize_key) == (
        f"tollway:customer:{customer_id}:v1",
        f"tollway:{invoice_id}:invoice:v1",
        f"tollway:{invoice_id}:finalize:v1",
    )
    assert idempotency_key("a", "b") == "tollway:a:b:v1"


def test_number_due_date_and_buyer_are_passed_when_the_document_has_them() -> None:
    document = {
        **finalized_document(10),
        "number": "INV-2026-000042",
        "issued_on": "2026-12-01",
        "due_on": "2026-12-31",
        "payment_terms_days": 30,
        "buyer": {
            "name": "Acme SA",
            "email": "ap@acme.example",
            "address": ["1 rue X", "75001 Paris"],
            "country": "fr",
        },
    }
    plan = plan_invoice(document, PushOptions(days_until_due=10))
    assert plan.invoice["number"] == "INV-2026-000042"
    assert plan.invoice["due_date"] == int(datetime(2026, 12, 31, 12, tzinfo=UTC).timestamp())
    assert "days_until_due" not in plan.invoice
    assert plan.customer == {
        "metadata": {"tollway_customer_id": "acme"},
        "name": "Acme SA",
        "email": "ap@acme.example",
        "address": {"line1": "1 rue X", "line2": "75001 Paris", "country": "FR"},
    }
    charged = plan_invoice(document, PushOptions(collection_method="charge_automatically"))
    assert not {"due_date", "days_until_due"} & set(charged.invoice)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "draft"}, "only finalized invoices"),
        ({"total": "1.00"}, "add up to"),
        ({"currency": "XXX"}, "unknown currency"),
        ({"due_on": "31/12/2026"}, "not an ISO date"),
        ({"lines": None}, "no list of lines"),
        ({"customer_id": None}, "'customer_id' is missing"),
        ({"lines": [{"amount": "0.00", "description": "x"}] * 251, "total": "0.00"}, "at most 250 items"),
    ],
)
def test_a_document_that_cannot_be_pushed_is_refused_with_its_reason(change: dict[str, Any], message: str) -> None:
    document = {**finalized_document(10), **change}
    with pytest.raises(NotPushable, match=message):
        plan_invoice(document, PushOptions())


def test_a_line_with_more_places_than_the_currency_is_refused() -> None:
    document = finalized_document(10)
    document["lines"][0] = {
        **document["lines"][0],
        "amount": str(Decimal(document["lines"][0]["amount"]) + Decimal("0.001")),
    }
    with pytest.raises(NotPushable, match="decimal place"):
        plan_invoice(document, PushOptions())
