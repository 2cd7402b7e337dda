"""Subscription phases: a trial, a ramp of discounted periods, any plan versions in turn, then the plan.
Pure: no I/O, no clock (docs/decisions/0009-subscription-phases.md).

A phase is a span of the subscription on one plan (usually a phase plan the catalog compiled,
``pro@2:trial``, see ``plans.phases``). Phases are stored as what the rest of Tollway already knows:
the subscription starts on the first phase's plan and each phase ends with a *scheduled plan change*
(``PlanChange(phase=True)``) to the next one, the last to the subscription's plan. So billing prorates
each phase like a plan change (``Subscription.terms``), and the gateway enforces the phase in force
(``Subscription.as_of``), with nothing added per request.

A plan change while phases are still to come (:func:`change_plan`: an upgrade mid-trial) ends the
phase in force at that instant and drops the phases after it.

Phases are asked for as :class:`PhaseRequest`: a plan and either a length (``days`` — local days in
the customer's timezone — or ``periods`` — intervals of the subscription's billing period, counted from
the phase's start) or explicit ``start``/``end`` instants. :func:`resolve_phases` turns them into
consecutive spans from the subscription's start and refuses overlaps, gaps, a phase that ends before it
starts and two phases in a row on one plan, each with a message naming the phase.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from tollway.periods import BillingSchedule, load_timezone, resolve_local
from tollway.subscriptions.model import PlanChange, Subscription, format_exact

MAX_PHASES: Final = 12
MAX_LENGTH: Final = 3660
_LENGTH: Final = re.compile(r"([0-9]{1,6})(d|days?|p|periods?)")


@dataclass(frozen=True, slots=True)
class PhaseRequest:
    """One phase as asked for: ``plan_id`` and exactly one of ``days`` / ``periods`` / ``end`` (with
    ``end``, ``start`` may say where the phase begins: it must be where the previous one ends)."""

    plan_id: str
    days: int | None = None
    periods: int | None = None
    start: datetime | None = None
    end: datetime | None = None

    def describe(self) -> str:
        if self.days is not None:
            return f"{self.plan_id} for {self.days} day(s)"
        if self.periods is not None:
            return f"{self.plan_id} for {self.periods} period(s)"
        start = "" if self.start is None else f"from {format_exact(self.start)} "
        end = "" if self.end is None else f"until {format_exact(self.end)}"
        return f"{self.plan_id} {start}{end}".rstrip()


@dataclass(frozen=True, slots=True)
class ResolvedPhase:
    """``[start, end)`` on ``plan_id``."""

    plan_id: str
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, str]:
        return {"plan_id": self.plan_id, "start": format_exact(self.start), "end": format_exact(self.end)}


def phase_length(option: str, plan_id: str, text: str) -> PhaseRequest:
    """``"14d"`` / ``"14days"`` → 14 days, ``"3p"`` / ``"3periods"`` → 3 periods. ``ValueError``."""
    match = _LENGTH.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{option} {plan_id}={text}: the length is a number of days (14d) or billing periods (3periods)"
        )
    count = int(match.group(1))
    if not 1 <= count <= MAX_LENGTH:
        raise ValueError(f"{option} {plan_id}={text}: a phase lasts from 1 to {MAX_LENGTH} days or periods")
    if match.group(2).startswith("d"):
        return PhaseRequest(plan_id, days=count)
    return PhaseRequest(plan_id, periods=count)


def resolve_phases(
    requests: Sequence[PhaseRequest], subscription: Subscription, final_plan: str
) -> tuple[ResolvedPhase, ...]:
    """The phases of ``subscription`` (not yet given any), consecutive from its start, the plan
    ``final_plan`` following the last. ``ValueError`` naming the phase for an overlap, a gap, a phase
    that does not end after it starts, a first phase that does not begin at the start, or two phases
    in a row (or the last and the plan) on one plan."""
    if len(requests) > MAX_PHASES:
        raise ValueError(f"a subscription has at most {MAX_PHASES} phases, not {len(requests)}")
    resolved: list[ResolvedPhase] = []
    since = subscription.started_at
    for number, request in enumerate(requests, start=1):
        named = f"phase {number} ({request.describe()})"
        given = sum(value is not None for value in (request.days, request.periods, request.end))
        if given != 1:
            raise ValueError(f"{named}: give exactly one of days, periods or an end")
        if request.start is not None:
            if request.start < since:
                before = "the subscription's start" if number == 1 else f"phase {number - 1} ends"
                raise ValueError(
                    f"{named} overlaps the phase before it: it starts at {format_exact(request.start)}, before "
                    f"{before} ({format_exact(since)}); phases follow one another without overlapping"
                )
            if request.start > since:
                raise ValueError(
                    f"{named} leaves a gap: it starts at {format_exact(request.start)}, after "
                    f"{'the subscription starts' if number == 1 else f'phase {number - 1} ends'} "
                    f"({format_exact(since)}); phases follow one another without gaps"
                )
        end = _end(request, since, subscription)
        if end <= since:
            raise ValueError(f"{named} ends at {format_exact(end)}, not after it starts ({format_exact(since)})")
        if resolved and resolved[-1].plan_id == request.plan_id:
            raise ValueError(f"{named} is on the same plan as phase {number - 1}: make them one phase")
        resolved.append(ResolvedPhase(request.plan_id, since, end))
        since = end
    if resolved and resolved[-1].plan_id == final_plan:
        raise ValueError(
            f"phase {len(resolved)} is on {final_plan!r}, the plan the subscription moves to after its phases: "
            "leave it out"
        )
    return tuple(resolved)


def _end(request: PhaseRequest, start: datetime, subscription: Subscription) -> datetime:
    if request.end is not None:
        return request.end
    if request.days is not None:
        tz = load_timezone(subscription.timezone)
        local = start.astimezone(tz).replace(tzinfo=None)
        return resolve_local(local + timedelta(days=request.days), subscription.timezone)
    assert request.periods is not None
    schedule = BillingSchedule(start, subscription.timezone, subscription.interval, "anniversary")
    return schedule.boundary(schedule.index_of(start) + request.periods)


def with_phases(subscription: Subscription, phases: Sequence[ResolvedPhase]) -> Subscription:
    """``subscription`` (new: no plan history yet) starting with ``phases``, then on its plan: one
    phase-end plan change per phase. ``ValueError`` when it already has a plan history."""
    if not phases:
        return subscription
    if subscription.changes:
        raise ValueError("phases are given when a subscription starts, not to one whose plan changed since")
    plans = [phase.plan_id for phase in phases]
    following = [*plans[1:], subscription.plan_id]
    changes = tuple(
        PlanChange(phase.end, phase.plan_id, after, phase=True) for phase, after in zip(phases, following, strict=True)
    )
    return replace(subscription, changes=changes)


def phases_of(subscription: Subscription) -> tuple[ResolvedPhase, ...]:
    """The phases ``subscription`` was given (held or to come): the spans that end with a phase change."""
    found: list[ResolvedPhase] = []
    since = subscription.started_at
    for change in subscription.changes:
        if change.phase:
            found.append(ResolvedPhase(change.previous_plan_id, since, change.at))
        since = change.at
    return tuple(found)


def change_plan(subscription: Subscription, plan_id: str, at: datetime) -> Subscription:
    """``subscription`` moved to ``plan_id`` from ``at`` on, like ``Subscription.changed_to``, except
    that the phase ends after ``at`` are dropped first: the phase in force ends at ``at`` (an upgrade
    during a trial ends the trial then) and the phases after it never begin. ``plan_id`` may be the
    plan the phases lead to (a trial converting early). ``ValueError`` as
    ``changed_to`` (a change before the start, or before a change that is not a phase end)."""
    kept = subscription.changes
    while kept and kept[-1].phase and kept[-1].at > at:
        kept = kept[:-1]
    if kept == subscription.changes and plan_id == subscription.plan_id:
        raise ValueError(
            f"the subscription of {subscription.customer_id!r} is on {plan_id!r} with no phase after "
            f"{format_exact(at)} to end"
        )
    if kept != subscription.changes:
        held = kept[-1].plan_id if kept else subscription.first_plan_id
        subscription = replace(subscription, plan_id=held, changes=kept)
        if held == plan_id:
            raise ValueError(f"plan {plan_id!r} is the plan held at {format_exact(at)} (the phase in force)")
    return subscription.changed_to(plan_id, at)


def in_phase(subscription: Subscription, at: datetime) -> bool:
    """Whether a phase of ``subscription`` is in force at ``at`` or still to come (a phase end after it)."""
    return any(change.phase and change.at > at for change in subscription.changes)


def same_phases(subscription: Subscription, phases: Sequence[ResolvedPhase]) -> bool:
    """Whether ``subscription`` was given exactly ``phases`` (re-running the command that set them)."""
    return phases_of(subscription) == tuple(phases)
