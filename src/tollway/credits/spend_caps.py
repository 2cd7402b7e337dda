"""A customer's own spend cap: a postpaid or prepaid customer lowers the spend cap of their plan for
themselves (``PATCH /tollway/v1/usage``, authenticated as the caller), and the gate enforces the lower of
the plan's cap and theirs.

Rules (pure: :func:`parse_cap_patch`):

* only under a plan that has a ``spend_cap``: a customer lowers a cap, they do not add one
  (:class:`CapRefused` 409 ``no-spend-cap`` otherwise);
* an amount of the plan's currency above 0, with at most the currency's places (``5.00`` USD, ``500``
  JPY), in ASCII digits, as a JSON string or number, at most the plan's cap (422 otherwise);
* a customer's cap is always hard: the customer asked to be refused past it, even under a soft plan cap.

Stored beside the limiter's counters, in the customer's hash slot (``{p}`` is the prefix)::

    {p}cap:{<customer>}   string  JSON {"amount": "5.00", "currency": "USD", "set_at": ISO 8601, "set_by": actor}

Each change is appended to the audit log (``{p}admin-audit``, the management API's stream, actor
``customer:<id>``) after it is made, and logged. A cap stored in another currency than the plan's
(the customer changed plans) is ignored until they set it again.

The gate reads caps through :class:`CustomerCapResolver`: held per customer for at most ``ttl_s`` (1 s)
from when it was read, refreshed in the background past half of that (a busy customer's checks never
wait for it), one store read per customer however many checks wait; so a change is enforced by every
process at most that long after it was made (at once by the process that took it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast

from redis.exceptions import RedisError

from tollway.auth.records import format_instant
from tollway.caller_json import BodyRefused, read_json_body
from tollway.credits.units import BalanceUnit
from tollway.currencies import MINOR_UNITS
from tollway.plans.realtime import cap_micros
from tollway.ratelimit.money import Money
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 4096
_AMOUNT: Final = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")


class CapRefused(BodyRefused):
    """A change the caller may not make: ``status`` (400, 409, 415, 422), ``slug`` (the problem type)."""


@dataclass(frozen=True, slots=True)
class CustomerCap:
    """A customer's own spend cap: ``amount`` of ``currency`` per billing period."""

    amount: Decimal
    currency: str
    set_at: str = ""
    set_by: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"amount": plain(self.amount), "currency": self.currency, "set_at": self.set_at, "set_by": self.set_by},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CustomerCap | None:
        """None for anything unreadable (logged by the caller)."""
        try:
            raw = json.loads(text)
            amount = Decimal(str(raw["amount"]))
            currency = str(raw["currency"])
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return None
        if not amount.is_finite() or amount <= 0:
            return None
        return cls(amount, currency, str(raw.get("set_at", "")), str(raw.get("set_by", "")))


def plain(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def cap_micros_of(amount: Decimal, unit: BalanceUnit) -> int:
    """``amount`` of the unit's currency as micro-units of ``unit``, rounded down (as a plan's cap)."""
    return cap_micros(amount, unit)


# --- the request --------------------------------------------------------------------------------------

_CONTENT_TYPES: Final = ("application/merge-patch+json", "application/json")


def parse_cap_patch(body: bytes, content_type: str, currency: str | None, plan_cap: Decimal | None) -> Decimal | None:
    """The amount a ``PATCH /tollway/v1/usage`` body sets (None: remove the customer's own cap).

    ``{"spend_cap": {"amount": "5.00"}}`` sets, ``{"spend_cap": null}`` removes (JSON Merge Patch, RFC
    7396). ``currency``/``plan_cap``: the plan's (None: the plan has no spend cap). Raises
    :class:`CapRefused`; never anything else."""
    document = read_json_body(
        body, content_type, _CONTENT_TYPES, MAX_BODY_BYTES, CapRefused, "the change as application/merge-patch+json"
    )
    if not isinstance(document, dict) or set(document) != {"spend_cap"}:
        detail = 'The body must be {"spend_cap": {"amount": "<decimal>"}} or {"spend_cap": null}.'
        raise CapRefused(422, "invalid-spend-cap", detail)
    change = document["spend_cap"]
    if plan_cap is None or currency is None:
        raise CapRefused(409, "no-spend-cap", "Your plan has no spend cap, so there is none to lower.")
    if change is None:
        return None
    if not isinstance(change, dict) or set(change) != {"amount"}:
        detail = 'spend_cap must be {"amount": "<decimal>"} (or null to remove your own cap).'
        raise CapRefused(422, "invalid-spend-cap", detail)
    raw = change["amount"]
    if not isinstance(raw, str) or not _AMOUNT.fullmatch(raw):
        detail = f"amount must be a decimal number of {currency} in ASCII digits, such as 5.00."
        raise CapRefused(422, "invalid-spend-cap", detail)
    amount = Decimal(raw)
    places = MINOR_UNITS.get(currency, 2)
    exponent = cast(int, amount.as_tuple().exponent)
    if -exponent > places:
        detail = f"amount may have at most {places} decimal place(s) in {currency}."
        raise CapRefused(422, "invalid-spend-cap", detail)
    if amount <= 0:
        raise CapRefused(422, "invalid-spend-cap", "amount must be above 0 (send null to remove your own cap).")
    if amount > plan_cap:
        detail = f"amount may be at most your plan's spend cap, {plain(plan_cap)} {currency}."
        raise CapRefused(422, "spend-cap-above-plan", detail)
    return amount


# --- the store ----------------------------------------------------------------------------------------


class CustomerCapStore:
    """Customers' own spend caps on the limiter's Redis (same client kind, same prefix)."""

    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._audit = f"{prefix}admin-audit"

    def key(self, customer_id: str) -> str:
        return f"{self._prefix}cap:{{{customer_id}}}"

    async def get(self, customer_id: str) -> CustomerCap | None:
        raw = await self._redis.get(self.key(customer_id))
        if raw is None:
            return None
        cap = CustomerCap.from_json(raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace"))
        if cap is None:
            log.warning("the spend cap of customer %s in Redis is unreadable; ignored", customer_id)
        return cap

    async def set(
        self, customer_id: str, amount: Decimal | None, currency: str, *, at: datetime, request_id: str = ""
    ) -> tuple[CustomerCap | None, CustomerCap | None]:
        """Set (``amount``) or remove (None) the customer's own cap: (before, after). Audited and logged,
        unless nothing changed (the same amount again, or removing no cap)."""
        actor = f"customer:{customer_id}"
        key = self.key(customer_id)
        after = None if amount is None else CustomerCap(amount, currency, format_instant(at), actor)
        if after is not None:
            raw_before = await self._redis.set(key, after.to_json(), get=True)
        else:
            raw_before = await self._redis.getdel(key)
        before = CustomerCap.from_json(str(raw_before)) if raw_before is not None else None
        if _audit_json(before) == _audit_json(after):
            return before, after  # nothing changed: no entry (as in the management API)
        action: Literal["spend_cap.set", "spend_cap.remove"] = "spend_cap.set" if after else "spend_cap.remove"
        log.info(
            "customer %s %s their spend cap (%s -> %s %s)",
            customer_id,
            "set" if after else "removed",
            plain(before.amount) if before else "none",
            plain(after.amount) if after else "none",
            currency,
        )
        fields = {
            "at": format_instant(at),
            "actor": actor,
            "action": action,
            "resource_type": "spend_cap",
            "resource_id": customer_id,
            "customer_id": customer_id,
            "request_id": request_id,
            "before": _audit_json(before),
            "after": _audit_json(after),
        }
        try:
            await self._redis.xadd(self._audit, cast(dict[Any, Any], fields))
        except (RedisError, OSError) as exc:
            log.error("audit entry not stored (%s): %s", exc, json.dumps(fields, sort_keys=True))
        return before, after


def _audit_json(cap: CustomerCap | None) -> str:
    if cap is None:
        return ""
    return json.dumps({"amount": plain(cap.amount), "currency": cap.currency}, sort_keys=True)


# --- the gate's resolver ------------------------------------------------------------------------------


class CustomerCapResolver:
    """Customer id → their own cap (``None``: none), as read from the store at most ``ttl_s`` ago.

    :meth:`cached` answers with no I/O and no allocation: the cap while it is younger than ``ttl_s``
    (counted from when its read started), and past half of that it starts one background read, so a busy
    customer's checks never wait for it; ``False`` when nothing young enough is held (a customer not seen
    for ``ttl_s``): await :meth:`resolve`, one store read per customer however many checks wait, bounded
    by ``timeout_s``. At most ``max_entries`` customers are held (the oldest go first)."""

    def __init__(
        self,
        store: CustomerCapStore,
        monotonic: Callable[[], float],
        ttl_s: float = 1.0,
        timeout_s: float = 0.1,
        max_entries: int = 100_000,
    ) -> None:
        if ttl_s <= 0 or timeout_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s and timeout_s must be > 0 and max_entries >= 1")
        self._store = store
        self._monotonic = monotonic
        self._ttl = ttl_s
        self._refresh_after = ttl_s / 2
        self._timeout = timeout_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, CustomerCap | None]] = {}
        self._inflight: dict[str, asyncio.Task[CustomerCap | None]] = {}

    def cached(self, customer_id: str) -> CustomerCap | Literal[False] | None:
        entry = self._entries.get(customer_id)
        if entry is None:
            return False
        age = self._monotonic() - entry[0]
        if age >= self._ttl:
            return False
        if age >= self._refresh_after and customer_id not in self._inflight:
            self._start(customer_id)
        return entry[1]

    async def resolve(self, customer_id: str, deadline: float | None = None) -> CustomerCap | None:
        """The cap from the store (now held). Raises :class:`CapLookupFailed` when the store fails or does
        not answer within ``timeout_s`` (or by ``deadline``, event-loop time)."""
        task = self._inflight.get(customer_id) or self._start(customer_id)
        try:
            if deadline is None:
                return await asyncio.shield(task)
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError as exc:
            raise CapLookupFailed("no answer within the check's deadline") from exc

    def evict(self, customer_id: str) -> None:
        """Read the customer's cap again at their next check (it was changed)."""
        self._entries.pop(customer_id, None)

    def _start(self, customer_id: str) -> asyncio.Task[CustomerCap | None]:
        task = asyncio.ensure_future(self._read(customer_id))
        self._inflight[customer_id] = task
        task.add_done_callback(lambda done: self._settle(customer_id, done))
        return task

    async def _read(self, customer_id: str) -> CustomerCap | None:
        started = self._monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                cap = await self._store.get(customer_id)
        except TimeoutError as exc:
            raise CapLookupFailed("the spend cap store did not answer in time") from exc
        except (RedisError, OSError) as exc:
            raise CapLookupFailed(str(exc) or type(exc).__name__) from exc
        entries = self._entries
        if customer_id not in entries and len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        entries[customer_id] = (started, cap)
        return cap

    def _settle(self, customer_id: str, task: asyncio.Task[CustomerCap | None]) -> None:
        if self._inflight.get(customer_id) is task:
            del self._inflight[customer_id]
        if not task.cancelled() and task.exception() is not None:
            log.debug("spend cap of customer %s not read: %s", customer_id, task.exception())


class CapLookupFailed(Exception):
    """A customer's own spend cap could not be read."""


def customer_money(money: Money, cap: CustomerCap | None, unit: BalanceUnit) -> tuple[int | None, Money]:
    """The check's money under the customer's own cap: (the cap in micro-units of ``unit`` if it is the
    lower one, else None; the money with it as a hard cap). ``money`` unchanged when the customer has no
    cap, the plan has none, the cap is in another currency, or it is not below the plan's."""
    plan_cap = money.spend_cap
    if cap is None or plan_cap is None or cap.currency != unit.currency:
        return None, money
    micros = cap_micros_of(cap.amount, unit)
    if micros >= plan_cap.cap:
        return None, money
    return micros, replace(money, spend_cap=replace(plan_cap, cap=micros, hard=True))
