"""Minimum commitment: a customer who committed to spend ``minimum`` per period pays at least that.

The true-up line is ``max(0, minimum × period fraction − subtotal)``, where the subtotal is the sum of
the (rounded) charge lines after the discounts on single charges. Invoice-wide discounts come after the
true-up, so a 10 % invoice discount also applies to committed spend.
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact


def true_up(minimum: Decimal, subtotal: Decimal, period: PeriodContext) -> ChargeResult:
    """The exact amount that lifts ``subtotal`` to the (prorated) minimum; 0 (and no steps) when the
    subtotal reaches it. The invoice line rounds it once, like any other line."""
    with exact():
        committed = minimum * period.fraction
        shortfall = max(Decimal(0), committed - subtotal)
        if shortfall == 0:
            return ChargeResult(shortfall, Decimal(1), ())
        less = Step("less the subtotal", Decimal(1), -subtotal, -subtotal)
    label = "minimum commitment" if period.full else f"minimum commitment, {period.fraction} of the period"
    return ChargeResult(shortfall, Decimal(1), (Step(label, period.fraction, minimum, committed), less))
