"""Decimal amounts → integer minor units: exact, never rounded, refused when not whole minor units."""

from decimal import Context, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.errors import UnknownCurrency
from tollway.billing.money import MINOR_UNITS, format_amount, round_line
from tollway.payments.minor_units import AmountNotInMinorUnits, to_minor_units

CURRENCIES = sorted(MINOR_UNITS)
WIDE = Context(prec=100)  # Decimal(38, 9) amounts and beyond, built without rounding


@given(st.sampled_from(CURRENCIES), st.integers(min_value=-(10**38), max_value=10**38))
def test_an_amount_rounded_as_billing_rounds_it_maps_to_its_exact_count_of_minor_units(
    currency: str, minor: int
) -> None:
    amount = Decimal(minor).scaleb(-MINOR_UNITS[currency], context=WIDE)
    assert to_minor_units(amount, currency) == minor
    assert to_minor_units(format_amount(amount, currency), currency) == minor  # the document's text form


@given(
    st.sampled_from(CURRENCIES),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12, places=9),
)
def test_a_billed_line_maps_back_to_the_same_amount(currency: str, raw: Decimal) -> None:
    line = round_line(raw, currency)  # how every invoice line is rounded (billing.money)
    minor = to_minor_units(line, currency)
    assert isinstance(minor, int)
    assert Decimal(minor).scaleb(-MINOR_UNITS[currency]) == line


@given(st.sampled_from(CURRENCIES), st.integers(min_value=-(10**15), max_value=10**15), st.integers(1, 9))
def test_an_amount_with_more_places_than_the_currency_is_refused_never_rounded(
    currency: str, minor: int, extra: int
) -> None:
    places = MINOR_UNITS[currency]
    amount = WIDE.add(
        Decimal(minor).scaleb(-places, WIDE), Decimal(extra).scaleb(-places - 1, WIDE)
    )  # one digit past the minor unit
    with pytest.raises(AmountNotInMinorUnits, match="decimal place"):
        to_minor_units(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("12.34", "USD", 1234), ("-0.50", "EUR", -50), ("1200", "JPY", 1200), ("1.005", "KWD", 1005), ("0.00", "USD", 0)],
)
def test_examples(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(amount, currency) == minor
    assert to_minor_units(Decimal(amount), currency) == minor


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "12,34", "", "1e999999999"])
def test_what_is_not_a_finite_amount_is_refused(amount: str) -> None:
    with pytest.raises(AmountNotInMinorUnits):
        to_minor_units(amount, "USD")


def test_a_float_and_an_unknown_currency_are_refused() -> None:
    with pytest.raises(AmountNotInMinorUnits, match="float"):
        to_minor_units(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(UnknownCurrency):
        to_minor_units("1.00", "XXX")
