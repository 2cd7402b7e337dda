"""A subscription as its management faces (the CLI and the admin API) ask for it: built from options over
the one it replaces, times parsed in the customer's timezone, checked against a plan catalog, and its
JSON form. No I/O except reading the catalog file named."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tollway.periods import ADJECTIVES, Interval, check_interval, load_timezone, require_aware, resolve_local
from tollway.subscriptions.model import Subscription, format_exact
from tollway.subscriptions.phases import PhaseRequest, change_plan, resolve_phases, same_phases, with_phases


def build_subscription(
    args: argparse.Namespace,
    now: datetime,
    previous: Subscription | None,
    overrides: Mapping[str, int],
    catalog_interval: str | None = None,
) -> Subscription:
    """The subscription ``set`` writes, from its options and the one it replaces (if any).

    ``ValueError`` when its interval is not the plan's pricing interval (``catalog_interval``, when the
    catalog is known: ``check_plan_interval``), or when it would change the interval of a running
    subscription (same start): its periods, and the invoices already cut from them, would change."""
    timezone = args.timezone or (previous.timezone if previous else "UTC")
    load_timezone(timezone)
    if args.start is not None:
        started_at = parse_time("--start", args.start, timezone, now)
    else:
        started_at = previous.started_at if previous else now.replace(microsecond=0)
    if args.anchor is not None:
        anchor = parse_time("--anchor", args.anchor, timezone, now)
    elif args.start is None and previous is not None:
        anchor = previous.anchor
    else:
        anchor = started_at
    interval = check_interval(args.interval or catalog_interval or (previous.interval if previous else "month"))
    continued = previous is not None and previous.started_at == started_at
    if catalog_interval is not None:
        check_plan_interval(args.plan, catalog_interval, interval)
    if continued and previous is not None and interval != previous.interval:
        raise ValueError(
            f"the subscription of {args.customer!r} is billed {ADJECTIVES[previous.interval]} since "
            f"{format_exact(previous.started_at)}, and a running subscription keeps its interval (its periods, and "
            f"the invoices cut from them, would change): start a new subscription (--start) to bill it "
            f"{ADJECTIVES[interval]}"
        )
    effective = getattr(args, "effective", None)
    end_phase = bool(getattr(args, "end_phase", False))
    if end_phase and (previous is None or not continued):
        raise ValueError("--end-phase ends a phase of a running subscription: it has none to end")
    if effective is not None and (
        previous is None or not continued or (previous.plan_id == args.plan and not end_phase)
    ):
        raise ValueError("--effective dates a plan change: give it with a new --plan for an existing subscription")
    subscription = Subscription(
        customer_id=args.customer,
        plan_id=previous.plan_id if continued and previous is not None else args.plan,
        started_at=started_at,
        timezone=timezone,
        alignment=args.alignment or (previous.alignment if previous else "calendar"),
        anchor=anchor,
        interval=interval,
        overrides=overrides,
        changes=previous.changes if continued and previous is not None else (),
        # A running subscription keeps its add-ons; a new start begins without any.
        addons=previous.addons if continued and previous is not None else (),
    )
    phased = _phased(args, subscription, previous if continued else None)
    if phased is not None:
        return phased
    if subscription.plan_id == args.plan and not end_phase:
        return subscription
    at = now.replace(microsecond=0) if effective is None else parse_time("--effective", effective, timezone, now)
    if at > now:
        raise ValueError(f"--effective {effective}: a plan change takes effect now or at an earlier time, not later")
    return change_plan(subscription, args.plan, at)  # ends the phase in force, drops those to come


def _phased(args: argparse.Namespace, subscription: Subscription, running: Subscription | None) -> Subscription | None:
    """A new subscription with its phases (``args.phases``, asked for; else ``args.default_phases``, the
    catalog's), or None when it has none. On a ``running`` one, phases asked for must be the ones it has
    (re-running the command that started it): phases begin with a subscription (``subscriptions.phases``)."""
    asked: Sequence[PhaseRequest] | None = getattr(args, "phases", None)
    if running is not None:
        if asked and not (
            running.plan_id == args.plan
            and same_phases(running, resolve_phases(asked, replace(running, changes=()), args.plan))
        ):
            raise ValueError(
                f"the subscription of {args.customer!r} is running: phases are given when a subscription starts "
                "(a new --start); a plan change (--plan) ends the phase in force and drops those to come"
            )
        return None
    requests = asked if asked is not None else getattr(args, "default_phases", None) or ()
    if not requests:
        return None
    return with_phases(subscription, resolve_phases(requests, subscription, args.plan))


def check_plan_interval(plan_id: str, plan_interval: str, interval: str) -> None:
    """``ValueError`` unless a subscription billed every ``interval`` can be on plan ``plan_id``, whose
    pricing is per ``plan_interval``: every amount of a plan (flat fees, minimum, allowances, tiers) is
    for one period of its interval, so the subscription's periods must be the plan's."""
    if interval == plan_interval:
        return
    wanted: Interval = check_interval(plan_interval)
    given: Interval = check_interval(interval)
    raise ValueError(
        f"plan {plan_id!r} is priced per {wanted}: a subscription to it is billed {ADJECTIVES[wanted]}, not "
        f"{ADJECTIVES[given]} (--interval {given}): its amounts are per {wanted}"
    )


def parse_time(option: str, text: str, timezone: str, now: datetime) -> datetime:
    """``now`` or ISO 8601; a time without offset is wall-clock time in ``timezone``."""
    cleaned = text.strip()
    if cleaned.lower() == "now":
        return require_aware("now", now).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"{option} {text!r} is not 'now' or an ISO 8601 date or time "
            "(e.g. 2026-03-01, 2026-03-01T09:30:00+01:00 or 2026-03-01T08:30:00Z)"
        ) from None
    if parsed.tzinfo is None:
        return resolve_local(parsed, timezone)
    return parsed


class _Named(Protocol):
    name: str


def check_against_catalog(path: Path, plan_id: str, overrides: Mapping[str, int]) -> str | None:
    """Check the plan exists and each override names one of its limits or quotas; the plan's billing
    interval (``None`` if it has none)."""
    try:
        loader = importlib.import_module("tollway.plans.loader")
        errors = importlib.import_module("tollway.plans.errors")
    except ImportError:
        raise ValueError("--catalog needs the plan catalog support (tollway.plans), which is not installed") from None
    try:
        catalog: Any = loader.load_catalog(path)
    except errors.CatalogError as exc:
        raise ValueError(f"the catalog {path} is not valid:\n{exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the catalog {path}: {exc.strerror or exc}") from None
    plans: Mapping[str, Any] = catalog.plans
    plan = plans.get(plan_id)
    if plan is None:
        known = ", ".join(sorted(plans)) or "none"
        raise ValueError(f"plan {plan_id!r} is not in the catalog {path} (plans: {known})")
    names = _names(getattr(plan, "limits", None) or ()) | _names(getattr(plan, "quotas", None) or ())
    unknown = sorted(set(overrides) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise ValueError(
            f"plan {plan_id!r} has no limit or quota named {', '.join(map(repr, unknown))} (it has: {allowed})"
        )
    interval = getattr(getattr(plan, "pricing", None), "interval", None)
    if interval is None:
        return None
    return str(getattr(interval, "value", interval))


def pinned_plan(path: Path, plan_id: str, held: str | None) -> str:
    """The plan id to store for ``plan_id`` (``plans.versions.pin``): a bare id of a versioned plan is
    its latest version, unless the customer ``held`` a version of it (kept). ``ValueError`` when the
    catalog lacks it."""
    catalog = _catalog(path)
    versions: Any = importlib.import_module("tollway.plans.versions")
    errors: Any = importlib.import_module("tollway.plans.errors")
    try:
        return str(versions.pin(catalog.plans, plan_id, held))
    except errors.UnknownPlan:
        known = ", ".join(sorted(catalog.plans)) or "none"
        raise ValueError(f"plan {plan_id!r} is not in the catalog {path} (plans: {known})") from None


def _catalog(path: Path) -> Any:
    try:
        loader = importlib.import_module("tollway.plans.loader")
        errors = importlib.import_module("tollway.plans.errors")
    except ImportError:
        raise ValueError("--catalog needs the plan catalog support (tollway.plans), which is not installed") from None
    try:
        return loader.load_catalog(path)
    except errors.CatalogError as exc:
        raise ValueError(f"the catalog {path} is not valid:\n{exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the catalog {path}: {exc.strerror or exc}") from None


def _names(items: Sequence[_Named]) -> set[str]:
    return {str(item.name) for item in items}


def local_time(value: datetime, timezone: str) -> str:
    return value.astimezone(load_timezone(timezone)).isoformat()


def subscription_json(subscription: Subscription, now: datetime) -> dict[str, object]:
    period = subscription.current_period(now)
    tz = subscription.timezone
    return {
        "customer_id": subscription.customer_id,
        "plan_id": subscription.plan_id,
        "started_at": format_exact(subscription.started_at),
        "timezone": tz,
        "alignment": subscription.alignment,
        "anchor": format_exact(subscription.anchor),
        "anchor_local": local_time(subscription.anchor, tz),
        "interval": subscription.interval,
        "overrides": dict(subscription.overrides),
        "plan_changes": [change.as_dict() for change in subscription.changes],
        # Only a subscription that ever held an add-on has the key: every other one reads as it did.
        **({"addons": [addon.as_dict() for addon in subscription.addons]} if subscription.addons else {}),
        # Only an overdue customer's has it (the invoices whose payment failed: docs/payments.md).
        **({"overdue": list(subscription.overdue)} if subscription.overdue else {}),
        "current_period": {
            "index": period.index,
            "start": format_exact(period.start),
            "end": format_exact(period.end),
            "start_local": local_time(period.start, tz),
            "end_local": local_time(period.end, tz),
        },
    }


def catalog_phases(
    path: Path, plan_id: str, asked: Sequence[PhaseRequest] | None, plan_interval: str | None
) -> tuple[list[PhaseRequest] | None, list[PhaseRequest]]:
    """The phases asked for, their plans pinned (``pro:trial`` → ``pro@2:trial`` for a versioned plan)
    and checked against the catalog at ``path`` (each must be a plan of it, priced per the plan's
    interval), and the plan's own phases from the catalog (the default for a new subscription).
    ``ValueError`` naming the phase the catalog cannot price."""
    from tollway.plans.errors import UnknownPlan
    from tollway.plans.phases import default_phases, phase_plan_id, split_phase
    from tollway.plans.versions import pin

    plans: Mapping[str, Any] = _catalog(path).plans
    defaults = [
        PhaseRequest(phase_id, days=phase.days, periods=phase.periods)
        for phase_id, phase in default_phases(plans, plan_id)
    ]
    if asked is None:
        return None, defaults
    checked: list[PhaseRequest] = []
    for number, request in enumerate(asked, start=1):
        base, phase = split_phase(request.plan_id)
        try:
            pinned = pin(plans, base)
            pinned = pinned if phase is None else phase_plan_id(pinned, phase)
            if pinned not in plans:
                raise UnknownPlan(pinned)
        except (UnknownPlan, ValueError):
            known = ", ".join(sorted(plans)) or "none"
            raise ValueError(
                f"phase {number}: plan {request.plan_id!r} is not in the catalog {path} (plans: {known})"
            ) from None
        pricing = getattr(plans[pinned], "pricing", None)
        interval = None if pricing is None else str(pricing.interval)
        if plan_interval is not None and interval is not None and interval != plan_interval:
            raise ValueError(
                f"phase {number}: plan {pinned!r} is priced per {interval}, the subscription's plan per "
                f"{plan_interval}: every phase is billed on the subscription's periods"
            )
        checked.append(replace(request, plan_id=pinned))
    return checked, defaults


def check_addons_kept(path: Path, subscription: Subscription) -> None:
    """``ValueError`` when the plan ``subscription`` changed to (its last plan change) does not allow an
    add-on it holds from then on (``subscriptions.addons``)."""
    if not subscription.addons or not subscription.changes:
        return
    addons: Any = importlib.import_module("tollway.subscriptions.addons")
    last = subscription.changes[-1]
    addons.check_plan_allows_held(_catalog(path).plans, subscription, last.plan_id, last.at)
