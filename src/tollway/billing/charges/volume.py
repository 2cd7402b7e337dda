"""Volume tiers: the whole quantity is priced at the unit price of the one tier it falls in, plus that
tier's flat amount (Stripe ``tiers_mode=volume``; Lago "volume").

Stripe's example, tiers 1–5 at 7.00, 6–10 at 6.50, 11+ at 6.00: 6 units = 6 × 6.50 = 39.00, and
25 units = 25 × 6.00 = 150.00. A quantity of 0 falls in no tier and costs nothing, unless the charge says
``flat_fee_at_zero: true``: then 0 pays the first tier's flat amount (OpenMeter's rule).
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.charges.tiers import bands
from tollway.billing.money import exact
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import VolumeCharge


def price(charge: VolumeCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """quantity × the unit_amount of the tier containing it, + that tier's flat_amount. ``period`` is unused."""
    quantity = check_quantity(quantity)
    if quantity == 0:
        if not (charge.flat_fee_at_zero and charge.tiers[0].flat_amount):
            return ChargeResult(Decimal(0), quantity, ())
        first = bands(charge.tiers)[0]
        flat = first.tier.flat_amount
        step = Step(f"{first.label} flat fee, due at zero usage", Decimal(1), flat, flat)
        return ChargeResult(flat, quantity, (step,))
    band = next(b for b in bands(charge.tiers) if b.contains(quantity))
    with exact():
        steps = [Step(f"{band.label}, all units", quantity, band.tier.unit_amount, quantity * band.tier.unit_amount)]
        if band.tier.flat_amount:
            flat = band.tier.flat_amount
            steps.append(Step(f"{band.label} flat fee", Decimal(1), flat, flat))
        amount = sum((step.amount for step in steps), Decimal(0))
    return ChargeResult(amount, quantity, tuple(steps))
