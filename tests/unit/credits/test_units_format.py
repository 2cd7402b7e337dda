"""``format_micros`` is ``str(from_micros(...))`` without Decimal arithmetic, for every amount Redis holds."""

from hypothesis import given
from hypothesis import strategies as st

from tollway.credits.units import format_micros, from_micros


@given(st.integers(-(2**53), 2**53))
def test_format_micros_is_the_decimal_form(micros: int) -> None:
    assert format_micros(micros) == str(from_micros(micros))


def test_examples() -> None:
    assert [format_micros(m) for m in (0, 1_500_000, 400, -2_000_000, 25_000_000, 1)] == [
        "0",
        "1.5",
        "0.0004",
        "-2",
        "25",
        "0.000001",
    ]
