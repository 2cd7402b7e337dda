"""Properties of the per-charge pricing options (Hypothesis): a minimum and maximum clamp the charge within
its prorated bounds and leave it alone between them; half up and half even differ only at exact ties;
graduated and volume tiers with fractional bounds stay monotone (graduated) and price a quantity exactly as
the same tiers written in a 1000 times smaller unit."""

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.unit.billing.builders import graduated, per_unit, pricing, volume
from tollway.billing.charges import PeriodContext, price_charge
from tollway.billing.money import MINOR_UNITS, quantum, round_line
from tollway.billing.rating import rate
from tollway.plans.pricing import GraduatedCharge, PerUnitCharge, Tier

D = Decimal

cents = st.integers(0, 10**7).map(lambda n: D(n).scaleb(-2))
unit_prices = st.integers(0, 10**6).map(lambda n: format(D(n).scaleb(-4), "f"))
quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False)
fractions = st.integers(0, 10**12).map(lambda n: D(n).scaleb(-12))


@given(unit_prices, quantities, cents, cents, fractions)
def test_minimum_and_maximum_clamp_the_charge_within_its_prorated_bounds(
    unit: str, quantity: Decimal, a: Decimal, b: Decimal, fraction: Decimal
) -> None:
    low, high = sorted((a, b))
    plain = per_unit(unit, meter="units")
    bounded = PerUnitCharge.model_validate(
        {**plain.model_dump(mode="json"), "minimum_amount": str(low), "maximum_amount": str(high)}
    )
    period = PeriodContext(fraction)
    before = price_charge(plain, quantity, period).amount
    result = price_charge(bounded, quantity, period)
    floor, ceiling = low * fraction, high * fraction
    assert floor <= result.amount <= ceiling
    assert result.amount == min(max(before, floor), ceiling)
    assert result.amount == sum((step.amount for step in result.breakdown), D(0))
    moved = result.amount != before
    assert moved == (len(result.breakdown) == 2)  # the adjustment is one step of its own, only when needed


@given(unit_prices, quantities, cents)
def test_a_minimum_alone_never_lowers_and_a_maximum_alone_never_raises(unit: str, q: Decimal, bound: Decimal) -> None:
    plain = per_unit(unit, meter="units")
    as_dict = plain.model_dump(mode="json")
    floor = PerUnitCharge.model_validate({**as_dict, "minimum_amount": str(bound)})
    cap = PerUnitCharge.model_validate({**as_dict, "maximum_amount": str(bound)})
    before = price_charge(plain, q).amount
    assert price_charge(floor, q).amount == max(before, bound)
    assert price_charge(cap, q).amount == min(before, bound)


amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)


@given(amounts, st.sampled_from(sorted(MINOR_UNITS)))
def test_half_up_and_half_even_differ_only_at_exact_ties(amount: Decimal, currency: str) -> None:
    even, up = round_line(amount, currency), round_line(amount, currency, "half_up")
    steps = amount / quantum(currency)
    tie = steps % 1 == D("0.5")
    if even != up:
        assert tie
        assert up - even == quantum(currency)  # half up takes the tie up; half even took it down
    if not tie:
        assert even == up
    assert abs(up - amount) <= quantum(currency) / 2
    assert abs(even - amount) <= quantum(currency) / 2


@given(st.integers(0, 10**6), st.sampled_from(["USD", "JPY", "KWD"]))
def test_every_tie_rounds_up_in_half_up(k: int, currency: str) -> None:
    """k.5 minor units: half up gives k + 1 of them, half even the even one of k and k + 1 (a rate of a
    one-line plan, so the mode travels through ``Pricing.rounding``)."""
    q = quantum(currency)
    amount = (D(k) + D("0.5")) * q
    line = per_unit("1", meter="units")
    up = rate("p", pricing(line, currency=currency, rounding="half_up"), {"units": amount}).total
    even = rate("p", pricing(line, currency=currency), {"units": amount}).total
    assert up == (k + 1) * q
    assert even == (k if k % 2 == 0 else k + 1) * q


@st.composite
def fractional_tiers(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Ascending bounds with up to 3 decimal places (in the 1000 times larger unit), whole prices."""
    bounds = sorted(draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=4, unique=True)))
    return [
        {"up_to": bound, "unit_amount": draw(unit_prices), "flat_amount": str(draw(cents))} for bound in [*bounds, None]
    ]


def in_thousands(tiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same tiers for a meter counted in thousands: bounds / 1000 (fractional), unit prices × 1000."""
    return [
        {
            "up_to": None if t["up_to"] is None else D(t["up_to"]).scaleb(-3),
            "unit_amount": format(D(t["unit_amount"]).scaleb(3), "f"),
            "flat_amount": t["flat_amount"],
        }
        for t in tiers
    ]


@given(fractional_tiers(), st.integers(0, 2 * 10**6), st.booleans())
def test_fractional_bounds_price_exactly_as_the_same_tiers_in_a_smaller_unit(
    tiers: list[dict[str, Any]], units: int, at_zero: bool
) -> None:
    quantity = D(units)
    for build in (graduated, volume):
        whole, fractional = build(tiers, meter="units"), build(in_thousands(tiers), meter="units")
        if at_zero:
            whole, fractional = (c.model_copy(update={"flat_fee_at_zero": True}) for c in (whole, fractional))
        assert price_charge(fractional, quantity.scaleb(-3)).amount == price_charge(whole, quantity).amount


@given(fractional_tiers(), quantities, quantities, st.booleans())
def test_graduated_with_fractional_bounds_never_decreases(
    tiers: list[dict[str, Any]], a: Decimal, b: Decimal, at_zero: bool
) -> None:
    charge = GraduatedCharge.model_validate(
        {"id": "g", "model": "graduated", "meter": "units", "tiers": in_thousands(tiers), "flat_fee_at_zero": at_zero}
    )
    low, high = sorted((a, b))
    assert price_charge(charge, low).amount <= price_charge(charge, high).amount


bound_inputs = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
)


@given(bound_inputs)
def test_a_tier_bound_is_a_positive_exact_number_or_a_clear_error(value: object) -> None:
    """Whatever ``up_to`` holds, the tier is valid with a bound above 0 (an ``int`` stays an ``int``, text
    and decimals become exact ``Decimal``; a decimal above 0 with at most 9 places is always accepted) or
    pydantic reports a validation error on ``up_to``: never a crash, never a float."""
    refused = isinstance(value, bool | float) or not isinstance(value, int | str | Decimal | None)
    exact = isinstance(value, Decimal) and value.is_finite() and value > 0 and value.as_tuple().exponent >= -9
    try:
        tier = Tier.model_validate({"up_to": value, "unit_amount": "1"})
    except ValidationError as exc:
        locations = [error["loc"][0] for error in exc.errors()]
    else:
        bound = tier.up_to
        assert bound is None or (type(bound) in (int, Decimal) and bound > 0)
        assert not refused, f"{value!r} should have been refused"
        if isinstance(value, int):
            assert type(bound) is int
        return
    assert locations == ["up_to"]
    assert not exact, f"{value!r} is a valid bound"
