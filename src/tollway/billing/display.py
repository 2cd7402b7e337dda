"""Numbers for people: how an invoice page shows quantities and amounts (docs/billing.md, "Invoice
documents: HTML and PDF"). Pure functions of ``Decimal`` (never a binary float); nothing here changes a
figure the invoice stores — the JSON document keeps the exact decimal strings.

* **Counts** (requests, cost, a JSON field's values; any meter that is not bytes): every digit, grouped
  in threes with a comma: ``1234567`` → ``1,234,567``, ``2.5`` → ``2.5``. Exact: removing the commas gives
  the number back.
* **Money**: exactly the currency's places (``tollway.currencies``), grouped: ``1234.5`` USD →
  ``1,234.50``, ``1200`` JPY → ``1,200``, ``-3`` KWD → ``-3.000``. An amount with more places than its
  currency is refused (``decimal.Inexact``), never rounded: amounts are rounded once, when priced.
* **Bytes** (meters of unit ``request_bytes`` / ``response_bytes``): decimal SI units, 1 kB = 1000 B,
  1 MB = 1000 kB, … up to YB (10²⁴ B), written with the SI symbols ``B kB MB GB TB PB EB ZB YB`` — not the
  binary KiB/MiB (1024). Decimal units divide a decimal quantity exactly (a shift of the point), so a
  figure such as ``1.5 GB`` *is* 1,500,000,000 bytes. The unit is the largest one the quantity reaches;
  the figure has at most 2 decimal places (trailing zeros dropped). When those 2 places cannot show
  the quantity exactly, it is rounded half to even and marked ``≈`` (``1234567`` → ``≈ 1.23 MB``), and a
  figure that rounds up to 1000 moves to the next unit (``999999`` → ``≈ 1 MB``). The invoice also shows
  the exact number of bytes (``exact_bytes``: ``1,234,567 bytes``) beside every figure of 1 kB or more.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from tollway.billing.money import format_amount

BYTE_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
"""SI symbols, each 1000 times the one before (``kB`` = 10³ B, ``YB`` = 10²⁴ B)."""
BYTE_METER_UNITS: Final = frozenset({"request_bytes", "response_bytes"})
"""The catalog meter units (``Meter.unit``) whose quantities are bytes."""
BYTE_PLACES: Final = 2
"""Decimal places of a bytes figure (after dropping trailing zeros: ``1.5 GB``, ``2 MB``)."""
APPROXIMATE: Final = "≈ "
"""Put before a bytes figure that is rounded (the exact bytes are shown beside it)."""

_EXACT: Final = decimal.Context(
    prec=200, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow]
)  # a shift of the point, exact (a quantity has at most 38 digits)
_ROUND: Final = decimal.Context(prec=200, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
_STEP: Final = Decimal(1000)
_QUANTUM: Final = Decimal(1).scaleb(-BYTE_PLACES)
_GROUPED: Final = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})*)(?:\.[0-9]+)?")
_BYTES: Final = re.compile(rf"(?:{APPROXIMATE})?([0-9][0-9,]*(?:\.[0-9]+)?) ({'|'.join(BYTE_UNITS)})")


def _plain(value: Decimal) -> str:
    """Every digit of ``value``, never an exponent (``1E+3`` → ``1000``, ``0E-8`` → ``0.00000000``)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{value!r} is not a finite Decimal")
    text = format(value, "f")
    return text[1:] if text.startswith("-") and value.is_zero() else text  # never "-0"


def group_digits(text: str) -> str:
    """A plain decimal numeral (``-1234567.125``) with its integer digits grouped in threes by commas
    (``-1,234,567.125``); the fraction is left as it is. ``ValueError`` for anything else."""
    if not re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", text):
        raise ValueError(f"{text!r} is not a plain decimal numeral")
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, point, fraction = digits.partition(".")
    return f"{sign}{int(whole):,}{point}{fraction}"


def parse_grouped(text: str) -> Decimal:
    """The number a grouped numeral shows (``1,234,567.125`` → ``Decimal('1234567.125')``): the inverse
    of ``group_digits``. ``ValueError`` for a numeral that is not grouped in threes."""
    if not _GROUPED.fullmatch(text):
        raise ValueError(f"{text!r} is not a number grouped in threes such as 1,234,567.5")
    return Decimal(text.replace(",", ""))


def format_count(value: Decimal) -> str:
    """A quantity with every digit, grouped: ``1,234,567`` (``2.5`` stays ``2.5``)."""
    return group_digits(_plain(value))


def format_money(amount: Decimal, currency: str) -> str:
    """An amount with exactly ``currency``'s places, grouped: ``1,234.50``. ``UnknownCurrency`` for a
    code Tollway does not bill in; ``decimal.Inexact`` for an amount with more places (never rounded)."""
    return group_digits(format_amount(amount, currency))


@dataclass(frozen=True, slots=True)
class BytesFigure:
    """A number of bytes as shown: ``text`` (``≈ 1.23 MB``), the figure's ``value`` in bytes
    (``1230000``) and whether it is the exact quantity (``exact``: no ``≈``)."""

    text: str
    value: Decimal
    exact: bool


def bytes_figure(quantity: Decimal) -> BytesFigure:
    """``quantity`` bytes (≥ 0) in the largest SI unit it reaches, with at most 2 places (module doc)."""
    if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity < 0:
        raise ValueError(f"a number of bytes is a finite Decimal ≥ 0, not {quantity!r}")
    power = 0
    while power < len(BYTE_UNITS) - 1 and quantity >= _STEP ** (power + 1):
        power += 1
    while True:
        scaled = quantity.scaleb(-3 * power, context=_EXACT)  # exact: a shift of the decimal point
        shown = scaled.quantize(_QUANTUM, context=_ROUND) if power else scaled
        if shown >= _STEP and power < len(BYTE_UNITS) - 1:  # 999.995 kB shows as 1 MB, not 1000 kB
            power += 1
            continue
        break
    text = _plain(shown)
    if "." in text:  # trailing zeros add nothing: 1.50 kB is 1.5 kB
        text = text.rstrip("0").rstrip(".")
    exact = shown == scaled
    prefix = "" if exact else APPROXIMATE
    return BytesFigure(
        f"{prefix}{group_digits(text)} {BYTE_UNITS[power]}", shown.scaleb(3 * power, context=_EXACT), exact
    )


def format_bytes(quantity: Decimal) -> str:
    """``bytes_figure(quantity).text``: ``1.5 GB``, ``≈ 1.23 MB``, ``512 B``."""
    return bytes_figure(quantity).text


def exact_bytes(quantity: Decimal) -> str:
    """The exact number of bytes, grouped: ``1,234,567 bytes`` (``1 byte``)."""
    return f"{format_count(quantity)} {'byte' if quantity == 1 else 'bytes'}"


def parse_bytes(text: str) -> Decimal:
    """The number of bytes a figure such as ``1.5 GB`` or ``≈ 1.23 MB`` shows (for a rounded one: the
    rounded figure's). The inverse of ``format_bytes`` for exact figures. ``ValueError`` otherwise."""
    found = _BYTES.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a number of bytes such as 1.5 GB")
    return parse_grouped(found.group(1)).scaleb(3 * BYTE_UNITS.index(found.group(2)), context=_EXACT)


@dataclass(frozen=True, slots=True)
class ShownQuantity:
    """A line's quantity as the invoice shows it: ``text``, and ``exact`` (the exact figure, shown
    smaller beside it) when ``text`` alone is not every digit of the quantity."""

    text: str
    exact: str | None = None


def show_quantity(quantity: Decimal, unit: str | None) -> ShownQuantity:
    """A quantity of a meter of ``unit`` (a catalog ``Meter.unit``; None: not known): bytes in SI units
    with the exact bytes beside them (from 1 kB), anything else as a grouped count."""
    if unit in BYTE_METER_UNITS and quantity >= 0:
        figure = bytes_figure(quantity)
        return ShownQuantity(figure.text, exact_bytes(quantity) if quantity >= _STEP else None)
    return ShownQuantity(format_count(quantity))


def meter_units(meters: Mapping[str, object]) -> dict[str, str]:
    """Meter id → its unit (``requests``, ``response_bytes``, …) from a catalog's ``meters`` (objects with
    a ``unit``), for ``render.to_html``."""
    units: dict[str, str] = {}
    for name, meter in meters.items():
        unit = getattr(meter, "unit", None)
        if unit is not None:
            units[name] = str(getattr(unit, "value", unit))
    return units
