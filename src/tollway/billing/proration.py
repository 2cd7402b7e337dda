"""Proration: the fraction of a billing period that a span of time covers, for flat fees and minimums.

The fraction is the covered time over the period's length, both in whole microseconds (so a DST day
counts its real 23 or 25 hours), rounded half-even to 12 decimal places. The fraction is an *input*
of the charge models; the line amount (``fee × fraction``) is then computed exactly and rounded once.
12 places keep any fee below 10^9 within a hundredth of a minor unit of the exact rational amount.
A whole period is exactly 1, so a full period's prorated fee equals the fee.
"""

from __future__ import annotations

import decimal
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from tollway.billing.quantity import MAX_FRACTION_PLACES
from tollway.periods import BillingPeriod

_MICROSECOND: Final = timedelta(microseconds=1)
_PLACES: Final = Decimal(1).scaleb(-MAX_FRACTION_PLACES)
_DIVISION: Final = decimal.Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])


def period_fraction(period: BillingPeriod, start: datetime, end: datetime) -> Decimal:
    """The part of ``period`` that ``[start, end)`` covers, in ``[0, 1]`` with at most 12 places."""
    covered = period.overlap(start, end) // _MICROSECOND
    length = period.length // _MICROSECOND
    if covered == length:
        return Decimal(1)
    # 60 digits then 12 places is one correct rounding: a quotient of integers below 10^17 that is not
    # exactly a tie at the 13th place differs from one by more than 10^-31, far above 60 digits' error.
    ratio = _DIVISION.divide(Decimal(covered), Decimal(length))
    return ratio.quantize(_PLACES, rounding=ROUND_HALF_EVEN, context=_DIVISION)
