"""Customer-set budgets: a customer's own usage or spend alert thresholds, set through the callers'
usage endpoint (``PUT``/``GET``/``DELETE /tollway/v1/usage/budgets``, authenticated as themselves), and
the periodic job that tells the provider's endpoints when one is reached (``budget.threshold_crossed``,
naming the customer, so the provider can forward it).

A budget is ``{"id": "<name>", "quota": "<quota of their plan>", "percent": 80}`` (a percent of that
quota's limit for the customer, overrides included) or ``{"id": "<name>", "spend": "50.00"}`` (an amount
spent in the billing period, in the unit the limiter counts spend in: the plan's currency, or its
credit unit; only under a plan whose spend is counted, i.e. with a spend cap). At most
``thresholds.MAX_ALERTS`` per customer; ids unique. Every bad body is a :class:`BudgetRefused` (4xx).

Stored in the customer's hash slot, beside their counters (``{p}`` is the prefix)::

    {p}bud:{<customer>}     string  JSON {"budgets": [...], "set_at": ISO 8601}
    {p}budget-customers     set     customers with budgets (the evaluator's index)

:class:`BudgetEvaluator` reads each customer's quota counters and period spend (``ratelimit.keys``
``quota_key``/``spend_key``) every ``TOLLWAY_NOTIFY_BUDGET_INTERVAL_S`` and emits one event per
(customer, budget id, period start, level) through the outbox: ``level`` is whole units of the quota
(``ceil(limit × percent / 100)``) or micro-units of spend. So a budget fires at most once per period,
however often the job runs; changing its threshold gives another level, which may fire again. The job
polls, so an event follows the crossing by up to one interval (the limiter's own catalog thresholds are
exact, in its script: docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, cast

from tollway.auth.records import format_instant
from tollway.caller_json import BodyRefused, read_json_body
from tollway.clock import Clock
from tollway.credits.units import from_micros, to_micros
from tollway.currencies import MINOR_UNITS
from tollway.entitlements.errors import NoSubscription, PlanUnavailable
from tollway.notifications.emitter import EventEmitter
from tollway.notifications.events import Event, event_id
from tollway.notifications.jobs import NotifySettings, run_every
from tollway.notifications.lifecycle import ms, rfc3339
from tollway.notifications.thresholds import MAX_ALERTS, Alert
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import UnknownPlan
from tollway.ratelimit.keys import quota_key, spend_key
from tollway.redis_types import RedisClient
from tollway.subscriptions.model import Subscription

log = logging.getLogger(__name__)

BUDGETS_PATH: Final = "/tollway/v1/usage/budgets"
MAX_BODY_BYTES: Final = 4096
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PERCENT: Final = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,2})?")
_AMOUNT: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_CONTENT_TYPES: Final = ("application/json",)


class BudgetRefused(BodyRefused):
    """A budget list the caller may not set: ``status`` (400, 409, 413, 415, 422), ``slug``."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget: ``kind`` quota (``policy``, ``percent``) or spend (``amount`` of ``unit``)."""

    id: str
    kind: Literal["quota", "spend"]
    policy: str | None = None
    percent: Decimal | None = None
    amount: Decimal | None = None
    unit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "quota":
            assert self.percent is not None
            return {"id": self.id, "kind": "quota", "quota": self.policy, "percent": _plain(self.percent)}
        assert self.amount is not None
        return {"id": self.id, "kind": "spend", "spend": str(self.amount), "unit": self.unit}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Budget:
        if raw["kind"] == "quota":
            return cls(str(raw["id"]), "quota", policy=str(raw["quota"]), percent=Decimal(str(raw["percent"])))
        return cls(str(raw["id"]), "spend", amount=Decimal(str(raw["spend"])), unit=str(raw.get("unit") or ""))

    def threshold_label(self) -> str:
        if self.kind == "quota":
            assert self.percent is not None
            return Alert(percent=self.percent).label()
        assert self.amount is not None
        return str(self.amount)


@dataclass(frozen=True, slots=True)
class PlanBudgetTerms:
    """What a customer's plan allows budgets on: quota name → the customer's limit; the unit spend is
    counted in (None: the plan's spend is not counted) and the places an amount of it may have."""

    quotas: Mapping[str, int]
    spend_unit: str | None
    spend_places: int = 2


def plan_terms(compiled: CompiledCatalog, subscription: Subscription, now: datetime | None = None) -> PlanBudgetTerms:
    """``now``: with add-ons, the quotas are those of the plan combined with the add-ons held then (as
    the gateway enforces them); without ``now``, the plan's."""
    plan = compiled.plans.get(subscription.plan_id)
    if plan is None:
        raise PlanUnavailable(f"The plan '{subscription.plan_id}' of this account is not available.")
    if subscription.addons and now is not None:
        try:
            plan = compiled.plan(subscription.entitled_plan(ms(now)))
        except UnknownPlan as exc:
            raise PlanUnavailable(f"The add-on '{exc.plan_id}' of this account is not available.") from None
    quotas = {q.name: subscription.limit(q.name, q.limit) for q in plan.quotas}
    money = compiled.money_terms(subscription.plan_id)
    if money is None or money.cap is None:
        return PlanBudgetTerms(quotas, None)
    unit = money.unit
    places = MINOR_UNITS.get(unit.code, 2) if unit.is_currency else unit.decimals
    return PlanBudgetTerms(quotas, unit.code, places)


def _plain(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def _number_text(value: object) -> str | None:
    """A JSON number or string as its text (JSON parsed with numbers kept as text); None otherwise."""
    return value if isinstance(value, str) else None


def parse_budgets(body: bytes, content_type: str, terms: PlanBudgetTerms) -> tuple[Budget, ...]:
    """The budgets a ``PUT /tollway/v1/usage/budgets`` body sets: ``{"budgets": [...]}`` (``[]`` removes
    them all). Raises :class:`BudgetRefused`; never anything else."""
    document = read_json_body(
        body, content_type, _CONTENT_TYPES, MAX_BODY_BYTES, BudgetRefused, "the budgets as application/json"
    )
    if not isinstance(document, dict) or set(document) != {"budgets"} or not isinstance(document["budgets"], list):
        raise BudgetRefused(422, "invalid-budgets", 'The body must be {"budgets": [<budget>, ...]}.')
    items = document["budgets"]
    if len(items) > MAX_ALERTS:
        raise BudgetRefused(422, "too-many-budgets", f"At most {MAX_ALERTS} budgets; {len(items)} were sent.")
    budgets: list[Budget] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        budget = _parse_one(index, item, terms)
        if budget.id in seen:
            raise BudgetRefused(422, "invalid-budgets", f"budgets[{index}]: the id {budget.id!r} is used twice.")
        seen.add(budget.id)
        budgets.append(budget)
    return tuple(budgets)


def _parse_one(index: int, item: object, terms: PlanBudgetTerms) -> Budget:
    where = f"budgets[{index}]"
    shape = f'{where} must be {{"id": ..., "quota": ..., "percent": ...}} or {{"id": ..., "spend": "<amount>"}}.'
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise BudgetRefused(422, "invalid-budgets", shape)
    budget_id = cast(str, item["id"])
    if not _ID.fullmatch(budget_id):
        detail = f"{where}: id must be 1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit."
        raise BudgetRefused(422, "invalid-budgets", detail)
    if set(item) == {"id", "quota", "percent"}:
        quota, percent = item["quota"], _number_text(item["percent"])
        if not isinstance(quota, str) or quota not in terms.quotas:
            known = ", ".join(sorted(terms.quotas)) or "none"
            raise BudgetRefused(422, "unknown-quota", f"{where}: your plan has no quota named that (it has: {known}).")
        if percent is None or not _PERCENT.fullmatch(percent) or not 0 < Decimal(percent) <= 100:
            detail = f"{where}: percent must be a number above 0 and at most 100, with at most 2 decimal places."
            raise BudgetRefused(422, "invalid-budgets", detail)
        return Budget(budget_id, "quota", policy=quota, percent=Decimal(percent))
    if set(item) == {"id", "spend"}:
        if terms.spend_unit is None:
            detail = f"{where}: your plan's spend is not counted as it happens (it has no spend cap): no spend budget."
            raise BudgetRefused(409, "no-spend-counter", detail)
        amount = _number_text(item["spend"])
        if amount is None or not _AMOUNT.fullmatch(amount) or Decimal(amount) <= 0:
            detail = f"{where}: spend must be an amount of {terms.spend_unit} above 0, in ASCII digits, such as 50.00."
            raise BudgetRefused(422, "invalid-budgets", detail)
        value = Decimal(amount)
        if -cast(int, value.as_tuple().exponent) > terms.spend_places:
            detail = f"{where}: spend may have at most {terms.spend_places} decimal place(s) in {terms.spend_unit}."
            raise BudgetRefused(422, "invalid-budgets", detail)
        return Budget(budget_id, "spend", amount=value, unit=terms.spend_unit)
    raise BudgetRefused(422, "invalid-budgets", shape)


class BudgetStore:
    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._index = f"{prefix}budget-customers"

    def key(self, customer_id: str) -> str:
        return f"{self._prefix}bud:{{{customer_id}}}"

    async def get(self, customer_id: str) -> tuple[Budget, ...]:
        raw = await self._redis.get(self.key(customer_id))
        if raw is None:
            return ()
        try:
            return tuple(Budget.from_dict(item) for item in json.loads(raw)["budgets"])
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            log.error("the budgets of customer %r are unreadable (ignored): %s", customer_id, exc)
            return ()

    async def put(self, customer_id: str, budgets: Sequence[Budget], at: datetime) -> None:
        """Replace the customer's budgets (none: remove them). The index first, the record last."""
        if not budgets:
            await self._redis.delete(self.key(customer_id))
            await self._redis.srem(self._index, customer_id)
            return
        await self._redis.sadd(self._index, customer_id)
        document = {"budgets": [b.as_dict() for b in budgets], "set_at": format_instant(at)}
        await self._redis.set(self.key(customer_id), json.dumps(document, sort_keys=True, separators=(",", ":")))

    async def customers(self) -> list[str]:
        return sorted(cast(set[str], await self._redis.smembers(self._index)))


async def budgets_request(
    method: str,
    customer_id: str,
    body: bytes,
    content_type: str,
    *,
    store: BudgetStore,
    subscription: Subscription | None,
    catalog: CompiledCatalog,
    now: datetime,
) -> dict[str, Any]:
    """``GET`` (the budgets), ``PUT`` (replace them), ``DELETE`` (remove them all) of
    ``/tollway/v1/usage/budgets``: the document ``{"budgets": [...], "max": 10}``. Raises
    ``NoSubscription``/``PlanUnavailable`` (403), :class:`BudgetRefused` (4xx, nothing written), Redis
    errors (503)."""
    if subscription is None:
        raise NoSubscription("This account has no subscription to a plan.")
    if method == "PUT":
        budgets = parse_budgets(body, content_type, plan_terms(catalog, subscription, now))
        await store.put(customer_id, budgets, now)
    elif method == "DELETE":
        budgets = ()
        await store.put(customer_id, budgets, now)
    else:
        budgets = await store.get(customer_id)
    return {"budgets": [b.as_dict() for b in budgets], "max": MAX_ALERTS}


class BudgetEvaluator:
    """Compares every customer's budgets with their counters and emits ``budget.threshold_crossed``."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        events: EventEmitter,
        catalog: Callable[[], CompiledCatalog],
        clock: Clock,
        *,
        interval_s: float = 60.0,
    ) -> None:
        from tollway.subscriptions.redis_store import RedisSubscriptionStore  # the adapter, at the job's edge

        self._redis = redis
        self._prefix = prefix
        self._store = BudgetStore(redis, prefix)
        self._subscriptions = RedisSubscriptionStore(redis, prefix)
        self._events = events
        self._catalog = catalog
        self._clock = clock
        self._interval_s = interval_s

    @classmethod
    def from_settings(
        cls,
        redis: RedisClient,
        prefix: str,
        events: EventEmitter,
        catalog: Callable[[], CompiledCatalog],
        clock: Clock,
        settings: NotifySettings,
    ) -> BudgetEvaluator:
        return cls(redis, prefix, events, catalog, clock, interval_s=settings.budget_interval_s)

    async def crossed(self, customer_id: str, now: datetime) -> list[Event]:
        """The events of the customer's budgets reached at ``now`` (in their current period)."""
        budgets = await self._store.get(customer_id)
        if not budgets:
            return []
        subscription = await self._subscriptions.get(customer_id)
        if subscription is None:
            return []
        compiled = self._catalog()
        try:
            terms = plan_terms(compiled, subscription, now)
        except PlanUnavailable:
            return []
        period = subscription.current_period(now)
        start_ms = ms(period.start)
        found: list[Event] = []
        for budget in budgets:
            if budget.kind == "quota":
                assert budget.policy is not None
                assert budget.percent is not None
                limit = terms.quotas.get(budget.policy)
                if limit is None:
                    continue  # the plan changed: the budget names a quota it no longer has
                level = Alert(percent=budget.percent).level(limit)
                raw = await self._redis.get(quota_key(self._prefix, customer_id, budget.policy, start_ms))
                used = int(raw) if raw is not None else 0
                if used < level:
                    continue
                value = str(used)
            else:
                assert budget.amount is not None
                if terms.spend_unit is None or terms.spend_unit != budget.unit:
                    continue  # no spend counted now, or in another unit than the budget's
                level = to_micros(budget.amount)
                raw = await self._redis.get(spend_key(self._prefix, customer_id, start_ms))
                spent = int(raw) if raw is not None else 0
                if spent < level:
                    continue
                value = _plain(from_micros(spent))
            data: dict[str, Any] = {
                "budget_id": budget.id,
                "kind": budget.kind,
                "threshold": budget.threshold_label(),
                "value": value,
                "period_start": rfc3339(period.start),
                "period_end": rfc3339(period.end),
            }
            if budget.kind == "quota":
                data["policy"] = budget.policy
            else:
                data["unit"] = budget.unit
            found.append(
                Event(
                    event_id("budget.threshold_crossed", customer_id, budget.id, start_ms, level),
                    "budget.threshold_crossed",
                    ms(now),
                    customer_id,
                    data,
                )
            )
        return found

    async def run_once(self, now: datetime) -> int:
        """One pass over every customer with budgets; how many events were new. A customer whose pass
        fails (Redis) is logged and retried at the next run."""
        new = 0
        for customer_id in await self._store.customers():
            try:
                for event in await self.crossed(customer_id, now):
                    new += bool(await self._events.emit(event))
            except Exception as exc:
                log.warning("budgets of customer %r not evaluated, retried next run: %s", customer_id, exc)
        return new

    async def run(self, stop: asyncio.Event) -> None:
        await run_every("budget evaluator", self.run_once, self._clock.now, self._interval_s, stop)
