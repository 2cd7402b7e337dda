"""Flat recurring fee: a fixed amount per period, billed at its start (``in_advance``) or end
(``in_arrears``); a partial period pays its fraction (49.00 for half a month = 24.50)."""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact
from tollway.plans.pricing import FlatCharge


def price(charge: FlatCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """amount × period.fraction. ``quantity`` is ignored (a flat fee does not depend on usage); the
    result's quantity is the fraction, so the line reads ``1 × 49.00`` for a whole period."""
    timing = charge.timing.replace("_", " ")
    with exact():
        amount = charge.amount * period.fraction
    label = f"flat fee, {timing}" if period.full else f"flat fee, {timing}, {period.fraction} of the period"
    return ChargeResult(amount, period.fraction, (Step(label, period.fraction, charge.amount, amount),), charge.timing)
