"""A customer's subscription: which plan, since when, how its billing periods are cut, and any
customer-specific limits. Pure: no I/O, no clock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

from tollway.auth.records import check_identifier
from tollway.periods import (
    Alignment,
    BillingPeriod,
    BillingSchedule,
    Interval,
    check_alignment,
    check_interval,
    load_timezone,
    require_aware,
)
from tollway.plans.combined_ids import combined_plan_id

MAX_LIMIT: Final = 2**63 - 1  # what a Redis integer holds

_EMPTY: Final[Mapping[str, int]] = MappingProxyType({})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PlanChange:
    """From ``at`` (UTC) on, the customer is on ``plan_id`` instead of ``previous_plan_id``.

    ``phase``: the change is the end of a phase the subscription was given when it started (a trial, a
    ramp: ``subscriptions.phases``); a plan change before it drops it (and the phases after it)."""

    at: datetime
    previous_plan_id: str
    plan_id: str
    phase: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", require_aware("plan change time", self.at).astimezone(UTC))
        check_identifier("plan id", self.previous_plan_id)
        check_identifier("plan id", self.plan_id)
        if not isinstance(self.phase, bool):
            raise ValueError(f"a plan change's phase flag must be true or false, not {self.phase!r}")

    def as_dict(self) -> dict[str, str | bool]:
        found: dict[str, str | bool] = {"at": format_exact(self.at), "from": self.previous_plan_id, "to": self.plan_id}
        if self.phase:  # only phase ends carry the key: every other record is stored as it always was
            found["phase"] = True
        return found


@dataclass(frozen=True, slots=True)
class PlanTerm:
    """``[start, end)``: a span of time during which the customer was on ``plan_id``."""

    plan_id: str
    start: datetime
    end: datetime


MAX_ADDON_QUANTITY: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class AddOn:
    """``quantity`` of add-on ``addon_id`` held during ``[started_at, ended_at)`` (``ended_at`` None: still
    held). A change of quantity ends one and starts another at the same instant (``subscriptions.addons``)."""

    addon_id: str
    quantity: int
    started_at: datetime
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        check_identifier("add-on id", self.addon_id)
        quantity = self.quantity
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_ADDON_QUANTITY:
            raise ValueError(f"the quantity of add-on {self.addon_id!r} must be from 1 to {MAX_ADDON_QUANTITY}")
        object.__setattr__(self, "started_at", require_aware("add-on start", self.started_at).astimezone(UTC))
        if self.ended_at is not None:
            ended = require_aware("add-on end", self.ended_at).astimezone(UTC)
            if ended <= self.started_at:
                raise ValueError(
                    f"add-on {self.addon_id!r} must end after it starts ({format_exact(self.started_at)}), "
                    f"not at {format_exact(ended)}"
                )
            object.__setattr__(self, "ended_at", ended)

    def held_at(self, at: datetime) -> bool:
        return self.started_at <= at and (self.ended_at is None or at < self.ended_at)

    def as_dict(self) -> dict[str, object]:
        return {
            "addon": self.addon_id,
            "quantity": self.quantity,
            "start": format_exact(self.started_at),
            "end": None if self.ended_at is None else format_exact(self.ended_at),
        }


@dataclass(frozen=True, slots=True)
class Subscription:
    """``overrides`` maps a plan's limit or quota name to this customer's own limit (a non-negative
    integer); the store does not know the catalog, the CLI checks names against it when given one.

    ``started_at`` and ``anchor`` are normalised to UTC (the anchor's *local* day and time, in
    ``timezone``, are what anniversary periods keep). Use :meth:`new` for the documented defaults.

    ``changes`` are the plan changes since the start, oldest first; ``plan_id`` is the plan now (the
    last change's). Billing prices each part of a period with the plan the customer held then
    (:meth:`terms`); the billing schedule (timezone, alignment, anchor, interval) is the subscription's,
    whatever the plan."""

    customer_id: str
    plan_id: str
    started_at: datetime
    timezone: str
    alignment: Alignment
    anchor: datetime
    interval: Interval = "month"
    overrides: Mapping[str, int] = field(default_factory=lambda: _EMPTY, hash=False)
    changes: tuple[PlanChange, ...] = ()
    # Add-ons bought on top of the plan, in the order bought (``subscriptions.addons``; none by default).
    addons: tuple[AddOn, ...] = ()
    # Ids of the customer's invoices whose payment failed and is not yet made (sorted; none by default):
    # while any is, the gateway applies the plan's overdue policy (``plans.overdue``). Read from the
    # record's ``overdue`` field, which only ``billing.payment_status`` writes (never ``to_fields``).
    overdue: tuple[str, ...] = ()
    # Whether the subscription the gateway enforces may differ from this record (a plan change, scheduled
    # or not, or overdue invoices): one attribute test per request, the same as before overdue existed.
    needs_view: bool = field(default=False, init=False, repr=False, compare=False)
    _overdue_view: tuple[str, Subscription] | None = field(default=None, init=False, repr=False, compare=False)
    _memo: BillingPeriod | None = field(default=None, init=False, repr=False, compare=False)
    # Epoch ms of the last plan change (0: none); a change may be scheduled after the time it is written
    # (a migration from the next period on): :meth:`as_of` gives the subscription in force before it.
    _last_change_ms: int = field(default=0, init=False, repr=False, compare=False)
    _view: tuple[int, int, Subscription] | None = field(default=None, init=False, repr=False, compare=False)
    # Epoch ms [since, until) and the id entitling the customer then (``entitled_plan``).
    _entitled: tuple[int, int, str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_identifier("customer id", self.customer_id)
        check_identifier("plan id", self.plan_id)
        load_timezone(self.timezone)
        check_alignment(self.alignment)
        check_interval(self.interval)
        object.__setattr__(self, "started_at", require_aware("started_at", self.started_at).astimezone(UTC))
        object.__setattr__(self, "anchor", require_aware("anchor", self.anchor).astimezone(UTC))
        object.__setattr__(self, "overrides", check_overrides(self.overrides))
        check_changes(self.plan_id, self.started_at, self.changes)
        if self.changes:
            object.__setattr__(self, "_last_change_ms", _epoch_ms(self.changes[-1].at))
        if self.addons:
            check_addons(self.started_at, self.addons)
        if self.overdue:
            object.__setattr__(self, "overdue", check_overdue(self.overdue))
        object.__setattr__(self, "needs_view", bool(self.changes or self.overdue))

    @classmethod
    def new(
        cls,
        customer_id: str,
        plan_id: str,
        started_at: datetime,
        *,
        timezone: str = "UTC",
        alignment: Alignment = "calendar",
        anchor: datetime | None = None,
        interval: Interval = "month",
        overrides: Mapping[str, int] | None = None,
    ) -> Subscription:
        """A subscription with the defaults: UTC, calendar months, anchored at ``started_at``."""
        return cls(
            customer_id,
            plan_id,
            started_at,
            timezone,
            alignment,
            started_at if anchor is None else anchor,
            interval,
            overrides or _EMPTY,
        )

    @property
    def schedule(self) -> BillingSchedule:
        return BillingSchedule(self.anchor, self.timezone, self.interval, self.alignment)

    def current_period(self, at: datetime) -> BillingPeriod:
        """The billing period containing ``at``. The last answer is remembered, so calling this on every
        request costs one comparison until the period ends."""
        memo = self._memo
        if memo is not None and memo.start <= at < memo.end:
            return memo
        period = self.schedule.period_containing(at)
        object.__setattr__(self, "_memo", period)
        return period

    @property
    def first_plan_id(self) -> str:
        """The plan the subscription started on."""
        return self.changes[0].previous_plan_id if self.changes else self.plan_id

    def changed_to(self, plan_id: str, at: datetime) -> Subscription:
        """This subscription with a change to ``plan_id`` from ``at`` on; ``ValueError`` when ``at`` is
        before the start or the last change, or the plan is the current one."""
        change = PlanChange(at, self.plan_id, plan_id)
        return replace(self, plan_id=plan_id, changes=(*self.changes, change))

    def as_of(self, now_ms: int) -> Subscription:
        """The subscription in force at ``now_ms`` (epoch ms): itself, unless a plan change is scheduled
        after ``now_ms``; then the subscription without the changes still to come (its ``plan_id`` the plan
        held at ``now_ms``), the same object until the next change. One comparison when nothing is
        scheduled: the gate calls it on every request of a customer whose plan ever changed."""
        if now_ms >= self._last_change_ms:
            return self
        view = self._view
        if view is not None and view[0] <= now_ms < view[1]:
            return view[2]
        held = tuple(change for change in self.changes if _epoch_ms(change.at) <= now_ms)
        since = _epoch_ms(held[-1].at) if held else -(2**63)
        until = _epoch_ms(self.changes[len(held)].at)
        plan_id = held[-1].plan_id if held else self.first_plan_id
        current = replace(self, plan_id=plan_id, changes=held)
        object.__setattr__(self, "_view", (since, until, current))
        return current

    def while_overdue(self, plan_id: str) -> Subscription:
        """This subscription as the gateway enforces it while the customer is overdue and their plan's
        overdue policy names ``plan_id``: that plan, with none of the customer's overrides or add-ons (they
        belong to the plan held). The same object while the policy names the same plan."""
        memo = self._overdue_view
        if memo is not None and memo[0] == plan_id:
            return memo[1]
        view = replace(self, plan_id=plan_id, overrides=_EMPTY, changes=(), addons=())
        object.__setattr__(self, "_overdue_view", (plan_id, view))
        return view

    def scheduled(self, now: datetime) -> tuple[PlanChange, ...]:
        """The plan changes that take effect after ``now``."""
        return tuple(change for change in self.changes if change.at > now)

    def terms(self, start: datetime, end: datetime) -> tuple[PlanTerm, ...]:
        """The plans held during ``[start, end)`` from the subscription's start on, in time order: one
        term when no change falls inside, none when the subscription starts at or after ``end``."""
        begin = max(start, self.started_at)
        if begin >= end:
            return ()
        terms: list[PlanTerm] = []
        plan, since = self.first_plan_id, begin
        for change in self.changes:
            if change.at >= end:
                break
            if change.at > since:
                terms.append(PlanTerm(plan, since, change.at))
                since = change.at
            plan = change.plan_id
        terms.append(PlanTerm(plan, since, end))
        return tuple(terms)

    def entitled_plan(self, now_ms: int) -> str:
        """The id the gateway looks up for this subscription at ``now_ms`` (epoch ms): ``plan_id`` while no
        add-on is held, else the plan combined with the add-ons held then (``pro+boost*2``,
        ``plans.combined_ids``). Memoised until the next add-on starts or ends: one comparison per call.
        The gate calls it only for subscriptions with add-ons (``if subscription.addons:``)."""
        memo = self._entitled
        if memo is not None and memo[0] <= now_ms < memo[1]:
            return memo[2]
        since, until = -(2**63), 2**63
        held: list[tuple[str, int]] = []
        for addon in self.addons:
            for edge in (addon.started_at, addon.ended_at):
                if edge is None:
                    continue
                edge_ms = _epoch_ms(edge)
                if edge_ms <= now_ms:
                    since = max(since, edge_ms)
                else:
                    until = min(until, edge_ms)
            if _epoch_ms(addon.started_at) <= now_ms and (addon.ended_at is None or now_ms < _epoch_ms(addon.ended_at)):
                held.append((addon.addon_id, addon.quantity))
        entitled = combined_plan_id(self.plan_id, held)
        object.__setattr__(self, "_entitled", (since, until, entitled))
        return entitled

    def addons_held(self, start: datetime, end: datetime) -> tuple[AddOn, ...]:
        """The add-ons held at some time in ``[start, end)``, in the order bought."""
        return tuple(
            addon
            for addon in self.addons
            if addon.started_at < end and (addon.ended_at is None or addon.ended_at > start)
        )

    def limit(self, name: str, plan_limit: int) -> int:
        """The limit that applies to this customer: the override for ``name`` if any, else the plan's."""
        return self.overrides.get(name, plan_limit)

    def to_fields(self) -> dict[str, str]:
        return {
            "customer_id": self.customer_id,
            "plan_id": self.plan_id,
            "started_at": format_exact(self.started_at),
            "timezone": self.timezone,
            "alignment": self.alignment,
            "anchor": format_exact(self.anchor),
            "interval": self.interval,
            "overrides": json.dumps(dict(self.overrides), separators=(",", ":"), sort_keys=True),
            "plan_changes": json.dumps([c.as_dict() for c in self.changes], separators=(",", ":")),
            "addons": json.dumps([a.as_dict() for a in self.addons], separators=(",", ":")),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Subscription:
        """Decode a stored hash; ``ValueError`` saying what is wrong when it cannot."""
        try:
            started_at = _parse_exact(fields["started_at"])
            raw_overrides = json.loads(fields.get("overrides") or "{}")
            if not isinstance(raw_overrides, dict):
                raise ValueError("overrides is not a JSON object")
            raw_changes = json.loads(fields.get("plan_changes") or "[]")
            if not isinstance(raw_changes, list):
                raise ValueError("plan_changes is not a JSON list")
            changes = tuple(
                PlanChange(_parse_exact(change["at"]), change["from"], change["to"], change.get("phase", False))
                for change in raw_changes
            )
            return cls(
                customer_id=fields["customer_id"],
                plan_id=fields["plan_id"],
                started_at=started_at,
                timezone=fields.get("timezone") or "UTC",
                alignment=check_alignment(fields.get("alignment") or "calendar"),
                anchor=_parse_exact(fields["anchor"]) if fields.get("anchor") else started_at,
                interval=check_interval(fields.get("interval") or "month"),
                overrides=raw_overrides,
                changes=changes,
                addons=_decode_addons(fields.get("addons") or "[]"),
                overdue=_decode_overdue(fields.get("overdue") or "[]"),
            )
        except KeyError as exc:
            raise ValueError(f"stored subscription has no {exc.args[0]!r} field") from None
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"stored subscription is malformed: {exc}") from None


def check_overrides(overrides: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only, name-sorted copy of ``overrides``, each name an identifier and each limit an integer
    from 0 to 2**63-1; ``ValueError`` naming the first bad entry."""
    if not overrides:
        return _EMPTY
    checked: dict[str, int] = {}
    for name, limit in sorted(overrides.items()):
        check_identifier("override name", name)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise ValueError(f"override {name!r} must be a whole number from 0 to {MAX_LIMIT}, not {limit!r}")
        checked[name] = limit
    return MappingProxyType(checked)


def check_changes(plan_id: str, started_at: datetime, changes: tuple[PlanChange, ...]) -> None:
    """Plan changes form a chain after the start: each later than the last (and than the start), each
    from the plan the last one moved to, the last one to ``plan_id``. ``ValueError`` saying what breaks."""
    since = started_at
    for position, change in enumerate(changes):
        if change.at <= since:
            after = "the start" if position == 0 else "the previous plan change"
            raise ValueError(
                f"a plan change at {format_exact(change.at)} must come after {after} ({format_exact(since)})"
            )
        if position and change.previous_plan_id != changes[position - 1].plan_id:
            raise ValueError(f"the plan change at {format_exact(change.at)} does not follow the previous one")
        if change.previous_plan_id == change.plan_id:
            raise ValueError(f"the plan change at {format_exact(change.at)} keeps plan {change.plan_id!r}")
        since = change.at
    if changes and changes[-1].plan_id != plan_id:
        raise ValueError(f"the last plan change is to {changes[-1].plan_id!r}, not to the current plan {plan_id!r}")


def check_addons(started_at: datetime, addons: tuple[AddOn, ...]) -> None:
    """Add-ons are held from the subscription's start on, and one add-on's spans do not overlap (a change
    of quantity ends one span where the next starts). ``ValueError`` saying what breaks."""
    last_end: dict[str, datetime | None] = {}
    for addon in sorted(addons, key=lambda a: (a.addon_id, a.started_at)):
        if addon.started_at < started_at:
            raise ValueError(
                f"add-on {addon.addon_id!r} starts at {format_exact(addon.started_at)}, before the subscription "
                f"({format_exact(started_at)})"
            )
        if addon.addon_id in last_end:
            previous = last_end[addon.addon_id]
            if previous is None or previous > addon.started_at:
                raise ValueError(
                    f"add-on {addon.addon_id!r} is held twice at {format_exact(addon.started_at)}: "
                    "change its quantity instead"
                )
        last_end[addon.addon_id] = addon.ended_at


def check_overdue(invoice_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The overdue invoice ids sorted and without repeats, each a string of 1 to 128 characters;
    ``ValueError`` otherwise."""
    for invoice_id in invoice_ids:
        if not isinstance(invoice_id, str) or not 1 <= len(invoice_id) <= 128:
            raise ValueError(f"an overdue invoice id must be a string of 1 to 128 characters, not {invoice_id!r}")
    return tuple(sorted(set(invoice_ids)))


def _decode_overdue(text: str) -> tuple[str, ...]:
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("overdue is not a JSON list")
    return tuple(raw)


def _decode_addons(text: str) -> tuple[AddOn, ...]:
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("addons is not a JSON list")
    return tuple(
        AddOn(
            item["addon"],
            item["quantity"],
            _parse_exact(item["start"]),
            _parse_exact(item["end"]) if item.get("end") else None,
        )
        for item in raw
    )


def _epoch_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def format_exact(value: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` suffix and the full precision (microseconds only when present): period
    boundaries depend on the anchor's time of day, so storage must not round it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_exact(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
