"""``tollway credits``: grant, list, void, balance, sync, reconcile a customer's prepaid balance.

Grants live in Redis beside the limiter's counters (``tollway.credits.store``); every grant and void is
also an entry of the ledger in ClickHouse (``TOLLWAY_CLICKHOUSE_DSN``/``_DATABASE``, like ``tollway db``),
written right after the change. Should that write fail, the command says so and exits 1: the change
stands, and ``tollway credits sync`` (or the same ``grant --id`` again) writes the missing entry.

Bad input is refused before anything is written: an amount that is not positive or has more decimals
than the unit allows, digits other than ASCII 0-9, an unknown unit, an expiry at or before the grant
becomes effective, a customer without a subscription. Exit status: 0; 1 for an unknown grant, a
conflict, a ledger entry not written, or differences found by ``reconcile``; 2 for bad input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

from tollway.auth.records import check_identifier
from tollway.cli.numbers import ascii_int
from tollway.clock import Clock, SystemClock
from tollway.credits.operations import (
    GrantRequest,
    LedgerRunner,
    balance_unit,
    build_grant,
    default_unit,
    load_catalog_file,
    make_grant,
    reconcile,
    sync,
    void_grant,
)
from tollway.credits.store import (
    GrantConflict,
    GrantNotFound,
    GrantStore,
    GrantView,
    TooManyGrants,
    instant_ms,
    live_balance,
    plain,
)
from tollway.credits.units import from_micros
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.subscriptions.requests import parse_time
from tollway.warehouse.connection import connect, quiet_driver_logs
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.settings import WarehouseSettings

T = TypeVar("T")

_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
EXIT_FAILED: Final = 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    credits = commands.add_parser("credits", help="prepaid balances: grant, list, void, sync, reconcile")
    sub = credits.add_subparsers(dest="credits_command", required=True, metavar="COMMAND")

    grant = sub.add_parser(
        "grant",
        help="give a customer an amount of a currency or credit unit",
        description="Make a grant. Times are 'now' or ISO 8601; without an offset, wall-clock time in the "
        "customer's timezone. With --id, a retry of the same grant is the existing grant, not a second one.",
    )
    grant.add_argument("customer", help="customer id (must have a subscription)")
    grant.add_argument("amount", help="a positive decimal amount, e.g. 25 or 12.50")
    grant.add_argument("--unit", help="a currency code or a credit unit of the catalog (default: the plan's currency)")
    grant.add_argument("--effective-at", help="when it can be burned (default: now)")
    grant.add_argument("--expires-at", help="when what is left expires (default: never)")
    grant.add_argument("--priority", type=ascii_int, default=0, help="lower burns first (default 0)")
    rollover = grant.add_mutually_exclusive_group()
    rollover.add_argument(
        "--rollover-max", metavar="AMOUNT", help="at each period end, keep at most this much (default: keep all)"
    )
    rollover.add_argument("--no-rollover", action="store_true", help="at each period end, nothing is kept")
    grant.add_argument("--id", dest="grant_id", help="the grant id (default: a new grt_… id); reuse it to retry")
    grant.add_argument("--reason", default="", help="why it was granted (kept with the grant and in the ledger)")
    grant.add_argument("--catalog", type=Path, help="plan catalog (default: $TOLLWAY_CATALOG): units and currency")
    grant.add_argument("--json", action="store_true", help="print JSON")

    listing = sub.add_parser("list", help="a customer's grants, with what remains of each")
    listing.add_argument("customer")
    listing.add_argument("--json", action="store_true", help="print JSON")

    void = sub.add_parser("void", help="void a grant: what remains of it leaves the balance")
    void.add_argument("customer")
    void.add_argument("grant_id")
    void.add_argument("--json", action="store_true", help="print JSON")

    balance = sub.add_parser("balance", help="a customer's live balance")
    balance.add_argument("customer")
    balance.add_argument("--json", action="store_true", help="print JSON")

    syncing = sub.add_parser("sync", help="sweep expired grants and write every missing ledger entry")
    syncing.add_argument("--customer", help="only this customer")
    syncing.add_argument("--json", action="store_true", help="print JSON")

    recon = sub.add_parser("reconcile", help="check that Redis balances equal the ledger's (exit 1 on a difference)")
    recon.add_argument("--customer", help="only this customer")
    recon.add_argument("--json", action="store_true", help="print JSON")


# --- input ------------------------------------------------------------------------------------------


def parse_amount(option: str, text: str) -> Decimal:
    """A decimal amount in ASCII digits (``25``, ``12.50``, ``-3``: the sign is checked later)."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{option} {text!r} is not a decimal number in ASCII digits (e.g. 25 or 12.50)")
    return Decimal(text)


def _time(option: str, text: str | None, timezone: str, now: datetime) -> datetime | None:
    if text is None:
        return None
    value = parse_time(option, text, timezone, now)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{option} {text!r} must be from 1970 to 2199")
    return value


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


# --- the warehouse --------------------------------------------------------------------------------------


class DirectLedger:
    """A ``LedgerRunner`` over an open clickhouse-connect client (the CLI's; or a test's)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    async def run(self, query: Callable[[Any, str], T]) -> T:
        return query(self.client, self.database)


def open_ledger() -> DirectLedger:
    warehouse = WarehouseSettings()
    client = connect(warehouse.dsn)
    if warehouse.dsn.startswith("chdb://"):
        Migrator(client, warehouse.database).migrate()
    return DirectLedger(client, warehouse.database)


# --- the command ----------------------------------------------------------------------------------------


async def run(
    args: argparse.Namespace, settings: Settings, *, clock: Clock | None = None, ledger: LedgerRunner | None = None
) -> int:
    """Run one ``credits`` command. Bad input raises ``ValueError`` (the caller prints it, exit 2);
    ``ledger``: the warehouse to use instead of opening ``TOLLWAY_CLICKHOUSE_DSN`` (tests)."""
    clock = clock or SystemClock()
    command = args.credits_command
    customer = getattr(args, "customer", None)
    if customer is not None:
        check_identifier("customer id", customer)
    opened: DirectLedger | None = None

    def warehouse() -> LedgerRunner:
        nonlocal opened
        if ledger is not None:
            return ledger
        if opened is None:
            quiet_driver_logs()
            opened = open_ledger()
        return opened

    redis = admin_client(settings)
    try:
        store = GrantStore(redis, settings.redis_prefix)
        now = clock.now()
        if command == "grant":
            return await _grant(
                args, settings, store, RedisSubscriptionStore(redis, settings.redis_prefix), now, warehouse
            )
        if command == "list":
            views = await store.list(args.customer)
            _print_list(views, instant_ms(now), args.json)
            return 0
        if command == "void":
            try:
                outcome = await void_grant(store, warehouse(), args.customer, args.grant_id, at=now, actor=actor())
            except GrantNotFound as exc:
                print(f"tollway: {exc}", file=sys.stderr)
                return EXIT_FAILED
            body = {**outcome.grant.as_dict(instant_ms(now)), "voided_now": outcome.voided_now}
            if args.json:
                print(json.dumps({**body, "ledger": "pending" if outcome.ledger_error else "recorded"}))
            elif outcome.voided_now:
                print(
                    f"voided {args.grant_id} of {args.customer}: "
                    f"{plain(outcome.amount)} {outcome.grant.unit} left the balance"
                )
            else:
                print(f"{args.grant_id} of {args.customer} was {body['status']} already; nothing changed")
            return _ledger_verdict(outcome.ledger_error, "void")
        if command == "balance":
            subscriptions = RedisSubscriptionStore(redis, settings.redis_prefix)
            subscription = await subscriptions.get(args.customer)
            period_start = instant_ms(subscription.current_period(now).start) if subscription else None
            snapshot = await store.snapshot(args.customer)
            micros = live_balance(snapshot.records.values(), instant_ms(now), period_start)
            body = {
                "customer_id": args.customer,
                "unit": snapshot.unit,
                "balance": plain(from_micros(micros)),
                "grants": len(snapshot.records),
            }
            if args.json:
                print(json.dumps(body))
            else:
                print(f"{args.customer}: {body['balance']} {snapshot.unit or '(no grants)'}".rstrip())
            return 0
        if command == "sync":
            report = await sync(store, warehouse(), now=now, customer_id=args.customer)
            if args.json:
                expired = [
                    {"customer_id": c, "grant_id": r.grant_id, "amount": plain(from_micros(r.remaining))}
                    for c, r in report.expired
                ]
                print(json.dumps({"customers": report.customers, "expired": expired, "written": report.written}))
            else:
                for c, r in report.expired:
                    print(f"expired {r.grant_id} of {c}: {plain(from_micros(r.remaining))} left the balance")
                print(
                    f"{report.customers} customer(s): {report.written} ledger "
                    f"entr{'y' if report.written == 1 else 'ies'} written"
                )
            return 0
        if command == "reconcile":
            result = await reconcile(store, warehouse(), customer_id=args.customer)
            if args.json:
                print(
                    json.dumps(
                        {"customers": len(result.checked), "differences": [d.as_dict() for d in result.differences]}
                    )
                )
            else:
                for d in result.differences:
                    row, unit = d.as_dict(), f" {d.unit}" if d.unit else ""
                    print(
                        f"{d.customer_id}: Redis {row['redis']}{unit}, ledger {row['ledger']}{unit} "
                        f"(difference {row['difference']})"
                    )
                if not result.differences:
                    print(f"{len(result.checked)} customer(s) reconciled: Redis and the ledger agree")
            return EXIT_FAILED if result.differences else 0
        raise ValueError(f"unknown credits command {command!r}")
    except WarehouseError as exc:
        print(f"tollway: the ledger cannot be used: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await redis.aclose()
        if opened is not None:
            opened.client.close()


async def _grant(
    args: argparse.Namespace,
    settings: Settings,
    store: GrantStore,
    subscriptions: RedisSubscriptionStore,
    now: datetime,
    warehouse: Callable[[], LedgerRunner],
) -> int:
    amount = parse_amount("AMOUNT", args.amount)
    rollover = Decimal(0) if args.no_rollover else None
    if args.rollover_max is not None:
        rollover = parse_amount("--rollover-max", args.rollover_max)
        if rollover < 0:
            raise ValueError(f"--rollover-max {args.rollover_max} must be 0 or more")
    catalog = load_catalog_file(args.catalog or settings.catalog)
    subscription = await subscriptions.get(args.customer)
    if subscription is None:
        raise ValueError(f"unknown customer {args.customer!r}: no subscription (tollway subscriptions set)")
    unit = balance_unit(args.unit if args.unit is not None else default_unit(catalog, subscription), catalog)
    request = GrantRequest(
        amount=amount,
        unit=unit,
        effective_at=_time("--effective-at", args.effective_at, subscription.timezone, now),
        expires_at=_time("--expires-at", args.expires_at, subscription.timezone, now),
        priority=args.priority,
        rollover_max=rollover,
        reason=args.reason,
        grant_id=args.grant_id,
    )
    info = build_grant(request, now=now, actor=actor())
    period_start = instant_ms(subscription.current_period(now).start)
    try:
        outcome = await make_grant(
            store,
            warehouse(),
            args.customer,
            info,
            period_start_ms=period_start,
            effective_given=args.effective_at is not None,
        )
    except (GrantConflict, TooManyGrants) as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    view = outcome.grant
    if args.json:
        body = {**view.as_dict(instant_ms(now)), "created": outcome.created}
        print(json.dumps({**body, "ledger": "pending" if outcome.ledger_error else "recorded"}))
    else:
        verb = "granted" if outcome.created else "already granted (same request)"
        shown = view.as_dict(instant_ms(now))
        print(
            f"{verb} {view.grant_id}: {shown['amount']} {view.unit} to {args.customer}, "
            f"expires {shown['expires_at'] or 'never'}"
        )
    return _ledger_verdict(outcome.ledger_error, "grant")


def _ledger_verdict(error: str | None, what: str) -> int:
    if error is None:
        return 0
    print(
        f"tollway: the {what} is made in Redis, but its ledger entry was not written ({error}); "
        "run `tollway credits sync` to write it",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _print_list(views: list[GrantView], now_ms: int, as_json: bool) -> None:
    rows = [v.as_dict(now_ms) for v in views]
    if as_json:
        print(json.dumps(rows))
        return
    header = f"{'GRANT ID':<26} {'STATUS':<9} {'UNIT':<8} {'AMOUNT':>12} {'REMAINING':>12} {'PRIO':>5}"
    print(f"{header} {'EXPIRES':<24} REASON")
    for r in rows:
        print(
            f"{r['grant_id']:<26} {r['status']:<9} {r['unit']:<8} {r['amount'] or '-':>12} {r['remaining']:>12} "
            f"{r['priority']:>5} {r['expires_at'] or 'never':<24} {r['reason']}"
        )
