"""What a caller sees of their own usage (``GET /tollway/v1/usage``): the current billing period, the
billable quantity of every meter so far (ClickHouse, ``usage FINAL`` with each meter's billable rule,
the same sums billing makes), each quota's count (the Redis counters the limiter enforces), and the
charges so far (the period's invoice as ``tollway bill`` would price it now: flat fees for the period,
usage to date, plan changes by part). For a prepaid plan, the live balance with its grants and the burn
per day; for a spend-capped plan, the period's spend against the cap (``usage.money_report``).

The ClickHouse part runs on the caller-supplied ``warehouse`` runner (the loader's client and thread,
so an embedded chdb is opened once per process); the rest is async I/O on Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from tollway.billing.aggregate import billable_quantities
from tollway.billing.errors import BillingError
from tollway.billing.invoices import BillingMonth, build_invoice
from tollway.billing.money import format_decimal
from tollway.entitlements.errors import NoSubscription, PaymentOverdue, PlanUnavailable
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.entitlements.overdue import in_force_while_overdue
from tollway.periods import BillingPeriod, load_timezone
from tollway.plans.errors import UnknownPlan
from tollway.plans.schema import Catalog, Plan
from tollway.ratelimit import Limiter, Policy, QuotaPolicy
from tollway.subscriptions.model import Subscription, format_exact
from tollway.usage.money_report import MoneySources, burn_per_day, money_parts

T = TypeVar("T")
Warehouse = Callable[[Callable[[Any, str], T]], Awaitable[T]]
"""Runs ``fn(client, database)`` where the ClickHouse client lives; returns its result."""


class SubscriptionSource(Protocol):
    async def get(self, customer_id: str) -> Subscription | None: ...


WarehousePart = tuple[dict[str, Decimal], dict[str, Any] | None, list[dict[str, str]] | None]


def _warehouse_part(
    catalog: Catalog, subscription: Subscription, start: datetime, end: datetime, now: datetime, burns: bool = False
) -> Callable[[Any, str], WarehousePart]:
    """The quantities of every meter over ``[start, now)``, the invoice document so far (None when the
    plan is not priced) and, with ``burns``, what prepaid requests burned per local day (else None)."""

    def run(client: Any, database: str) -> WarehousePart:
        rules = {name: meter.billable for name, meter in catalog.meters.items()}
        quantities = billable_quantities(client, database, subscription.customer_id, start, now, rules).quantities
        local = start.astimezone(load_timezone(subscription.timezone))
        try:
            month = BillingMonth(local.year, local.month)
            current = BillingPeriod(start, end)  # the month's period starting at ``start`` (several: weeks)
            invoice = build_invoice(client, database, catalog, subscription, month, now=now, period=current)
        except BillingError:
            invoice = None
        burned = (
            burn_per_day(client, database, subscription.customer_id, start, now, subscription.timezone)
            if burns
            else None
        )
        return dict(quantities), None if invoice is None else invoice.as_dict(), burned

    return run


async def caller_report(
    customer_id: str,
    *,
    subscriptions: SubscriptionSource,
    live: LiveCatalog,
    limiter: Limiter,
    warehouse: Warehouse[WarehousePart],
    now: datetime,
    money: MoneySources | None = None,
) -> dict[str, Any]:
    """The JSON document of ``customer_id``'s current period. Raises ``NoSubscription`` and
    ``PlanUnavailable`` (403 at the edge), ``LimiterUnavailable``, Redis and warehouse errors (503).
    ``money``: where balances and spend are read (None: the document has no money part)."""
    subscription = await subscriptions.get(customer_id)
    if subscription is None:
        raise NoSubscription("This account has no subscription to a plan.")
    subscription = subscription.as_of(int(now.timestamp() * 1000))  # a scheduled plan change: not yet
    compiled = live.current
    plan = compiled.plans.get(subscription.plan_id)
    if plan is None:
        raise PlanUnavailable(f"The plan '{subscription.plan_id}' of this account is not available.")
    overdue, enforced = _while_overdue(subscription, compiled.plans)
    if enforced is not subscription:  # the quotas the gateway enforces: the overdue plan's
        plan = compiled.plans.get(enforced.plan_id)
        if plan is None:
            raise PlanUnavailable(f"The plan '{enforced.plan_id}' of this account is not available.")
    period = subscription.current_period(now)
    start_ms, end_ms = int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000)
    if enforced.addons:  # the quotas the gateway enforces: the plan combined with the add-ons held
        try:
            plan = compiled.plan(enforced.entitled_plan(int(now.timestamp() * 1000)))
        except UnknownPlan as exc:
            raise PlanUnavailable(f"The add-on '{exc.plan_id}' of this account is not available.") from None
    policies: list[Policy] = [
        QuotaPolicy(q.name, enforced.limit(q.name, q.limit), start_ms, end_ms) for q in plan.quotas
    ]
    quotas: list[dict[str, Any]] = []
    if policies:  # cost 0: reported, never consumed
        verdict = await limiter.consume(customer_id, policies, 0, int(now.timestamp() * 1000))
        quotas = [
            {
                "name": s.name,
                "limit": s.limit,
                "used": s.used,
                "remaining": s.remaining,
                "resets_at": format_exact(period.end),
            }
            for s in verdict.states
        ]
    balance, spend_cap = await money_parts(money, subscription, compiled, now) if money is not None else (None, None)
    quantities, invoice, burned = await warehouse(
        _warehouse_part(compiled.catalog, subscription, period.start, period.end, now, burns=balance is not None)
    )
    if balance is not None:
        balance["burn_per_day"] = burned or []
    local_start, local_end = period.local(subscription.timezone)
    document: dict[str, Any] = {
        "customer_id": customer_id,
        "plan": subscription.plan_id,
        "as_of": format_exact(now),
        "period": {
            "start": format_exact(period.start),
            "end": format_exact(period.end),
            "timezone": subscription.timezone,
            "local_start": local_start.isoformat(),
            "local_end": local_end.isoformat(),
        },
        "usage": {meter: format_decimal(quantity) for meter, quantity in sorted(quantities.items())},
        "quotas": quotas,
        "charges": None if invoice is None else _charges(invoice),
    }
    if balance is not None:
        document["balance"] = balance
    if spend_cap is not None:
        document["spend_cap"] = spend_cap
    if overdue is not None:
        document["overdue"] = overdue
    return document


def _while_overdue(subscription: Subscription, plans: Mapping[str, Plan]) -> tuple[dict[str, Any] | None, Subscription]:
    """While an invoice is overdue: what the document says of it (how many invoices, and what the gateway
    does: ``plan`` the overdue plan in force, ``refused`` every request but this page, ``unchanged`` no
    policy), and the subscription whose quotas the gateway enforces. (None, the subscription) otherwise."""
    if not subscription.overdue:
        return None, subscription
    count = len(subscription.overdue)
    try:
        enforced = in_force_while_overdue(subscription, plans)
    except PaymentOverdue:
        return {"invoices": count, "access": "refused", "plan": None}, subscription
    if enforced is subscription:
        return {"invoices": count, "access": "unchanged", "plan": None}, subscription
    return {"invoices": count, "access": "plan", "plan": enforced.plan_id}, enforced


def _charges(invoice: Mapping[str, Any]) -> dict[str, Any]:
    lines = [
        {
            "charge_id": line["charge_id"],
            "kind": line["kind"],
            "description": line["description"],
            "quantity": line["quantity"],
            "amount": line["amount"],
        }
        for line in invoice["lines"]
    ]
    return {"currency": invoice["currency"], "lines": lines, "total": invoice["total"]}
