"""Each charge model on its own: the worked cases and the edges (0, exactly on a bound, above the last
bound, flat amounts per tier, free units beyond the quantity). Amounts are exact, before rounding."""

from decimal import Decimal
from typing import Any

import pytest

from tests.unit.billing.builders import allowance, flat, graduated, package, per_unit, volume
from tollway.billing.charges import FULL_PERIOD, ChargeResult, PeriodContext, price_charge
from tollway.billing.charges import flat as flat_model
from tollway.billing.errors import BillingError, InvalidPeriod, InvalidQuantity
from tollway.plans.pricing import GraduatedCharge, Tier

D = Decimal
WITH_FLAT_FEES: list[dict[str, Any]] = [
    {"up_to": 100, "unit_amount": "0.10", "flat_amount": "5.00"},
    {"up_to": 1000, "unit_amount": "0.05", "flat_amount": "20.00"},
    {"up_to": None, "unit_amount": "0.01"},
]


def steps(result: ChargeResult) -> list[str]:
    return [str(step) for step in result.breakdown]


def assert_consistent(result: ChargeResult) -> None:
    assert result.amount == sum((s.amount for s in result.breakdown), D(0))
    for step in result.breakdown:
        assert step.quantity * step.unit_amount == step.amount


# --- graduated -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [("0", "0"), ("1", "7.00"), ("5", "35.00"), ("6", "41.50"), ("10", "67.50"), ("11", "73.50"), ("25", "157.50")],
)
def test_graduated_stripe_example(quantity: str, amount: str) -> None:
    result = price_charge(graduated(), D(quantity))
    assert result.amount == D(amount)
    assert_consistent(result)


def test_graduated_breakdown_names_each_band() -> None:
    assert steps(price_charge(graduated(), D(25))) == [
        "tier 1 (1–5): 5 × 7.00 = 35.00",
        "tier 2 (6–10): 5 × 6.50 = 32.50",
        "tier 3 (11+): 15 × 6.00 = 90.00",
    ]


def test_graduated_quantity_zero_reaches_no_tier_so_no_flat_fee() -> None:
    result = price_charge(graduated(WITH_FLAT_FEES), D(0))
    assert result.amount == 0
    assert result.breakdown == ()


def test_graduated_adds_the_flat_amount_of_every_tier_reached() -> None:
    exactly_on_bound = price_charge(graduated(WITH_FLAT_FEES), D(100))
    assert exactly_on_bound.amount == D("10.00") + D("5.00")  # tier 2 not reached: its flat fee not charged
    one_above = price_charge(graduated(WITH_FLAT_FEES), D(101))
    assert one_above.amount == D("10.00") + D("5.00") + D("0.05") + D("20.00")
    assert steps(one_above)[-1] == "tier 2 (101–1000) flat fee: 1 × 20.00 = 20.00"
    assert_consistent(one_above)


def test_graduated_above_the_last_bound_uses_the_open_tier() -> None:
    result = price_charge(graduated(WITH_FLAT_FEES), D(5000))
    assert result.amount == D("10.00") + D("5.00") + D("45.00") + D("20.00") + D("40.00")


def test_graduated_fractional_quantity_splits_at_the_bound() -> None:
    result = price_charge(graduated(), D("5.5"))
    assert result.amount == D("35.00") + D("3.250")


def test_graduated_one_tier_is_per_unit() -> None:
    charge = graduated([{"up_to": None, "unit_amount": "0.0004"}])
    assert price_charge(charge, D(1234567)).amount == D("493.8268")  # exact: rounding is the line's job


# --- volume --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [("0", "0"), ("1", "7.00"), ("5", "35.00"), ("6", "39.00"), ("10", "65.00"), ("11", "66.00"), ("25", "150.00")],
)
def test_volume_stripe_example(quantity: str, amount: str) -> None:
    result = price_charge(volume(), D(quantity))
    assert result.amount == D(amount)
    assert_consistent(result)


def test_volume_breakdown_and_flat_amount_of_the_tier_reached() -> None:
    assert steps(price_charge(volume(), D(6))) == ["tier 2 (6–10), all units: 6 × 6.50 = 39.00"]
    result = price_charge(volume(WITH_FLAT_FEES), D(1000))  # exactly on tier 2's bound
    assert result.amount == D("50.00") + D("20.00")
    assert steps(result)[1] == "tier 2 (101–1000) flat fee: 1 × 20.00 = 20.00"
    assert price_charge(volume(WITH_FLAT_FEES), D(1001)).amount == D("10.01")  # the open tier has no flat fee


def test_volume_zero_costs_nothing_even_with_a_flat_amount() -> None:
    assert price_charge(volume(WITH_FLAT_FEES), D(0)).amount == 0


# --- package -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "rounding", "free", "packages"),
    [
        ("0", "up", 0, 0),
        ("1", "up", 0, 1),
        ("1000", "up", 0, 1),  # exactly one package
        ("1001", "up", 0, 2),
        ("1999", "down", 0, 1),
        ("999", "down", 0, 0),
        ("12500", "up", 10000, 3),
        ("12500", "down", 10000, 2),
        ("500", "up", 10000, 0),  # free units beyond the quantity: nothing, never negative
        ("10000", "up", 10000, 0),
        ("1000.5", "up", 0, 2),  # a fraction of a unit still starts a package
    ],
)
def test_package(quantity: str, rounding: str, free: int, packages: int) -> None:
    result = price_charge(package(1000, "2.50", rounding, free), D(quantity))
    assert result.amount == packages * D("2.50")
    assert result.breakdown[0].quantity == packages
    assert result.quantity == D(quantity)


def test_package_breakdown_reads_as_arithmetic() -> None:
    assert steps(price_charge(package(1000, "2.50", "up", 10000), D(12500))) == [
        "packages of 1000 (2500 billable units after 10000 free, rounded up): 3 × 2.50 = 7.50"
    ]
    assert steps(price_charge(package(10, "1.00", "down"), D(25))) == [
        "packages of 10 (25 units, rounded down): 2 × 1.00 = 2.00"
    ]


# --- allowance, per-unit -------------------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "amount"), [("0", "0"), ("50", "0"), ("51", "0.09"), ("62", "1.08"), ("40", "0")])
def test_allowance(quantity: str, amount: str) -> None:
    result = price_charge(allowance(50, "0.09"), D(quantity))
    assert result.amount == D(amount)
    assert result.breakdown[0].quantity == max(D(0), D(quantity) - 50)


def test_allowance_is_not_prorated() -> None:
    half = PeriodContext(D("0.5"))
    assert price_charge(allowance(50, "0.09"), D(62), half).amount == D("1.08")


def test_per_unit_keeps_every_decimal_of_the_unit_price() -> None:
    result = price_charge(per_unit("0.0015"), D(1500))
    assert result.amount == D("2.2500")
    assert steps(result) == ["requests, per unit: 1500 × 0.0015 = 2.2500"]
    assert price_charge(per_unit("0.0015"), D(0)).amount == 0


# --- flat ----------------------------------------------------------------------------------------------


def test_flat_fee_full_period_and_timing() -> None:
    advance = price_charge(flat("49.00"), D(0))
    assert (advance.amount, advance.quantity, advance.timing) == (D("49.00"), D(1), "in_advance")
    assert steps(advance) == ["flat fee, in advance: 1 × 49.00 = 49.00"]
    assert price_charge(flat("49.00", "in_arrears"), D(0)).timing == "in_arrears"


def test_flat_fee_ignores_the_quantity_and_prorates_by_the_fraction() -> None:
    charge = flat("49.00")
    assert flat_model.price(charge, D(12345), FULL_PERIOD).amount == D("49.00")
    half = flat_model.price(charge, D(0), PeriodContext(D("0.5")))
    assert half.amount == D("24.50")
    assert steps(half) == ["flat fee, in advance, 0.5 of the period: 0.5 × 49.00 = 24.500"]
    assert flat_model.price(charge, D(0), PeriodContext(D(0))).amount == 0


# --- guards --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [6.0, D(-1), D("NaN"), D("Infinity"), "6", True])
def test_models_refuse_anything_but_a_non_negative_decimal(bad: object) -> None:
    for charge in (per_unit("1"), graduated(), volume(), package(10, "1"), allowance(1, "1")):
        with pytest.raises(InvalidQuantity):
            price_charge(charge, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [D("1.5"), D("-0.1"), D("NaN"), 0.5])
def test_period_fraction_outside_zero_to_one_is_refused(fraction: object) -> None:
    with pytest.raises(InvalidPeriod):
        PeriodContext(fraction)  # type: ignore[arg-type]


def test_period_index_must_be_a_natural_number() -> None:
    with pytest.raises(ValueError, match="period index"):
        PeriodContext(index=-1)


def test_tiers_the_catalog_would_refuse_are_refused_here_too() -> None:
    closed = GraduatedCharge.model_construct(
        id="x", model="graduated", meter="m", tiers=[Tier(up_to=5, unit_amount=D(1))]
    )
    with pytest.raises(BillingError, match="up_to: null"):
        price_charge(closed, D(10))
