"""The money part of the caller's usage endpoint: a prepaid customer's balance (live, read from Redis on
request: the grants the limiter burns), the burn per day (``usage FINAL``: Σ ``price_micros`` of admitted
prepaid requests per day in the customer's timezone), the period's spend against a spend cap (the
limiter's spend counter), and a customer lowering or removing their own cap (``PATCH``).

Read on request, apart from the check path: nothing here is on an ext_authz check's way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from tollway.billing.aggregate import format_instant
from tollway.credits.spend_caps import CapRefused, CustomerCap, CustomerCapStore, cap_micros_of, parse_cap_patch
from tollway.credits.store import GrantStore, format_ms, plain
from tollway.credits.units import from_micros
from tollway.entitlements.errors import NoSubscription, PlanUnavailable
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.periods import load_timezone
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.realtime import PlanMoney
from tollway.ratelimit.keys import spend_key
from tollway.redis_types import RedisClient
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import check_identifier, query_rows

BURN_SQL: Final = (
    "SELECT toString(toDate(ts, {tz:String})) AS day, toString(sum(price_micros)) AS burned\n"
    "FROM (SELECT ts, outcome, price_micros, balance_unit FROM {db:Identifier}.usage FINAL "
    "WHERE customer_id = {customer:String} "
    "AND ts >= {start:DateTime64(6, 'UTC')} AND ts < {end:DateTime64(6, 'UTC')})\n"
    "WHERE outcome = 'admitted' AND balance_unit != ''\n"
    "GROUP BY day ORDER BY day"
)


def burn_per_day(
    client: Any, database: str, customer_id: str, start: datetime, end: datetime, timezone: str
) -> list[dict[str, str]]:
    """Every day of ``[start, end)`` in ``timezone`` with what admitted prepaid requests burned on it
    (decimal strings of the balance unit; "0" for a day without any)."""
    parameters = {
        "db": check_identifier(database),
        "customer": customer_id,
        "start": format_instant(start),
        "end": format_instant(end),
        "tz": timezone,
    }
    burned = {str(day): int(total) for day, total in query_rows(client, BURN_SQL, parameters)}
    zone = load_timezone(timezone)
    first = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"day": d.isoformat(), "burned": plain(from_micros(burned.get(d.isoformat(), 0)))} for d in days]


@dataclass(frozen=True, slots=True)
class MoneySources:
    """Where the money part is read: the limiter's Redis (``prefix``), its grants and customers' caps."""

    redis: RedisClient
    prefix: str
    grants: GrantStore
    caps: CustomerCapStore

    @classmethod
    def on(cls, redis: RedisClient, prefix: str) -> MoneySources:
        return cls(redis, prefix, GrantStore(redis, prefix), CustomerCapStore(redis, prefix))


def period_ms(subscription: Subscription, now: datetime) -> tuple[int, int]:
    period = subscription.current_period(now)
    return int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000)


async def balance_view(
    sources: MoneySources, customer_id: str, terms: PlanMoney, now_ms: int, start_ms: int
) -> dict[str, Any]:
    """``{"remaining", "unit", "grants": [...]}`` of a prepaid customer: the live balance the next check
    burns from (after this period's rollovers), and each grant held."""
    snapshot = await sources.grants.snapshot(customer_id)
    remaining = 0
    grants: list[dict[str, Any]] = []
    for view in snapshot.views():
        record = view.record
        if record is None:
            continue  # voided or expired and swept: history, no longer part of the balance
        state = record.rolled_over(start_ms)
        if state.live(now_ms):
            remaining += state.remaining
        info = view.info
        effective = info.effective_ms if info else record.effective_ms
        expires = info.expires_ms if info else (record.expires_ms or None)
        grants.append(
            {
                "id": view.grant_id,
                "status": view.status(now_ms),
                "amount": plain(info.amount) if info else None,
                "remaining": plain(from_micros(state.remaining)),
                "effective_at": format_ms(effective),
                "expires_at": format_ms(expires) if expires else None,
                "priority": info.priority if info else record.priority,
            }
        )
    grants.sort(key=lambda g: (g["priority"], g["expires_at"] is None, g["expires_at"] or "", g["id"]))
    return {"remaining": plain(from_micros(remaining)), "unit": terms.unit.code, "grants": grants}


def spend_cap_view(terms: PlanMoney, cap: CustomerCap | None, spent_micros: int) -> dict[str, Any]:
    """``{"cap", "spent", "unit", "soft", "set_by", "plan_cap", "customer_cap"}``: the cap the gate
    enforces (the lower of the plan's and the customer's own), amounts in the unit the limiter counts
    spend in (the plan's balance unit: its currency, or its credit unit)."""
    assert terms.cap is not None
    unit = terms.unit
    own = cap_micros_of(cap.amount, unit) if cap is not None and cap.currency == unit.currency else None
    by_customer = own is not None and own < terms.cap
    effective = own if by_customer and own is not None else terms.cap
    return {
        "cap": plain(from_micros(effective)),
        "spent": plain(from_micros(spent_micros)),
        "unit": unit.code,
        "soft": terms.cap_soft and not by_customer,
        "set_by": "customer" if by_customer else "plan",
        "plan_cap": plain(from_micros(terms.cap)),
        "customer_cap": plain(from_micros(own)) if own is not None else None,
    }


async def spent(sources: MoneySources, customer_id: str, start_ms: int) -> int:
    raw = await sources.redis.get(spend_key(sources.prefix, customer_id, start_ms))
    return int(raw) if raw is not None else 0


async def money_parts(
    sources: MoneySources, subscription: Subscription, compiled: CompiledCatalog, now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(balance, spend_cap) of the customer's plan (None where the plan has none)."""
    terms = compiled.money_terms(subscription.plan_id)
    if terms is None:
        return None, None
    customer_id = subscription.customer_id
    now_ms = int(now.timestamp() * 1000)
    start_ms, _ = period_ms(subscription, now)
    balance = await balance_view(sources, customer_id, terms, now_ms, start_ms) if terms.prepaid else None
    cap = None
    if terms.cap is not None:
        cap = spend_cap_view(terms, await sources.caps.get(customer_id), await spent(sources, customer_id, start_ms))
    return balance, cap


async def change_spend_cap(
    customer_id: str,
    body: bytes,
    content_type: str,
    *,
    subscription: Subscription | None,
    live: LiveCatalog,
    sources: MoneySources,
    now: datetime,
    request_id: str = "",
    changed: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``PATCH /tollway/v1/usage``: set or remove the customer's own cap; the document's new
    ``{"spend_cap": ...}``. Raises ``NoSubscription``/``PlanUnavailable`` (403), :class:`CapRefused`
    (4xx, nothing written), Redis errors (503). ``changed``: told the customer id after a change."""
    if subscription is None:
        raise NoSubscription("This account has no subscription to a plan.")
    compiled = live.current
    if subscription.plan_id not in compiled.plans:
        raise PlanUnavailable(f"The plan '{subscription.plan_id}' of this account is not available.")
    terms = compiled.money_terms(subscription.plan_id)
    has_cap = terms is not None and terms.cap is not None and terms.cap_amount is not None
    currency = terms.unit.currency if terms is not None and has_cap else None
    plan_cap = terms.cap_amount if terms is not None and has_cap else None
    amount = parse_cap_patch(body, content_type, currency, plan_cap)
    assert terms is not None
    assert currency is not None
    _, after = await sources.caps.set(customer_id, amount, currency, at=now, request_id=request_id)
    if changed is not None:
        changed(customer_id)
    start_ms, _ = period_ms(subscription, now)
    return {"spend_cap": spend_cap_view(terms, after, await spent(sources, customer_id, start_ms))}


__all__ = [
    "BURN_SQL",
    "CapRefused",
    "MoneySources",
    "balance_view",
    "burn_per_day",
    "change_spend_cap",
    "money_parts",
    "spend_cap_view",
]
