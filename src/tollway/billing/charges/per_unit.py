"""Per-unit: every unit at the same price (Stripe "per unit"; Lago "standard"). 1500 × 0.0015 = 2.25."""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import PerUnitCharge


def price(charge: PerUnitCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """quantity × unit_amount. ``period`` is unused (the quantity is already the period's usage)."""
    quantity = check_quantity(quantity)
    with exact():
        amount = quantity * charge.unit_amount
    return ChargeResult(amount, quantity, (Step(f"{charge.meter}, per unit", quantity, charge.unit_amount, amount),))
