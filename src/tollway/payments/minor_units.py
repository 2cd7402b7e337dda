"""Decimal amounts of an invoice → integer minor units of its currency (what payment providers take).

Pure and exact: an invoice's amounts are already rounded to the currency's places (``billing.money``
rounds each line once), so the conversion never rounds; an amount with more places than the currency
has, or that is not a finite number, is refused (``AmountNotInMinorUnits``) rather than rounded again.
"""

from __future__ import annotations

import decimal
from decimal import Decimal, InvalidOperation
from typing import Final

from tollway.billing.errors import BillingError
from tollway.billing.money import minor_unit

_EXACT: Final = decimal.Context(prec=200, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow])
"""Scaling never rounds: more digits than any amount the warehouse holds (Decimal(38, 9))."""


class AmountNotInMinorUnits(BillingError):
    """An amount that is not a whole number of the currency's minor unit (or not a number at all)."""


def to_minor_units(amount: Decimal | str, currency: str) -> int:
    """``amount`` of ``currency`` as an integer count of its minor unit: ``Decimal("12.34")`` USD → 1234,
    ``"-0.50"`` USD → -50, ``"1200"`` JPY → 1200, ``"1.005"`` KWD → 1005.

    Raises ``AmountNotInMinorUnits`` for an amount with more places than the currency has (``"0.001"``
    USD), a non-finite or unparsable amount, and ``UnknownCurrency`` for a code without a minor unit."""
    if isinstance(amount, float):  # a binary float never enters money (the type says so; this enforces it)
        raise AmountNotInMinorUnits(f"{amount!r} is a float: money is Decimal")
    places = minor_unit(currency)
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(amount)
    except (InvalidOperation, TypeError, ValueError):
        raise AmountNotInMinorUnits(f"{amount!r} is not a decimal amount of {currency}") from None
    if not value.is_finite():
        raise AmountNotInMinorUnits(f"{amount!r} is not a finite amount of {currency}")
    try:
        scaled = value.scaleb(places, context=_EXACT)
    except (decimal.Inexact, decimal.Overflow):
        raise AmountNotInMinorUnits(f"{amount!r} is not an amount of {currency} Tollway can push") from None
    if scaled != scaled.to_integral_value(context=_EXACT):
        raise AmountNotInMinorUnits(
            f"{value} {currency} has more than the currency's {places} decimal place(s): "
            "invoice amounts are rounded to the minor unit before they are pushed"
        )
    return int(scaled)
