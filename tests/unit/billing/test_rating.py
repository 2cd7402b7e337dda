"""Rating and quotes: lines in order, each rounded once, total = their sum; discounts, coupons and the
minimum commitment; the strict quote entry point; Stripe's example through the Python API."""

from decimal import Decimal
from typing import Any

import pytest

from tests.unit.billing.builders import (
    STRIPE_CATALOG,
    allowance,
    discount,
    flat,
    graduated,
    package,
    per_unit,
    pricing,
    volume,
)
from tollway.billing.charges import PeriodContext
from tollway.billing.errors import AmountOutOfRange, InvalidQuantity, PlanNotPriced, UnknownCurrency, UnpricedMeter
from tollway.billing.quote import priced_meters, quote
from tollway.billing.rating import InvoiceDraft, rate
from tollway.plans.errors import UnknownMeter, UnknownPlan
from tollway.plans.loader import load_catalog

D = Decimal


def amounts(draft: InvoiceDraft) -> list[tuple[str, str, str]]:
    return [(line.kind, line.discount_id or line.charge_id, str(line.amount)) for line in draft.lines]


# --- Stripe's published example, through the Python API ------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "units", "total"),
    [("volume", "6", "39.00"), ("volume", "25", "150.00"), ("graduated", "6", "41.50"), ("graduated", "25", "157.50")],
)
def test_stripe_example(plan: str, units: str, total: str) -> None:
    draft = quote(load_catalog(STRIPE_CATALOG), plan, {"units": D(units)})
    assert str(draft.total) == total
    assert draft.as_dict()["total"] == total
    assert [line.charge_id for line in draft.lines] == ["units"]


def test_json_shape() -> None:
    draft = quote(load_catalog(STRIPE_CATALOG), "graduated", {"units": D(6)})
    assert draft.as_dict() == {
        "plan": "graduated",
        "currency": "USD",
        "period": {"fraction": "1", "index": 0},
        "lines": [
            {
                "kind": "charge",
                "charge_id": "units",
                "discount_id": None,
                "meter": "units",
                "description": "units (graduated, units)",
                "quantity": "6",
                "amount": "41.50",
                "timing": "in_arrears",
                "breakdown": ["tier 1 (1–5): 5 × 7.00 = 35.00", "tier 2 (6–10): 1 × 6.50 = 6.50"],
            }
        ],
        "total": "41.50",
    }


# --- rounding: per line, once; total = sum ------------------------------------------------------------


def test_each_line_is_rounded_once_and_the_total_is_their_sum() -> None:
    # 0.125 and 0.125: rounding the exact sum (0.25) would differ from summing the rounded lines (0.24).
    plan = pricing(per_unit("0.125", meter="a", id="a"), per_unit("0.125", meter="b", id="b"))
    draft = rate("p", plan, {"a": D(1), "b": D(1)})
    assert amounts(draft) == [("charge", "a", "0.12"), ("charge", "b", "0.12")]
    assert draft.total == D("0.24")


def test_sub_cent_unit_prices_are_computed_exactly_then_rounded() -> None:
    draft = rate("p", pricing(per_unit("0.0004")), {"requests": D(1234567)})
    assert draft.lines[0].amount == D("493.83")
    assert draft.lines[0].breakdown == ("requests, per unit: 1234567 × 0.0004 = 493.8268",)


@pytest.mark.parametrize(("currency", "expected"), [("JPY", "494"), ("KWD", "493.827"), ("EUR", "493.83")])
def test_minor_unit_comes_from_the_currency(currency: str, expected: str) -> None:
    draft = rate("p", pricing(per_unit("0.0004"), currency=currency), {"requests": D(1234567)})
    assert draft.as_dict()["total"] == expected


def test_unknown_currency() -> None:
    # The catalog refuses such a plan (tests/integration/test_bill_input.py); rating still does, too.
    unvalidated = pricing(per_unit("1")).model_copy(update={"currency": "XYZ"})
    with pytest.raises(UnknownCurrency, match="'XYZ'"):
        rate("p", unvalidated, {})


def test_missing_meters_count_as_zero_and_unpriced_meters_are_ignored_by_rate() -> None:
    draft = rate("p", pricing(flat(), per_unit("1")), {"ingress": D(99)})
    assert amounts(draft) == [("charge", "platform", "49.00"), ("charge", "calls", "0.00")]


def test_an_amount_too_long_to_be_exact_is_refused_not_rounded() -> None:
    huge_price = "9" * 180 + ".123456789012"
    with pytest.raises(AmountOutOfRange, match="more than 200 digits"):
        rate("p", pricing(per_unit(huge_price)), {"requests": D("12345678901234567890123456789.123456789")})


def test_an_integer_fraction_becomes_a_decimal() -> None:
    assert type(PeriodContext(1).fraction) is Decimal  # type: ignore[arg-type]


def test_rate_refuses_float_quantities() -> None:
    with pytest.raises(InvalidQuantity, match="binary float"):
        rate("p", pricing(per_unit("1")), {"requests": 6.0})  # type: ignore[dict-item]


# --- discounts -----------------------------------------------------------------------------------------


def test_percent_discount_on_one_charge_follows_it() -> None:
    plan = pricing(flat(), per_unit("1"), discounts=[discount(percent="10", applies_to="platform")])
    draft = rate("p", plan, {"requests": D(10)})
    assert amounts(draft) == [
        ("charge", "platform", "49.00"),
        ("discount", "promo", "-4.90"),
        ("charge", "calls", "10.00"),
    ]
    assert draft.total == D("54.10")
    assert draft.lines[1].charge_id == "platform"
    assert draft.lines[1].timing == "in_advance"  # billed with the charge it discounts
    assert draft.lines[1].breakdown == ("10% × 49.00 = 4.90",)


def test_fixed_discount_larger_than_the_charge_stops_at_zero() -> None:
    plan = pricing(flat("30.00"), per_unit("1"), discounts=[discount(amount="50.00", applies_to="platform")])
    draft = rate("p", plan, {"requests": D(10)})
    assert amounts(draft) == [
        ("charge", "platform", "30.00"),
        ("discount", "promo", "-30.00"),
        ("charge", "calls", "10.00"),
    ]
    assert draft.lines[1].breakdown == ("50.00 off 30.00: capped at 30.00",)
    assert draft.total == D("10.00")  # the other charge keeps its amount


def test_fixed_discount_on_the_invoice_never_makes_it_negative() -> None:
    plan = pricing(per_unit("1"), discounts=[discount(amount="100")])
    draft = rate("p", plan, {"requests": D(7)})
    assert amounts(draft) == [("charge", "calls", "7.00"), ("discount", "promo", "-7.00")]
    assert draft.total == 0
    assert rate("p", plan, {}).as_dict()["total"] == "0.00"  # 0 off 0: no negative zero


def test_discounts_on_the_same_target_compound_in_catalog_order() -> None:
    plan = pricing(flat("100.00"), discounts=[discount("a", percent="50"), discount("b", percent="50")])
    assert amounts(rate("p", plan, {})) == [
        ("charge", "platform", "100.00"),
        ("discount", "a", "-50.00"),
        ("discount", "b", "-25.00"),
    ]


def test_percent_discount_is_rounded_once_half_even() -> None:
    plan = pricing(flat("0.25"), discounts=[discount(percent="10")])  # 0.025 off → 0.02
    assert amounts(rate("p", plan, {}))[-1] == ("discount", "promo", "-0.02")


@pytest.mark.parametrize(("index", "applies"), [(0, True), (2, True), (3, False), (10, False)])
def test_coupon_lasts_n_periods(index: int, applies: bool) -> None:
    plan = pricing(flat("49.00"), discounts=[discount("launch", percent="20", periods=3)])
    draft = rate("p", plan, {}, PeriodContext(index=index))
    assert draft.total == (D("39.20") if applies else D("49.00"))
    assert any(line.kind == "discount" for line in draft.lines) is applies


# --- minimum commitment --------------------------------------------------------------------------------


def test_minimum_commitment_true_up_after_charge_discounts_before_invoice_discounts() -> None:
    plan = pricing(
        flat("100.00"),
        per_unit("0.01"),
        minimum_commitment="500.00",
        discounts=[discount("d1", amount="20", applies_to="platform"), discount("d2", percent="10")],
    )
    draft = rate("p", plan, {"requests": D(1000)})
    assert amounts(draft) == [
        ("charge", "platform", "100.00"),
        ("discount", "d1", "-20.00"),
        ("charge", "calls", "10.00"),
        ("minimum", "minimum_commitment", "410.00"),
        ("discount", "d2", "-50.00"),
    ]
    assert draft.total == D("450.00")
    assert draft.lines[3].breakdown == (
        "minimum commitment: 1 × 500.00 = 500.00",
        "less the subtotal: 1 × -90.00 = -90.00",
    )


def test_no_true_up_line_when_the_minimum_is_reached() -> None:
    plan = pricing(per_unit("1"), minimum_commitment="50")
    assert amounts(rate("p", plan, {"requests": D(50)})) == [("charge", "calls", "50.00")]
    assert amounts(rate("p", plan, {"requests": D(60)})) == [("charge", "calls", "60.00")]


def test_minimum_and_flat_fees_are_prorated_usage_is_not() -> None:
    plan = pricing(flat("49.00"), per_unit("1"), minimum_commitment="300")
    draft = rate("p", plan, {"requests": D(10)}, PeriodContext(D("0.5")))
    assert amounts(draft) == [
        ("charge", "platform", "24.50"),
        ("charge", "calls", "10.00"),
        ("minimum", "minimum_commitment", "115.50"),
    ]
    assert draft.total == D(150)


def test_full_catalog_example_every_model_at_once() -> None:
    plan = pricing(
        flat("49.00"),
        graduated(meter="requests", id="calls"),
        volume(meter="rows", id="rows"),
        package(1000, "2.50", "up", 10000),
        allowance(50, "0.09"),
        per_unit("0.0015", meter="export", id="export"),
    )
    usage = {"requests": D(25), "rows": D(6), "search": D(12500), "egress": D(62), "export": D(1500)}
    draft = rate("p", plan, usage)
    assert [str(line.amount) for line in draft.lines] == ["49.00", "157.50", "39.00", "7.50", "1.08", "2.25"]
    assert draft.total == D("256.33")


# --- the strict quote ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "usage", "error", "message"),
    [
        ("gold", {}, UnknownPlan, "gold"),
        ("unpriced", {}, PlanNotPriced, "plan 'unpriced' has no pricing"),
        ("graduated", {"nope": D(1)}, UnknownMeter, "nope"),
        ("graduated", {"other": D(1)}, UnpricedMeter, "does not price meter 'other' (meters it prices: units)"),
        ("graduated", {"units": D(-1)}, InvalidQuantity, "negative"),
        ("graduated", {"units": 6.0}, InvalidQuantity, "binary float"),
        ("graduated", {"units": D("NaN")}, InvalidQuantity, "finite"),
        ("graduated", {"units": "6"}, InvalidQuantity, "not a Decimal"),
    ],
)
def test_quote_refuses(plan: str, usage: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        quote(load_catalog(STRIPE_CATALOG), plan, usage)


def test_quote_without_usage_prices_zero() -> None:
    assert quote(load_catalog(STRIPE_CATALOG), "volume", {}).total == 0


def test_priced_meters_in_order_once() -> None:
    plan = pricing(flat(), per_unit("1", meter="b", id="x"), per_unit("1", meter="a", id="y"), per_unit("2", meter="b"))
    assert priced_meters(plan) == ("b", "a")
