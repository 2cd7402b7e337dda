"""Money: minor units, the one rounding rule (half to even, once per line), exactness, formatting."""

import decimal
from decimal import Decimal

import pytest

from tollway.billing.errors import InvalidQuantity, UnknownCurrency
from tollway.billing.money import MINOR_UNITS, exact, format_amount, minor_unit, quantum, round_line
from tollway.billing.quantity import check_quantity, parse_fraction, parse_quantity

D = Decimal


@pytest.mark.parametrize(("currency", "places"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3)])
def test_minor_units(currency: str, places: int) -> None:
    assert minor_unit(currency) == places
    assert quantum(currency) == D(1).scaleb(-places)


def test_every_table_entry_is_an_iso_code_with_0_2_or_3_places() -> None:
    assert all(len(code) == 3 and code.isupper() and places in (0, 2, 3) for code, places in MINOR_UNITS.items())


def test_unknown_currency_is_a_clear_error() -> None:
    with pytest.raises(UnknownCurrency, match="unknown currency 'XYZ'"):
        round_line(D(1), "XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("0.125", "USD", "0.12"),  # a tie goes to the even digit
        ("0.135", "USD", "0.14"),
        ("0.1250001", "USD", "0.13"),  # not a tie
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1.0005", "KWD", "1.000"),
        ("1.0015", "KWD", "1.002"),
        ("493.8268", "USD", "493.83"),
        ("-0.004", "USD", "0.00"),  # never a negative zero
        ("-7.805", "USD", "-7.80"),
    ],
)
def test_round_line_half_even(amount: str, currency: str, rounded: str) -> None:
    result = round_line(D(amount), currency)
    assert str(result) == rounded


def test_format_pads_to_the_minor_unit_and_never_rounds() -> None:
    assert format_amount(D(39), "USD") == "39.00"
    assert format_amount(D(1200), "JPY") == "1200"
    assert format_amount(D("0.5"), "KWD") == "0.500"
    assert format_amount(D("-0.00"), "USD") == "0.00"
    with pytest.raises(decimal.Inexact):
        format_amount(D("0.125"), "USD")


def test_exact_arithmetic_raises_instead_of_rounding() -> None:
    with exact():
        assert D("0.0004") * D(10**30 + 1) == D("400000000000000000000000000.0004")
        with pytest.raises(decimal.Inexact):
            _ = D(1) / D(3)


@pytest.mark.parametrize("text", ["0", "6", "2.5", "1500", "99999999999999999999999999999", "0.000000001"])
def test_parse_quantity_accepts_plain_numerals(text: str) -> None:
    assert parse_quantity(text) == D(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("abc", "not a plain decimal"),
        ("-5", "negative"),
        ("1e400", "not a plain decimal"),
        ("nan", "not a plain decimal"),
        ("inf", "not a plain decimal"),
        ("", "not a plain decimal"),
        ("1,000", "not a plain decimal"),
        (" 5", "not a plain decimal"),
        ("+5", "not a plain decimal"),
        ("100000000000000000000000000000", "too large"),  # 30 digits: beyond Decimal(38, 9)
        ("0.0000000001", "more than 9 decimal places"),
    ],
)
def test_parse_quantity_refuses(text: str, why: str) -> None:
    with pytest.raises(InvalidQuantity, match=why):
        parse_quantity(text)


def test_check_quantity_refuses_floats_even_when_exact() -> None:
    with pytest.raises(InvalidQuantity, match="binary float"):
        check_quantity(6.0)
    assert check_quantity(6) == D(6)


def test_parse_fraction() -> None:
    assert parse_fraction("0.5") == D("0.5")
    assert parse_fraction("1") == 1
    for bad in ("1.5", "-0.5", "1/2", "nan", "0.1234567890123"):
        with pytest.raises(ValueError, match="period fraction"):
            parse_fraction(bad)
