"""The charge models: one pure module per model, all with the same signature

    price(charge, quantity: Decimal, period: PeriodContext) -> ChargeResult

``price_charge`` picks the module for a catalog charge, then applies the charge's ``minimum_amount`` and
``maximum_amount`` (``spend.clamp``, the same for every usage model). No I/O, no clock, no rounding: the
amount is exact and the invoice line rounds it once (``tollway.billing.rating``).
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges import allowance, flat, graduated, package, per_unit, spend, volume
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
    """Price ``quantity`` of the charge's meter (ignored for a flat fee) with the charge's model, within
    the charge's minimum and maximum amount."""
    if isinstance(charge, FlatCharge):
        return flat.price(charge, quantity, period)
    if isinstance(charge, PerUnitCharge):
        result = per_unit.price(charge, quantity, period)
    elif isinstance(charge, GraduatedCharge):
        result = graduated.price(charge, quantity, period)
    elif isinstance(charge, VolumeCharge):
        result = volume.price(charge, quantity, period)
    elif isinstance(charge, PackageCharge):
        result = package.price(charge, quantity, period)
    elif isinstance(charge, AllowanceCharge):
        result = allowance.price(charge, quantity, period)
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(f"not a charge: {charge!r}")
    return spend.clamp(charge, result, period)
