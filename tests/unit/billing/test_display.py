"""Numbers for people (``tollway.billing.display``): grouped counts, money with its currency's places,
bytes in decimal SI units. Properties over generated decimals (round trips, order kept, the exact
figure never lost, no float), and the examples of docs/billing.md, "Invoice documents: HTML and PDF"."""

import decimal
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.display import (
    APPROXIMATE,
    BYTE_UNITS,
    BytesFigure,
    bytes_figure,
    exact_bytes,
    format_bytes,
    format_count,
    format_money,
    group_digits,
    parse_bytes,
    parse_grouped,
    show_quantity,
)
from tollway.billing.errors import UnknownCurrency
from tollway.billing.money import format_decimal
from tollway.currencies import MINOR_UNITS

DOC = Path(__file__).parents[3] / "docs" / "billing.md"

# Quantities as the warehouse holds them: Decimal(38, 9), at most 29 digits before the point.
quantities = st.decimals(min_value=0, max_value=Decimal("9" * 29 + ".999999999"), places=9, allow_nan=False)
whole_bytes = st.integers(min_value=0, max_value=10**29 - 1).map(Decimal)
signed = st.decimals(min_value=-(10**20), max_value=10**20, allow_nan=False, allow_infinity=False)
currencies = st.sampled_from(sorted(MINOR_UNITS))


def doc_table(marker: str) -> list[list[str]]:
    text = DOC.read_text()
    section = text.split(f"<!-- {marker}", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


# --- counts ------------------------------------------------------------------------------------------


@given(signed)
def test_a_grouped_count_is_every_digit_and_parses_back(value: Decimal) -> None:
    shown = format_count(value)
    assert shown.replace(",", "") == format_decimal(value).removeprefix("-" if value.is_zero() else "\0")
    assert parse_grouped(shown) == value
    whole = shown.lstrip("-").split(".")[0]
    assert all(len(group) == 3 for group in whole.split(",")[1:])
    assert 1 <= len(whole.split(",")[0]) <= 3


def test_counts_are_grouped_in_threes() -> None:
    assert format_count(Decimal("1234567")) == "1,234,567"
    assert format_count(Decimal("999")) == "999"
    assert format_count(Decimal("1000.125")) == "1,000.125"
    assert format_count(Decimal("-1234")) == "-1,234"
    assert format_count(Decimal("1E+3")) == "1,000"  # never an exponent
    assert format_count(Decimal("-0")) == "0"
    assert group_digits("12345678901234567890123456789") == "12,345,678,901,234,567,890,123,456,789"


@pytest.mark.parametrize("bad", ["1e5", "1,000", " 1", "nan", "", "-", "1."])
def test_only_plain_numerals_are_grouped(bad: str) -> None:
    with pytest.raises(ValueError, match="plain decimal numeral"):
        group_digits(bad)


@pytest.mark.parametrize("bad", ["1,00", "12,3456", "1000,000", ",1", "1e3"])
def test_a_badly_grouped_numeral_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="grouped in threes"):
        parse_grouped(bad)


def test_a_float_is_refused() -> None:
    for call in (format_count, bytes_figure):
        with pytest.raises(ValueError, match="Decimal"):
            call(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        format_count(Decimal("NaN"))


# --- money -------------------------------------------------------------------------------------------


@given(st.integers(min_value=-(10**15), max_value=10**15), currencies)
def test_money_shows_the_currency_places_and_parses_back(minor: int, currency: str) -> None:
    places = MINOR_UNITS[currency]
    amount = Decimal(minor).scaleb(-places)
    shown = format_money(amount, currency)
    assert parse_grouped(shown) == amount
    assert len(shown.partition(".")[2]) == places


def test_money_is_never_rounded_here() -> None:
    with pytest.raises(decimal.Inexact):
        format_money(Decimal("1.005"), "USD")
    with pytest.raises(UnknownCurrency):
        format_money(Decimal("1"), "XAU")


# --- bytes -------------------------------------------------------------------------------------------


@given(quantities)
def test_a_bytes_figure_is_exact_or_marked_and_within_half_its_last_place(quantity: Decimal) -> None:
    figure = bytes_figure(quantity)
    with decimal.localcontext(prec=100):  # exact arithmetic on 38-digit quantities
        check_figure(quantity, figure)


def check_figure(quantity: Decimal, figure: BytesFigure) -> None:
    assert parse_bytes(figure.text) == figure.value
    assert figure.text.startswith(APPROXIMATE) != figure.exact
    assert figure.exact == (figure.value == quantity)
    unit = BYTE_UNITS.index(figure.text.rsplit(" ", 1)[1])
    if unit:  # at most 2 places of the unit: off by at most half of 0.01 unit, under 0.5 % of the quantity
        assert abs(figure.value - quantity) <= Decimal("0.005").scaleb(3 * unit)
        assert abs(figure.value - quantity) <= quantity * Decimal("0.005")
        number = figure.text.removeprefix(APPROXIMATE).split(" ")[0]
        assert (len(number.partition(".")[2]) <= 2 and not number.endswith(("0", "."))) or "." not in number
    else:
        assert figure.exact
        assert quantity < 1000
    if 0 < unit < len(BYTE_UNITS) - 1:  # the largest unit reached: 1 ≤ figure < 1000
        assert Decimal(1).scaleb(3 * unit) <= figure.value < Decimal(1).scaleb(3 * unit + 3)


@given(whole_bytes, whole_bytes)
def test_bytes_figures_keep_the_order_of_the_quantities(a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert bytes_figure(low).value <= bytes_figure(high).value


@given(st.integers(min_value=100, max_value=99_999), st.integers(min_value=1, max_value=8))
def test_a_figure_with_two_places_or_fewer_round_trips_exactly(hundredths: int, power: int) -> None:
    quantity = Decimal(hundredths).scaleb(3 * power - 2)  # 1.00 to 999.99 of the unit
    text = format_bytes(quantity)
    assert not text.startswith(APPROXIMATE)
    assert parse_bytes(text) == quantity


@given(whole_bytes)
def test_the_exact_bytes_are_always_there_to_read(quantity: Decimal) -> None:
    shown = show_quantity(quantity, "response_bytes")
    if quantity >= 1000:
        assert shown.exact == f"{format_count(quantity)} bytes"
        assert parse_grouped(shown.exact.removesuffix(" bytes")) == quantity
    else:
        assert shown.exact is None
        assert parse_bytes(shown.text) == quantity


def test_bytes_edges() -> None:
    assert format_bytes(Decimal(999)) == "999 B"
    assert format_bytes(Decimal(999_994)) == "≈ 999.99 kB"
    assert format_bytes(Decimal(999_995)) == "≈ 1 MB"  # not 1000 kB
    assert format_bytes(Decimal("9" * 29)) == "≈ 100,000 YB"  # past YB: grouped YB
    assert format_bytes(Decimal("12.50")) == "12.5 B"
    assert format_bytes(Decimal("0E-9")) == "0 B"
    assert exact_bytes(Decimal(1)) == "1 byte"
    with pytest.raises(ValueError, match="≥ 0"):
        bytes_figure(Decimal(-1))
    with pytest.raises(ValueError, match=r"1\.5 GB"):
        parse_bytes("1.5 GiB")


def test_other_meters_and_unknown_ones_show_counts() -> None:
    assert show_quantity(Decimal(1_500_000), "requests").text == "1,500,000"
    assert show_quantity(Decimal(1_500_000), None).text == "1,500,000"
    assert show_quantity(Decimal(1_500_000), "request_bytes").text == "1.5 MB"


# --- the documented examples -------------------------------------------------------------------------


def test_the_documented_quantity_examples() -> None:
    rows = doc_table("display-examples")
    assert len(rows) >= 8
    for quantity, unit, shown, beside in rows:
        got = show_quantity(Decimal(quantity), unit)
        assert (got.text, got.exact or "") == (shown, beside), quantity


def test_the_documented_money_examples() -> None:
    rows = doc_table("money-examples")
    assert len(rows) >= 4
    for amount, currency, shown in rows:
        assert format_money(Decimal(amount), currency) == shown
    assert re.search(r"1 kB =\s+1000 B", DOC.read_text())
