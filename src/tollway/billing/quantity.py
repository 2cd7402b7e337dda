"""Usage quantities and period inputs: checked at the edges, so the charge models can trust them.

A quantity is a finite ``Decimal`` ≥ 0 that fits the warehouse's meter type, ``Decimal(38, 9)``: at
most 29 digits before the point and 9 after. Text is accepted only as a plain decimal numeral
(``1500``, ``2.5``): no sign, no exponent (``1e400``), no ``nan``/``inf``, no thousands separators.
A binary ``float`` is refused even when it looks exact (``6.0``): money math never sees one.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from tollway.billing.errors import InvalidPeriod, InvalidQuantity

MAX_INTEGER_DIGITS: Final = 29
MAX_PLACES: Final = 9
MAX_FRACTION_PLACES: Final = 12
"""A period fraction has at most 12 decimal places (see ``tollway.billing.proration``)."""

_NUMERAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_LIMIT: Final = Decimal(10) ** MAX_INTEGER_DIGITS


def check_quantity(value: object, what: str = "quantity") -> Decimal:
    """``value`` if it is a valid quantity (an ``int`` is converted exactly); else ``InvalidQuantity``."""
    if isinstance(value, float):
        raise InvalidQuantity(f"{what} {value!r} is a binary float: pass a Decimal (e.g. Decimal('2.5')) or a string")
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise InvalidQuantity(f"{what} {value!r} is not a Decimal")
    if not value.is_finite():
        raise InvalidQuantity(f"{what} {value} is not a finite number")
    if value < 0:
        raise InvalidQuantity(f"{what} {value} is negative: usage is a count ≥ 0")
    if value >= _LIMIT:
        raise InvalidQuantity(f"{what} {value} is too large: at most {MAX_INTEGER_DIGITS} digits before the point")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise InvalidQuantity(f"{what} {value} has more than {MAX_PLACES} decimal places")
    return value


def parse_quantity(text: str, what: str = "quantity") -> Decimal:
    """A quantity from text such as ``"1500"`` or ``"2.5"``; ``InvalidQuantity`` naming the text otherwise."""
    if text.startswith("-") and _NUMERAL.fullmatch(text[1:]):
        raise InvalidQuantity(f"{what} {text!r} is negative: usage is a count ≥ 0")
    if not _NUMERAL.fullmatch(text):
        raise InvalidQuantity(f"{what} {text!r} is not a plain decimal number such as 1500 or 2.5")
    return check_quantity(Decimal(text), what)


def check_fraction(value: object) -> Decimal:
    """A period fraction: a ``Decimal`` in ``[0, 1]`` with at most 12 places; else ``InvalidPeriod``."""
    if isinstance(value, float):
        raise InvalidPeriod(f"period fraction {value!r} is a binary float: pass a Decimal")
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite() or not Decimal(0) <= value <= Decimal(1):
        shown = f"'{value}'" if isinstance(value, Decimal) else repr(value)
        raise InvalidPeriod(f"period fraction {shown} must be a decimal from 0 to 1 (1 = the whole period)")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_PLACES:
        raise InvalidPeriod(f"period fraction {value} has more than {MAX_FRACTION_PLACES} decimal places")
    return value


def parse_fraction(text: str) -> Decimal:
    """A period fraction from text (``"0.5"``, ``"1"``); ``InvalidPeriod`` otherwise."""
    if not _NUMERAL.fullmatch(text):
        raise InvalidPeriod(f"period fraction {text!r} must be a plain decimal from 0 to 1, such as 0.5")
    return check_fraction(Decimal(text))
