"""The charge models: one pure module per model, all with the same signature

    price(charge, quantity: Decimal, period: PeriodContext) -> ChargeResult

``price_charge`` picks the module for a catalog charge. No I/O, no clock, no rounding: the amount is
exact and the invoice line rounds it once (``tollway.billing.rating``).
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges import allowance, flat, graduated, package, per_unit, volume
from tollway.billing.charges.result import FULL_PERIOD, ChargeResult, PeriodContext, Step, Timing
from tollway.plans.pricing import (
    AllowanceCharge,
    Charge,
    FlatCharge,
    GraduatedCharge,
    PackageCharge,
    PerUnitCharge,
    VolumeCharge,
)

__all__ = ["FULL_PERIOD", "ChargeResult", "PeriodContext", "Step", "Timing", "price_charge"]


def price_charge(charge: Charge, quantity: Decimal, period: PeriodContext = FULL_PERIOD) -> ChargeResult:
    """Price ``quantity`` of the charge's meter (ignored for a flat fee) with the charge's model."""
    if isinstance(charge, FlatCharge):
        return flat.price(charge, quantity, period)
    if isinstance(charge, PerUnitCharge):
        return per_unit.price(charge, quantity, period)
    if isinstance(charge, GraduatedCharge):
        return graduated.price(charge, quantity, period)
    if isinstance(charge, VolumeCharge):
        return volume.price(charge, quantity, period)
    if isinstance(charge, PackageCharge):
        return package.price(charge, quantity, period)
    if isinstance(charge, AllowanceCharge):
        return allowance.price(charge, quantity, period)
    raise TypeError(f"not a charge: {charge!r}")  # pragma: no cover - the union is exhaustive
