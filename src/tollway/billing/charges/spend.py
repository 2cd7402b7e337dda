"""A charge's spend floor and ceiling per period (``minimum_amount``, ``maximum_amount``), applied after its
model priced it: the amount is lifted to the minimum, or cut to the maximum, and the adjustment is its own
breakdown step, so the invoice line shows the usage price and the correction separately. Pure, exact.

Both bounds are prorated like a flat fee (× ``period.fraction``): a subscription that covers 17 of 31
days owes 17/31 of a charge's minimum (Lago's ``min_amount_cents`` does the same). The invoice line then
rounds the clamped amount once, like any other line; the plan-level ``minimum_commitment`` comes later,
over the whole subtotal (``billing.minimum``).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from tollway.billing.charges.result import ChargeResult, PeriodContext, Step
from tollway.billing.money import exact, format_decimal
from tollway.plans.pricing import MeteredCharge


def clamp(charge: MeteredCharge, result: ChargeResult, period: PeriodContext) -> ChargeResult:
    """``result`` with its amount within ``[minimum_amount, maximum_amount] × period.fraction`` (either
    bound optional), plus a ``minimum amount`` or ``maximum amount`` step when it had to move."""
    low, high = charge.minimum_amount, charge.maximum_amount
    if low is None and high is None:
        return result
    with exact():
        if low is not None:
            floor = low * period.fraction
            if result.amount < floor:
                return _adjusted(result, _step("minimum amount", low, period, "true-up", floor - result.amount))
        if high is not None:
            ceiling = high * period.fraction
            if result.amount > ceiling:
                return _adjusted(result, _step("maximum amount", high, period, "cap", ceiling - result.amount))
    return result


def _step(name: str, bound: Decimal, period: PeriodContext, what: str, amount: Decimal) -> Step:
    part = "" if period.full else f", {format_decimal(period.fraction)} of the period"
    return Step(f"{name} {format_decimal(bound)}{part}: {what}", Decimal(1), amount, amount)


def _adjusted(result: ChargeResult, step: Step) -> ChargeResult:
    with exact():
        amount = result.amount + step.amount
    return replace(result, amount=amount, breakdown=(*result.breakdown, step))
