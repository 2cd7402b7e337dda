"""Quotes: price typed-in usage for one plan of a catalog, strictly.

Where ``rating.rate`` (for the billing job) quietly ignores meters a plan does not charge for, a
quote treats every oddity as a mistake to report, because a person typed the usage and a silently
ignored number would give a wrong price with a straight face:

* a plan the catalog lacks → ``UnknownPlan``; a plan without pricing → ``PlanNotPriced``;
* a meter the catalog lacks → ``UnknownMeter``; a catalog meter the plan does not price → ``UnpricedMeter``;
* a quantity that is not a ``Decimal`` ≥ 0 (a float, a negative, NaN, ...) → ``InvalidQuantity``.

Meters the plan prices but the usage omits count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from tollway.billing.charges import FULL_PERIOD, PeriodContext
from tollway.billing.errors import PlanNotPriced, UnpricedMeter
from tollway.billing.quantity import check_quantity
from tollway.billing.rating import InvoiceDraft, rate
from tollway.plans.errors import UnknownMeter, UnknownPlan
from tollway.plans.pricing import FlatCharge, Pricing
from tollway.plans.schema import Catalog


def priced_meters(pricing: Pricing) -> tuple[str, ...]:
    """The meters the pricing charges for, in catalog order, each once."""
    meters = (charge.meter for charge in pricing.charges if not isinstance(charge, FlatCharge))
    return tuple(dict.fromkeys(meters))


def quote(
    catalog: Catalog, plan_id: str, usage: Mapping[str, Decimal], period: PeriodContext = FULL_PERIOD
) -> InvoiceDraft:
    """Price ``usage`` (meter → quantity) for a period of ``plan_id``. Raises the errors listed above."""
    plan = catalog.plans.get(plan_id)
    if plan is None:
        raise UnknownPlan(plan_id)
    if plan.pricing is None:
        raise PlanNotPriced(plan_id)
    priced = priced_meters(plan.pricing)
    for meter, quantity in usage.items():
        if meter not in catalog.meters:
            raise UnknownMeter(meter)
        if meter not in priced:
            raise UnpricedMeter(plan_id, meter, priced)
        check_quantity(quantity, f"quantity of meter {meter!r}")
    return rate(plan_id, plan.pricing, usage, period)
