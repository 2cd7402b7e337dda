"""``tollway subscriptions``: set, show, list, delete a customer's subscription; ``addon`` buys, re-sizes
or removes one of its add-ons (``docs/billing.md#add-ons``).

``set`` creates or replaces. On a customer who already has a subscription, the options not given keep
their current values (``--start``, ``--timezone``, ``--alignment``, ``--anchor`` and ``--interval``),
so ``set --customer acme --plan pro`` is a plan change that keeps the billing cycle; ``--override`` is
not merged: the overrides given replace the old ones (none given: none kept).

A plan change is recorded with its instant (``--effective``, default now; never in the future, never
before the start or the last change), so billing prices each part of the period with the plan held
then (``docs/billing.md``, proration). ``--start`` with a new start begins a new subscription: its
plan history starts afresh. A new subscription or a plan change emits ``subscription.changed``
(``docs/notifications.md``); re-running the same ``set`` emits nothing new.

Intervals: ``--interval`` is ``week``, ``month``, ``quarter``, ``half_year`` or ``year``; with
``--catalog`` it must be the plan's pricing interval (the default), and a running subscription keeps
its interval (a new ``--start`` may change it). Anything else is refused (``docs/billing.md``, Intervals).

Phases (trials, ramps; ``docs/billing.md``): a new subscription gets the plan's catalog phases, or
``--phase PLAN=LENGTH`` (repeatable, in order; ``14d``, ``3periods`` or ``START..END``), or none with
``--no-phases``; each phase's end is a scheduled plan change. A plan change during a phase ends it then
and drops the phases to come; ``--end-phase`` converts early to the plan the phases lead to.

Times: ``now`` or ISO 8601. A time with no UTC offset (``2026-03-01`` or ``2026-03-01T09:00``) is a
wall-clock time in the subscription's timezone (resolved like a period boundary: first occurrence if
repeated, end of the gap if skipped).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from tollway.auth.records import check_identifier
from tollway.billing.migration import preview_migration
from tollway.cli.bill import open_warehouse
from tollway.clock import Clock, SystemClock
from tollway.notifications.emitter import emit_after_commit
from tollway.notifications.lifecycle import subscription_changed
from tollway.notifications.outbox import OutboxWriter
from tollway.periods import ADJECTIVES, ALIGNMENTS, INTERVALS, Interval, check_interval, load_timezone
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog
from tollway.plans.schema import Catalog
from tollway.plans.versions import same_version, split_plan_id
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.subscriptions.addons import check_sale, with_quantity
from tollway.subscriptions.errors import SubscriptionNotFound, UnreadableSubscription
from tollway.subscriptions.migration import NEXT_PERIOD, Migration, plan_migration, target_version
from tollway.subscriptions.model import MAX_ADDON_QUANTITY, MAX_LIMIT, Subscription, format_exact
from tollway.subscriptions.phases import PhaseRequest, phase_length, phases_of
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.subscriptions.requests import (
    build_subscription,
    catalog_phases,
    check_addons_kept,
    check_against_catalog,
    local_time,
    parse_time,
    pinned_plan,
    subscription_json,
)
from tollway.warehouse.connection import quiet_driver_logs
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.settings import WarehouseSettings

_OVERRIDE: Final = re.compile(r"^\s*([^=\s]+)\s*=\s*([0-9][0-9_]*)\s*$")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subs = commands.add_parser("subscriptions", help="manage customers' subscriptions to plans")
    sub = subs.add_subparsers(dest="subscriptions_command", required=True, metavar="COMMAND")

    put = sub.add_parser(
        "set",
        help="subscribe a customer to a plan (or change it)",
        description="Create or replace a customer's subscription. On an existing subscription, options "
        "not given keep their values; overrides are replaced by those given.",
    )
    put.add_argument("--customer", required=True, help="customer id")
    put.add_argument("--plan", required=True, help="plan id (checked against --catalog when given)")
    put.add_argument("--start", help="when it starts: now (default for a new subscription) or ISO 8601")
    put.add_argument("--timezone", help="the customer's IANA timezone for period boundaries (default UTC)")
    put.add_argument("--alignment", choices=ALIGNMENTS, help="calendar periods or anniversaries of --anchor")
    put.add_argument("--anchor", help="anniversary anchor: now or ISO 8601 (default: the start)")
    put.add_argument(
        "--effective",
        help="for a plan change: when the new plan takes effect, now (default) or an earlier ISO 8601 time",
    )
    put.add_argument(
        "--interval",
        type=_interval,
        metavar="{" + ",".join(INTERVALS) + "}",
        help="billing interval: the plan's pricing interval (the default; else month)",
    )
    put.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="NAME=LIMIT",
        help="a customer-specific limit for one of the plan's limits or quotas (repeatable)",
    )
    put.add_argument("--catalog", type=Path, help="plan catalog file: check the plan and the override names")
    put.add_argument("--json", action="store_true", help="print JSON")
    put.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="PLAN=LENGTH",
        help="a new subscription's phase before --plan, in order (repeatable): LENGTH is days (14d), billing "
        "periods (3periods) or START..END (ISO 8601); e.g. pro:trial=14d. Default: the plan's catalog phases",
    )
    put.add_argument("--no-phases", action="store_true", help="a new subscription without the plan's catalog phases")
    put.add_argument(
        "--end-phase",
        action="store_true",
        help="end the phase in force at --effective (default now) and move to --plan, dropping the phases to "
        "come (a trial converting early)",
    )

    show = sub.add_parser("show", help="a customer's subscription and current billing period")
    show.add_argument("--customer", required=True, help="customer id")
    show.add_argument("--json", action="store_true", help="print JSON")

    listing = sub.add_parser("list", help="list subscriptions")
    listing.add_argument("--plan", help="only this plan's subscribers")
    listing.add_argument("--json", action="store_true", help="print JSON")

    migrate = sub.add_parser(
        "migrate",
        help="move subscribers to another version of their plan (preview with --preview)",
        description="Move one customer, or every subscriber of a plan version, to another version of the "
        "plan, from the start of each one's next period (default), now, or a later instant. Every "
        "subscription is checked first: if one cannot move, nothing is written. --preview prints each "
        "customer's current and next invoice before and after, and writes nothing.",
    )
    who = migrate.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="the customer to move")
    who.add_argument("--from", dest="from_plan", metavar="PLAN@VERSION", help="every subscriber of this version")
    migrate.add_argument("--to", required=True, metavar="PLAN@VERSION", help="the version to move to (bare: latest)")
    migrate.add_argument(
        "--effective",
        default=NEXT_PERIOD,
        help="next-period (default: the start of each customer's next billing period), now, or an ISO 8601 time",
    )
    migrate.add_argument("--preview", action="store_true", help="show the invoices before and after; write nothing")
    migrate.add_argument("--catalog", type=Path, help="plan catalog file (default: $TOLLWAY_CATALOG)")
    migrate.add_argument("--json", action="store_true", help="print JSON")

    addon = sub.add_parser(
        "addon",
        help="buy, re-size or remove an add-on of a customer's subscription",
        description="Hold QUANTITY of an add-on from --effective on (default now; 0 removes it). The plan "
        "held then must allow the add-on (the catalog's `addons`), checked before anything is written. "
        "Billing prices the add-on over the time each quantity was held; the gateway enforces the "
        "combined entitlements within a second (docs/billing.md#add-ons).",
    )
    addon.add_argument("--customer", required=True, help="customer id")
    addon.add_argument("--addon", required=True, help="add-on id (a plan of the catalog with `addon:` terms)")
    addon.add_argument("--quantity", type=_quantity, default=1, help="how many to hold (default 1; 0 removes it)")
    addon.add_argument("--effective", default="now", help="from when: now (default) or an ISO 8601 time")
    addon.add_argument("--catalog", type=Path, help="plan catalog file (default: $TOLLWAY_CATALOG)")
    addon.add_argument("--json", action="store_true", help="print JSON")

    delete = sub.add_parser("delete", help="remove a customer's subscription, in every running Tollway")
    delete.add_argument("--customer", required=True, help="customer id")
    delete.add_argument("--json", action="store_true", help="print JSON")


def _quantity(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to {MAX_ADDON_QUANTITY}")
    return int(text)


def _interval(text: str) -> Interval:
    try:
        return check_interval(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def run(args: argparse.Namespace, settings: Settings, *, clock: Clock | None = None) -> int:
    """Run one ``subscriptions`` command. Bad input raises ``ValueError`` with a message for the user;
    a customer with no subscription prints a message and returns 1."""
    clock = clock or SystemClock()
    command = args.subscriptions_command
    if getattr(args, "customer", None) is not None:
        check_identifier("customer id", args.customer)
    if command == "set":
        # Everything that can be checked without Redis is checked before connecting.
        overrides = parse_overrides(args.override)
        check_identifier("plan id", args.plan)
        catalog_interval = check_against_catalog(args.catalog, args.plan, overrides) if args.catalog else None
        if args.timezone is not None:
            load_timezone(args.timezone)
        if args.phase and args.no_phases:
            raise ValueError("--phase and --no-phases do not go together")
        for item in args.phase:  # their form, before connecting (times again in the customer's timezone)
            parse_phase(item, args.timezone or "UTC", clock.now())
    elif command == "list" and args.plan is not None:
        check_identifier("plan id", args.plan)
    elif command == "migrate":
        return await _migrate(args, settings, clock)
    elif command == "addon":
        return await _addon(args, settings, clock)
    redis = admin_client(settings)
    try:
        store = RedisSubscriptionStore(redis, settings.redis_prefix)
        now = clock.now()
        if command == "set":
            try:
                previous = await store.get(args.customer)
            except UnreadableSubscription as exc:
                print(f"tollway: replacing an unreadable subscription ({exc})", file=sys.stderr)
                previous = None
            if args.catalog:  # a bare id of a versioned plan: its latest version, or the one the customer holds
                pinned = pinned_plan(args.catalog, args.plan, previous.plan_id if previous else None)
                if pinned != args.plan:
                    catalog_interval = check_against_catalog(args.catalog, pinned, overrides)
                    args.plan = pinned
            timezone = args.timezone or (previous.timezone if previous else "UTC")
            args.phases = [] if args.no_phases else [parse_phase(item, timezone, now) for item in args.phase] or None
            if args.catalog:
                asked = args.phases
                args.phases, args.default_phases = catalog_phases(args.catalog, args.plan, asked, catalog_interval)
            subscription = build_subscription(args, now, previous, overrides, catalog_interval)
            if args.catalog and previous is not None and previous.plan_id != subscription.plan_id:
                check_addons_kept(args.catalog, subscription)
            await store.put(subscription)
            change = subscription_changed(previous, subscription, now)
            if change is not None:
                await emit_after_commit(OutboxWriter(redis, settings.redis_prefix), [change])
            _print(subscription, now, args.json, action="updated" if previous else "created")
        elif command == "show":
            found = await store.get(args.customer)
            if found is None:
                raise SubscriptionNotFound(args.customer)
            _print(found, now, args.json)
        elif command == "list":
            subscriptions = await store.list(args.plan)
            _print_list(subscriptions, now, args.json)
        elif command == "delete":
            if not await store.delete(args.customer):
                raise SubscriptionNotFound(args.customer)
            if args.json:
                print(json.dumps({"deleted": True, "customer_id": args.customer}))
            else:
                print(f"deleted the subscription of {args.customer}")
        return 0
    except (SubscriptionNotFound, UnreadableSubscription) as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


async def _migrate(args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """``subscriptions migrate``: every check before anything is written; ``--preview`` writes nothing."""
    target = args.to
    check_identifier("plan id", target)
    split_plan_id(target)
    if args.from_plan is not None:
        check_identifier("plan id", args.from_plan)
        split_plan_id(args.from_plan)
    path = args.catalog or settings.catalog
    if path is None:
        raise ValueError("migrate needs the plan catalog: pass --catalog or set TOLLWAY_CATALOG")
    if args.effective != NEXT_PERIOD:
        parse_time("--effective", args.effective, "UTC", clock.now())  # its form, before connecting
    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        raise ValueError(f"the catalog {path} is not valid:\n{exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the catalog {path}: {exc.strerror or exc}") from None
    target = target_version(catalog.plans, target)
    redis = admin_client(settings)
    try:
        store = RedisSubscriptionStore(redis, settings.redis_prefix)
        now = clock.now()
        if args.customer is not None:
            found = await store.get(args.customer)
            if found is None:
                raise SubscriptionNotFound(args.customer)
            chosen = [found]
        else:
            now_ms = int(now.timestamp() * 1000)
            chosen = [s for s in await store.list() if same_version(s.as_of(now_ms).plan_id, args.from_plan)]
        pricing = catalog.plans[target].pricing
        interval = pricing.interval if pricing is not None else None
        migrations, unchanged = plan_migration(chosen, target, args.effective, now, interval)
        if args.preview:
            _print_preview(catalog, migrations, unchanged, now, args.json)
            return 0
        for migration in migrations:
            await store.put(migration.after)
        events = [subscription_changed(m.before, m.after, now) for m in migrations]
        await emit_after_commit(OutboxWriter(redis, settings.redis_prefix), [e for e in events if e is not None])
        _print_migrations(migrations, unchanged, now, args.json)
        return 0
    except (SubscriptionNotFound, UnreadableSubscription) as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


async def _addon(args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """``subscriptions addon``: every check (the catalog allows it, the quantity, the instant) before
    anything is written."""
    check_identifier("add-on id", args.addon)
    path = args.catalog or settings.catalog
    if path is None:
        raise ValueError("addon needs the plan catalog: pass --catalog or set TOLLWAY_CATALOG")
    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        raise ValueError(f"the catalog {path} is not valid:\n{exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the catalog {path}: {exc.strerror or exc}") from None
    redis = admin_client(settings)
    try:
        store = RedisSubscriptionStore(redis, settings.redis_prefix)
        now = clock.now()
        found = await store.get(args.customer)
        if found is None:
            raise SubscriptionNotFound(args.customer)
        at = parse_time("--effective", args.effective, found.timezone, now)
        check_sale(catalog.plans, found, args.addon, args.quantity, at)
        updated = with_quantity(found, args.addon, args.quantity, at)
        if updated is not found:
            await store.put(updated)
        _print(updated, now, args.json, action="updated" if updated is not found else "unchanged")
        return 0
    except (SubscriptionNotFound, UnreadableSubscription) as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def _print_migrations(migrations: Sequence[Migration], unchanged: Sequence[str], now: datetime, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"migrated": [m.as_dict(now) for m in migrations], "unchanged": list(unchanged)}))
        return
    for migration in migrations:
        row = migration.as_dict(now)
        if migration.cancelled:
            print(
                f"cancelled {migration.customer_id}'s change scheduled at {row['effective_at']}: stays on {row['to']}"
            )
            continue
        when = "scheduled from" if row["scheduled"] else "from"
        print(f"migrated {migration.customer_id}: {row['from']} → {row['to']} {when} {row['effective_at']}")
    if unchanged:
        print(f"already on the version: {', '.join(unchanged)}")
    if not migrations and not unchanged:
        print("no subscriber to migrate")


def _print_preview(
    catalog: Catalog, migrations: Sequence[Migration], unchanged: Sequence[str], now: datetime, as_json: bool
) -> None:
    """Each customer's current and next invoice before and after (usage from ClickHouse); writes nothing."""
    quiet_driver_logs()
    try:
        warehouse = WarehouseSettings()
        client = open_warehouse(warehouse)
        try:
            previews = [
                (m, preview_migration(client, warehouse.database, catalog, m.before, m.after, now)) for m in migrations
            ]
        finally:
            client.close()
    except WarehouseError as exc:
        raise ValueError(f"--preview reads usage from ClickHouse: {exc}") from None
    if as_json:
        body = [{**m.as_dict(now), "invoices": [p.as_dict() for p in periods]} for m, periods in previews]
        print(json.dumps({"preview": body, "unchanged": list(unchanged)}))
        return
    print(f"{'CUSTOMER':<20} {'PERIOD':<8} {'START':<21} {'BEFORE':>14} {'AFTER':>14} {'DIFFERENCE':>14}  PLANS")
    for migration, periods in previews:
        for period in periods:
            row = period.as_dict()
            before, after = row["before"], row["after"]
            old = before["total"] if isinstance(before, dict) else "-"
            new = after["total"] if isinstance(after, dict) else "-"
            plans = f"{migration.as_dict(now)['from']} → {migration.after.plan_id}"
            print(
                f"{migration.customer_id:<20} {period.which:<8} {row['start']!s:<21} {old!s:>14} {new!s:>14} "
                f"{row['difference'] or '-'!s:>14}  {plans}"
            )
    if unchanged:
        print(f"already on the version: {', '.join(unchanged)}")


def parse_phase(item: str, timezone: str, now: datetime) -> PhaseRequest:
    """``pro:trial=14d``, ``pro@2:intro=3periods`` or ``pro:trial=2026-03-01..2026-03-15`` → a
    ``PhaseRequest``; ``ValueError`` saying what is wrong."""
    plan, separator, length = item.partition("=")
    plan = plan.strip()
    if not separator or not plan or not length.strip():
        raise ValueError(
            f"--phase {item!r} is not PLAN=LENGTH (e.g. pro:trial=14d, pro:intro=3periods or "
            "pro:trial=2026-03-01..2026-03-15)"
        )
    check_identifier("--phase plan id", plan)
    if ".." not in length:
        return phase_length("--phase", plan, length)
    start, _, end = length.partition("..")
    if not end.strip():
        raise ValueError(f"--phase {item!r}: START..END needs an END")
    return PhaseRequest(
        plan,
        start=parse_time("--phase", start, timezone, now) if start.strip() else None,
        end=parse_time("--phase", end, timezone, now),
    )


def parse_overrides(items: Iterable[str]) -> dict[str, int]:
    """``["requests_per_minute=600", ...]`` → ``{"requests_per_minute": 600}``; ``ValueError`` on the first bad one."""
    overrides: dict[str, int] = {}
    for item in items:
        match = _OVERRIDE.fullmatch(item)
        if match is None:
            raise ValueError(
                f"--override {item!r} is not NAME=LIMIT with a whole-number LIMIT (e.g. requests_per_minute=600)"
            )
        name, limit = match.group(1), int(match.group(2))
        check_identifier("override name", name)
        if limit > MAX_LIMIT:
            raise ValueError(f"--override {item!r}: the limit must be at most {MAX_LIMIT}")
        if name in overrides:
            raise ValueError(f"--override {name!r} is given twice")
        overrides[name] = limit
    return overrides


# --- output -------------------------------------------------------------------------------------


def _print(subscription: Subscription, now: datetime, as_json: bool, action: str | None = None) -> None:
    if as_json:
        body = subscription_json(subscription, now)
        print(json.dumps({"action": action, **body} if action else body))
        return
    period = subscription.current_period(now)
    tz = subscription.timezone
    if action:
        print(f"{action} the subscription of {subscription.customer_id}")
    print(f"customer   {subscription.customer_id}")
    print(f"plan       {subscription.plan_id}")
    print(f"started    {format_exact(subscription.started_at)}")
    print(f"timezone   {tz}")
    anchor = "" if subscription.alignment == "calendar" else f" (anchor {local_time(subscription.anchor, tz)})"
    print(f"periods    {ADJECTIVES[subscription.interval]}, {subscription.alignment}{anchor}")
    print(f"overrides  {_overrides_text(subscription) or '-'}")
    for phase in phases_of(subscription):
        print(f"phase      {format_exact(phase.start)} .. {format_exact(phase.end)}: {phase.plan_id}")
    for change in subscription.changes:
        scheduled = " (scheduled)" if change.at > now else ""
        print(f"changed    {format_exact(change.at)}: {change.previous_plan_id} → {change.plan_id}{scheduled}")
    for held in subscription.addons:
        until = "" if held.ended_at is None else f" until {format_exact(held.ended_at)}"
        print(f"add-on     {held.addon_id} × {held.quantity} from {format_exact(held.started_at)}{until}")
    print(f"period     {format_exact(period.start)} .. {format_exact(period.end)} (UTC)")
    print(f"           {local_time(period.start, tz)} .. {local_time(period.end, tz)} ({tz})")


def _print_list(subscriptions: Sequence[Subscription], now: datetime, as_json: bool) -> None:
    if as_json:
        print(json.dumps([subscription_json(s, now) for s in subscriptions]))
        return
    print(f"{'CUSTOMER':<24} {'PLAN':<16} {'PERIODS':<20} {'TIMEZONE':<20} {'STARTED':<21} OVERRIDES")
    for s in subscriptions:
        periods = f"{s.interval}/{s.alignment}"
        print(
            f"{s.customer_id:<24} {s.plan_id:<16} {periods:<20} {s.timezone:<20} "
            f"{format_exact(s.started_at):<21} {_overrides_text(s) or '-'}"
        )


def _overrides_text(subscription: Subscription) -> str:
    return ", ".join(f"{name}={limit}" for name, limit in subscription.overrides.items())
