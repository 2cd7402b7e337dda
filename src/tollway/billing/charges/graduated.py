"""Graduated tiers: each band of the quantity is priced at its own tier's unit price, and every tier the
quantity reaches adds that tier's flat amount (Stripe ``tiers_mode=graduated``; Lago "graduated").

Stripe's example, tiers 1–5 at 7.00, 6–10 at 6.50, 11+ at 6.00: 6 units = 5 × 7.00 + 1 × 6.50 = 41.50.
A tier is reached when some of the quantity falls in it, so a quantity of 0 costs nothing, unless the
charge says ``flat_fee_at_zero: true``: then 0 pays the first tier's flat amount (OpenMeter's rule).
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.charges.tiers import bands
from tollway.billing.money import exact
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import GraduatedCharge


def price(charge: GraduatedCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """Σ over reached tiers of (units in the band × unit_amount + flat_amount). ``period`` is unused."""
    quantity = check_quantity(quantity)
    steps: list[Step] = []
    with exact():
        for band in bands(charge.tiers):
            part = band.part_of(quantity)
            if part == 0:
                if quantity == 0 and charge.flat_fee_at_zero and band.tier.flat_amount:
                    flat = band.tier.flat_amount
                    steps.append(Step(f"{band.label} flat fee, due at zero usage", Decimal(1), flat, flat))
                break
            steps.append(Step(band.label, part, band.tier.unit_amount, part * band.tier.unit_amount))
            if band.tier.flat_amount:
                flat = band.tier.flat_amount
                steps.append(Step(f"{band.label} flat fee", Decimal(1), flat, flat))
        amount = sum((step.amount for step in steps), Decimal(0))
    return ChargeResult(amount, quantity, tuple(steps))
