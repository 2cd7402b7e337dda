"""The real-time burn equals the invoice: for any real-time charge of a catalog (per unit, graduated with flat
fees, package, allowance) and any sequence of request quantities, the prices burned request by request
(``RealTimeCharge.price`` of the compiled charge) add up, in micro-units, to exactly what billing prices
for the period's total quantity (``billing.charges.price_charge``, before the invoice rounds the line).
Prices are drawn in the currency and, through a credit unit, converted exactly."""

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.billing.builders import allowance, graduated, package, per_unit
from tollway.billing.charges import price_charge
from tollway.credits.units import MICROS, BalanceUnit, to_micros
from tollway.plans.realtime import RealTimeModelCharge, real_time_charge

USD = BalanceUnit("USD", 2, "USD")
CREDIT_VALUES = [Decimal("0.01"), Decimal("0.001"), Decimal("0.25"), Decimal("1"), Decimal("2.5")]


@st.composite
def unit_and_price(draw: st.DrawFn) -> tuple[BalanceUnit, Any]:
    """A balance unit, and a strategy of prices (as strings) exact in its micro-units."""
    if draw(st.booleans()):
        return USD, st.integers(0, 10**8).map(lambda m: format(Decimal(m).scaleb(-6), "f"))
    value = draw(st.sampled_from(CREDIT_VALUES))
    unit = BalanceUnit("credits", 2, "USD", value)
    return unit, st.integers(0, 10**7).map(lambda m: format((Decimal(m).scaleb(-6) * value).normalize(), "f"))


@st.composite
def charges(draw: st.DrawFn) -> tuple[BalanceUnit, RealTimeModelCharge]:
    unit, prices = draw(unit_and_price())
    model = draw(st.sampled_from(["per_unit", "graduated", "package", "allowance"]))
    charge: RealTimeModelCharge
    if model == "per_unit":
        charge = per_unit(draw(prices))
    elif model == "graduated":
        bounds = sorted(draw(st.lists(st.integers(1, 500), max_size=4, unique=True)))
        tiers = [
            {"up_to": bound, "unit_amount": draw(prices), "flat_amount": draw(st.one_of(st.just("0"), prices))}
            for bound in [*bounds, None]
        ]
        charge = graduated(tiers)
    elif model == "package":
        rounding = draw(st.sampled_from(["up", "down"]))
        charge = package(draw(st.integers(1, 50)), draw(prices), rounding, draw(st.integers(0, 100)))
    else:
        charge = allowance(draw(st.integers(0, 300)), draw(prices))
    return unit, charge


@settings(max_examples=400, deadline=None)
@given(charges(), st.lists(st.integers(0, 60), max_size=40))
def test_burned_prices_sum_to_the_invoice_amount(
    unit_charge: tuple[BalanceUnit, RealTimeModelCharge], requests: list[int]
) -> None:
    unit, charge = unit_charge
    compiled = real_time_charge(charge, unit, 0, 1)
    burned, quantity = 0, 0
    for n in requests:
        price = compiled.price(quantity, n)
        assert price >= 0
        burned += price
        quantity += n
    invoiced = price_charge(charge, Decimal(quantity)).amount  # exact, in the currency, not yet rounded
    assert burned == to_micros(invoiced / unit.value)
    assert compiled.total(quantity) == burned


@given(charges(), st.integers(0, 2_000))
def test_total_is_the_invoice_amount_at_every_quantity(
    unit_charge: tuple[BalanceUnit, RealTimeModelCharge], quantity: int
) -> None:
    unit, charge = unit_charge
    compiled = real_time_charge(charge, unit, 0, 1)
    assert Decimal(compiled.total(quantity)) / MICROS * unit.value == price_charge(charge, Decimal(quantity)).amount
