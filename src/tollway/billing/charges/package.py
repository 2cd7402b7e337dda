"""Package: units are sold in packages of ``package_size`` at ``package_amount`` each, after
``free_units``; a partly used package counts as a whole one (``rounding: up``) or not at all (``down``).

1000 search units per package at 2.50, the first 10 000 free: 12 500 units → 2 500 billable → 3
packages (rounded up) = 7.50.
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import PackageCharge


def price(charge: PackageCharge, quantity: Decimal, period: PeriodContext) -> ChargeResult:
    """⌈(quantity − free_units)⁺ / package_size⌉ (or ⌊…⌋) × package_amount. ``period`` is unused."""
    quantity = check_quantity(quantity)
    with exact():
        billable = max(Decimal(0), quantity - charge.free_units)
        whole, rest = divmod(billable, charge.package_size)  # exact: integer quotient and remainder
        packages = whole + 1 if rest and charge.rounding == "up" else whole
        amount = packages * charge.package_amount
    units = f"{billable} billable units after {charge.free_units} free" if charge.free_units else f"{billable} units"
    label = f"packages of {charge.package_size} ({units}, rounded {charge.rounding})"
    return ChargeResult(amount, quantity, (Step(label, packages, charge.package_amount, amount),))
