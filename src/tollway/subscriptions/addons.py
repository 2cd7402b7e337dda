"""Buying, re-sizing and removing a subscription's add-ons (docs/billing.md#add-ons). Pure.

An add-on is held in *spans* (``model.AddOn``): ``quantity`` from ``started_at`` until ``ended_at``
(None: still held). :func:`with_quantity` is the one operation the faces need: hold ``quantity`` of an
add-on from an instant on, 0 to stop holding it. A new quantity ends the current span at that instant
and starts another, so billing prices each span over the time it was held and the gateway enforces the
quantity held at each moment. Whether the plan allows the add-on is the catalog's business
(``plans.addons.allows``): :func:`check_sale` asks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from tollway.plans.addons import allows, check_quantity
from tollway.plans.schema import Plan
from tollway.subscriptions.model import AddOn, Subscription, format_exact


def with_quantity(subscription: Subscription, addon_id: str, quantity: int, at: datetime) -> Subscription:
    """``subscription`` holding ``quantity`` of ``addon_id`` from ``at`` on (0: not holding it from then
    on). The same object when nothing changes. ``ValueError`` when ``at`` is before the start, before a
    later change of the same add-on already recorded, or (for 0) the add-on is not held at ``at``."""
    if at < subscription.started_at:
        raise ValueError(
            f"an add-on change at {format_exact(at)} cannot come before the subscription's start "
            f"({format_exact(subscription.started_at)})"
        )
    spans = list(subscription.addons)
    mine = [index for index, span in enumerate(spans) if span.addon_id == addon_id]
    if any(spans[i].started_at > at for i in mine):
        last = max(spans[i].started_at for i in mine)
        raise ValueError(
            f"add-on {addon_id!r} changes at {format_exact(last)}, after {format_exact(at)}: "
            "an add-on change comes after the last one"
        )
    current = next((i for i in mine if spans[i].held_at(at)), None)
    if current is None:
        if quantity == 0:
            raise ValueError(
                f"customer {subscription.customer_id!r} does not hold add-on {addon_id!r} at {format_exact(at)}"
            )
        spans.append(AddOn(addon_id, quantity, at))
        return replace(subscription, addons=tuple(spans))
    span = spans[current]
    if quantity == span.quantity:
        if span.ended_at is None:
            return subscription
        spans[current] = replace(span, ended_at=None)  # keeps holding it: a scheduled removal is cancelled
    elif span.started_at == at:
        if quantity == 0:
            del spans[current]
        else:
            spans[current] = replace(span, quantity=quantity, ended_at=None)
    else:
        spans[current] = replace(span, ended_at=at)
        if quantity:
            spans.append(AddOn(addon_id, quantity, at))
    return replace(subscription, addons=tuple(spans))


def plan_at(subscription: Subscription, at: datetime) -> str:
    """The plan held at ``at`` (a plan change may be recorded after it)."""
    plan = subscription.first_plan_id
    for change in subscription.changes:
        if change.at > at:
            break
        plan = change.plan_id
    return plan


def check_sale(
    plans: Mapping[str, Plan], subscription: Subscription, addon_id: str, quantity: int, at: datetime
) -> None:
    """``ValueError`` when the plan held at ``at`` does not allow ``addon_id`` or ``quantity`` is out of
    the add-on's range (0, a removal, is always allowed)."""
    if quantity == 0:
        return
    why = allows(plans, plan_at(subscription, at), addon_id) or check_quantity(plans, addon_id, quantity)
    if why is not None:
        raise ValueError(why)


def check_plan_allows_held(plans: Mapping[str, Plan], subscription: Subscription, plan_id: str, at: datetime) -> None:
    """``ValueError`` when ``plan_id`` (a plan change at ``at``) does not allow an add-on held then or later."""
    for span in subscription.addons:
        if span.ended_at is None or span.ended_at > at:
            why = allows(plans, plan_id, span.addon_id)
            if why is not None:
                raise ValueError(f"{why}: remove the add-on first")
