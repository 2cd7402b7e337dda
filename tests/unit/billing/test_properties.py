"""Properties of the charge models and of rating, over generated prices and quantities (Hypothesis)."""

from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.billing.builders import allowance, discount, flat, graduated, package, per_unit, pricing, volume
from tollway.billing.charges import FULL_PERIOD, ChargeResult, PeriodContext, price_charge
from tollway.billing.money import minor_unit
from tollway.billing.proration import period_fraction
from tollway.billing.rating import InvoiceDraft, rate
from tollway.periods import BillingPeriod

D = Decimal


def money(max_value: int = 10_000, places: int = 4) -> st.SearchStrategy[str]:
    values = st.decimals(min_value=0, max_value=max_value, places=places, allow_nan=False, allow_infinity=False)
    return values.map(lambda d: format(d, "f"))


quantities = st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False, allow_infinity=False)
whole_quantities = st.integers(min_value=0, max_value=10**9).map(Decimal)
positive_amounts = st.integers(1, 20_000).map(lambda cents: format(Decimal(cents).scaleb(-2), "f"))
FEBRUARY = BillingPeriod(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@st.composite
def tier_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.lists(st.integers(1, 10**6), max_size=4, unique=True)))
    tiers: list[dict[str, Any]] = [
        {"up_to": bound, "unit_amount": draw(money()), "flat_amount": draw(money(100, 2))} for bound in [*bounds, None]
    ]
    return tiers


def assert_decimal_only(result: ChargeResult) -> None:
    assert type(result.amount) is Decimal
    assert type(result.quantity) is Decimal
    for step in result.breakdown:
        assert type(step.quantity) is Decimal
        assert type(step.unit_amount) is Decimal
        assert type(step.amount) is Decimal
    assert result.amount == sum((step.amount for step in result.breakdown), D(0))


@given(tier_lists(), quantities, quantities)
def test_graduated_totals_never_decrease_as_quantity_grows(tiers: list[dict[str, Any]], a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    charge = graduated(tiers)
    assert price_charge(charge, low).amount <= price_charge(charge, high).amount


@given(money(), money(100, 2), quantities)
def test_graduated_equals_volume_with_one_tier(unit: str, flat_amount: str, quantity: Decimal) -> None:
    tiers = [{"up_to": None, "unit_amount": unit, "flat_amount": flat_amount}]
    assert price_charge(graduated(tiers), quantity).amount == price_charge(volume(tiers), quantity).amount


@given(st.integers(1, 10**6), money(), quantities)
def test_package_rounding_up_is_ceil_of_quantity_over_size_times_price(size: int, price: str, q: Decimal) -> None:
    result = price_charge(package(size, price, "up", 0), q)
    packages = (q / size).to_integral_value(rounding=ROUND_CEILING) if q else D(0)
    assert result.amount == packages * D(price)


@given(st.integers(1, 10**6), money(), quantities, st.integers(0, 10**6))
def test_package_rounding_down_never_exceeds_rounding_up(size: int, price: str, q: Decimal, free: int) -> None:
    down = price_charge(package(size, price, "down", free), q).amount
    up = price_charge(package(size, price, "up", free), q).amount
    assert D(0) <= down <= up <= down + D(price)


@given(money(1_000_000, 2), st.sampled_from(["in_advance", "in_arrears"]))
def test_a_full_periods_proration_equals_the_full_fee(amount: str, timing: str) -> None:
    assert price_charge(flat(amount, timing), D(0), FULL_PERIOD).amount == D(amount)
    whole = PeriodContext(period_fraction(FEBRUARY, FEBRUARY.start, FEBRUARY.end))
    assert price_charge(flat(amount, timing), D(0), whole).amount == D(amount)


@given(
    tier_lists(),
    quantities,
    whole_quantities,
    st.sampled_from(["USD", "JPY", "KWD"]),
    st.one_of(st.none(), money(100_000, 2)),
    st.lists(
        st.tuples(st.sampled_from(["invoice", "platform", "calls", "rows"]), st.booleans(), positive_amounts),
        max_size=3,
    ),
    st.decimals(min_value=0, max_value=1, places=3),
    st.integers(0, 5),
)
@settings(max_examples=200)
def test_the_sum_of_the_lines_is_the_total_and_every_value_is_a_decimal(
    tiers: list[dict[str, Any]],
    q: Decimal,
    rows: Decimal,
    currency: str,
    minimum: str | None,
    discount_specs: list[tuple[str, bool, str]],
    fraction: Decimal,
    index: int,
) -> None:
    discounts = [
        discount(f"d{i}", applies_to=target, periods=2, **({"percent": "12.5"} if pct else {"amount": size}))
        for i, (target, pct, size) in enumerate(discount_specs)
    ]
    plan = pricing(
        flat("49.99"),
        graduated(tiers, meter="requests", id="calls"),
        volume(tiers, meter="rows", id="rows"),
        package(7, "0.333", "up", 3),
        allowance(10, "0.0007"),
        per_unit("0.000123", meter="bytes", id="bytes"),
        currency=currency,
        **({"minimum_commitment": minimum} if minimum else {}),
        discounts=discounts,
    )
    usage = {"requests": q, "rows": rows, "search": q, "egress": q, "bytes": rows}
    draft = rate("p", plan, usage, PeriodContext(fraction, index))
    assert_rounded_and_summed(draft)


def assert_rounded_and_summed(draft: InvoiceDraft) -> None:
    places = minor_unit(draft.currency)
    assert type(draft.total) is Decimal
    assert draft.total == sum((line.amount for line in draft.lines), D(0))
    assert draft.total >= 0
    for line in draft.lines:
        assert type(line.amount) is Decimal
        assert line.quantity is None or type(line.quantity) is Decimal
        assert line.amount.as_tuple().exponent == -places  # rounded to the minor unit, padded
        assert line.amount >= 0 or line.kind == "discount"
    rendered = draft.as_dict()
    assert all(isinstance(line["amount"], str) for line in rendered["lines"])
    assert D(rendered["total"]) == sum((D(line["amount"]) for line in rendered["lines"]), D(0))


@given(tier_lists(), quantities)
def test_charge_results_are_decimal_and_add_up(tiers: list[dict[str, Any]], q: Decimal) -> None:
    for charge in (
        graduated(tiers),
        volume(tiers),
        package(1000, "2.50", "up", 10),
        allowance(50, "0.09"),
        per_unit("0.0004"),
        flat(),
    ):
        assert_decimal_only(price_charge(charge, q))
