"""What the gateway enforces for a customer with an overdue invoice (``plans.overdue``;
docs/payments.md#overdue-customers-at-the-gateway): the plan's overdue plan in force instead of the plan
held, or :class:`PaymentOverdue`. Pure: the gate and the caller usage endpoint (``usage.caller_report``)
decide it the same way."""

from __future__ import annotations

from collections.abc import Mapping

from tollway.entitlements.errors import PaymentOverdue
from tollway.plans.schema import Plan
from tollway.subscriptions.model import Subscription


def in_force_while_overdue(found: Subscription, plans: Mapping[str, Plan]) -> Subscription:
    """``found`` as the gateway enforces it while an invoice is overdue: with its plan's overdue plan, or
    unchanged when the plan declares no policy (or the catalog lacks the plan: refused later, as
    unavailable). Raises :class:`PaymentOverdue` when the policy refuses. ``found`` itself when nothing
    is overdue."""
    if not found.overdue:
        return found
    plan = plans.get(found.plan_id)
    policy = plan.overdue if plan is not None else None
    if policy is None:
        return found
    if policy.refuse:
        raise PaymentOverdue(
            "Payment of an invoice of this account is overdue: the account is suspended until it is paid.",
            found.plan_id,
            len(found.overdue),
        )
    if policy.plan is not None:
        return found.while_overdue(policy.plan)
    return found
