"""Included allowance + overage: the first ``included`` units of the period are free, each unit beyond
costs ``overage_unit_amount``. 50 GB included, 0.09 per GB over: 62 GB → 12 × 0.09 = 1.08."""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import AllowanceCharge


def price(charge: AllowanceCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """max(0, quantity − included) × overage_unit_amount. The allowance is per period, not prorated."""
    quantity = check_quantity(quantity)
    with exact():
        overage = max(Decimal(0), quantity - charge.included)
        amount = overage * charge.overage_unit_amount
    step = Step(f"{charge.meter} above the {charge.included} included", overage, charge.overage_unit_amount, amount)
    return ChargeResult(amount, quantity, (step,))
