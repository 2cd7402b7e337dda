"""Money: exact ``Decimal`` arithmetic, currencies' minor units, and the one rounding rule.

Rules (docs/billing.md, "Money and rounding"):

* Amounts are ``Decimal`` from the catalog to the invoice; a binary float never enters (the catalog
  loader builds decimals from the YAML text, quantities are parsed from text, mypy --strict checks the
  signatures and the entry points reject floats at runtime).
* Charge models compute *exactly*: inside ``exact()`` an operation whose result would need rounding
  raises ``decimal.Inexact`` instead of silently losing digits. Unit prices may have more places than
  the currency (``0.0004``); their products are kept whole.
* Each invoice line is rounded **once**, by ``round_line``, to the currency's minor unit with
  ``ROUND_HALF_EVEN`` (banker's rounding: a tie goes to the even digit, so ties do not bias totals
  upwards across many lines) unless the plan's pricing says ``rounding: half_up`` (a tie goes away from
  zero, ``ROUND_HALF_UP``). The invoice total is the sum of the rounded lines and is never rounded again.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from contextlib import AbstractContextManager
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Final

from tollway.billing.errors import UnknownCurrency
from tollway.currencies import MINOR_UNITS as CURRENCY_MINOR_UNITS
from tollway.plans.pricing import DEFAULT_ROUNDING, RoundingMode

MINOR_UNITS: Final[Mapping[str, int]] = CURRENCY_MINOR_UNITS
"""Currency code → number of decimal places of its minor unit (USD 2: cents; JPY 0; KWD 3: fils);
the table lives in ``tollway.currencies`` so that the catalog refuses any other code."""

EXACT_DIGITS: Final = 200
"""Significant digits available to exact arithmetic: far beyond any quantity (≤ 38 digits in the
warehouse) times any catalog price; a result needing more raises rather than rounds."""

ROUNDING: Final = ROUND_HALF_EVEN
"""The default rounding (``RoundingMode`` ``half_even``)."""
_MODES: Final[Mapping[RoundingMode, str]] = MappingProxyType({"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP})

_EXACT: Final = decimal.Context(
    prec=EXACT_DIGITS,
    rounding=ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
# Rounding to the minor unit is the one place digits may be dropped, so Inexact is not a trap here.
_ROUNDING: Final = decimal.Context(
    prec=EXACT_DIGITS, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation, decimal.Overflow]
)
_QUANTA: Final[Mapping[str, Decimal]] = MappingProxyType(
    {code: Decimal(1).scaleb(-places) for code, places in MINOR_UNITS.items()}
)


def exact() -> AbstractContextManager[decimal.Context]:
    """A decimal context in which inexact results raise ``decimal.Inexact`` (use around charge math)."""
    return decimal.localcontext(_EXACT)


def minor_unit(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit. Raises ``UnknownCurrency``."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise UnknownCurrency(currency) from None


def quantum(currency: str) -> Decimal:
    """The smallest amount of ``currency`` as a ``Decimal`` exponent (``0.01`` for USD, ``1`` for JPY)."""
    try:
        return _QUANTA[currency]
    except KeyError:
        raise UnknownCurrency(currency) from None


def round_line(amount: Decimal, currency: str, mode: RoundingMode = DEFAULT_ROUNDING) -> Decimal:
    """``amount`` rounded to ``currency``'s minor unit, half to even (``mode`` ``half_up``: a tie away from
    zero); never a negative zero."""
    rounded = amount.quantize(quantum(currency), rounding=_MODES[mode], context=_ROUNDING)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def format_amount(amount: Decimal, currency: str) -> str:
    """A rounded amount as plain text with exactly the currency's places (``"39.00"``, ``"1200"`` in JPY).

    Formatting never rounds: an amount with more places than the currency (a line that skipped
    ``round_line``) raises ``decimal.Inexact``."""
    padded = amount.quantize(quantum(currency), context=_EXACT)
    return format(padded.copy_abs() if padded.is_zero() else padded, "f")


def format_decimal(value: Decimal) -> str:
    """Any decimal as plain text, never in exponent form (``0E-8`` → ``0.00000000``)."""
    return format(value, "f")
