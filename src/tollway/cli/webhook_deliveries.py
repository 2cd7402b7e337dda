"""``tollway webhooks events | attempts | replay | test``: what was emitted and delivered, and deliveries
again. ``add_commands`` adds these to the ``tollway webhooks`` group (``cli/webhooks.py``); ``run`` answers
them. Events and attempts are read from ClickHouse (``TOLLWAY_CLICKHOUSE_DSN`` / ``_DATABASE``; with the
embedded engine, only while no ``tollway meter`` holds it); replays and tests are queued in Redis for the
dispatcher. Bad input is a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from tollway.notifications.dispatcher import endpoint_directory
from tollway.notifications.events import EVENT_TYPES, Event, is_event_id
from tollway.notifications.history import MAX_PAGE, EventQuery, get_event, query_attempts, query_events
from tollway.notifications.queue import DeliveryQueue
from tollway.notifications.replay import DisabledEndpoint, UnknownEndpoint, WebhookActions
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.warehouse.connection import connect, quiet_driver_logs
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.settings import WarehouseSettings

COMMANDS = ("events", "attempts", "replay", "test")
EXIT_FAILURE = 2
MAX_REPLAY = 10_000


def _instant(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 instant: {text!r} (e.g. 2026-11-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset: add Z or +hh:mm")
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _event_type(text: str) -> str:
    if text not in EVENT_TYPES:
        raise argparse.ArgumentTypeError(f"unknown event type {text!r}; known: {', '.join(EVENT_TYPES)}")
    return text


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"--limit takes a whole number from 1 to {MAX_PAGE}, not {text!r}")
    return int(text)


def _event_id(text: str) -> str:
    if not is_event_id(text):
        raise argparse.ArgumentTypeError(f"not an event id: {text!r} (evt_ and 32 hex digits)")
    return text


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser("events", help="events emitted, newest first (from ClickHouse)")
    events.add_argument("--customer", help="one customer only")
    events.add_argument("--type", dest="types", action="append", type=_event_type, help="an event type (repeat)")
    events.add_argument("--since", type=_instant, help="from this RFC 3339 instant (inclusive)")
    events.add_argument("--until", type=_instant, help="to this instant (exclusive)")
    events.add_argument("--limit", type=_limit, default=50, metavar="N", help=f"at most N (1-{MAX_PAGE})")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    attempts = sub.add_parser("attempts", help="delivery attempts to an endpoint, newest first")
    attempts.add_argument("endpoint_id")
    attempts.add_argument("--event", type=_event_id, help="of this event only")
    attempts.add_argument("--limit", type=_limit, default=50, metavar="N", help=f"at most N (1-{MAX_PAGE})")
    attempts.add_argument("--json", action="store_true")
    replay = sub.add_parser("replay", help="deliver an event, or every event of a time range, again (same id)")
    replay.add_argument("event_id", nargs="?", type=_event_id, help="one event (or --since/--until)")
    replay.add_argument("--since", type=_instant)
    replay.add_argument("--until", type=_instant)
    replay.add_argument("--customer", help="with --since/--until: one customer only")
    replay.add_argument("--type", dest="types", action="append", type=_event_type)
    replay.add_argument("--endpoint", help="to this endpoint only (default: every endpoint whose filter admits it)")
    test = sub.add_parser("test", help="send a webhook.test event to an endpoint")
    test.add_argument("endpoint_id")


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _read(fn: Any) -> Any:
    quiet_driver_logs()
    warehouse = WarehouseSettings()
    client = connect(warehouse.dsn)
    try:
        if warehouse.dsn.startswith("chdb://"):
            Migrator(client, warehouse.database).migrate()
        return fn(client, warehouse.database)
    finally:
        client.close()


def _events_of(query: EventQuery) -> Any:
    return lambda client, database: query_events(client, database, query)


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "timestamp": _stamp(event.ts_ms), "data": event.body()}


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Answer one of :data:`COMMANDS` (``args.webhooks_command`` or ``args.command``'s sub-command)."""
    command = getattr(args, "webhooks_command", None) or getattr(args, "command", None)
    try:
        if command == "events":
            return _events(args)
        if command == "attempts":
            return _attempts(args)
        if command in ("replay", "test"):
            return await _queue(command, args, settings)
    except WarehouseError as exc:
        return _fail(f"cannot read ClickHouse: {exc}")
    return _fail(f"unknown webhooks command {command!r}")


def _events(args: argparse.Namespace) -> int:
    query = EventQuery(args.customer, tuple(args.types or ()), args.since, args.until, args.limit)
    events: list[Event] = _read(lambda client, database: query_events(client, database, query))
    for event in events:
        if args.json:
            print(json.dumps(_event_json(event), separators=(",", ":")))
        else:
            print(f"{_stamp(event.ts_ms)}  {event.id}  {event.type:<26} {event.customer_id or '-'}")
    return 0


def _attempts(args: argparse.Namespace) -> int:
    rows = _read(lambda client, database: query_attempts(client, database, args.endpoint_id, args.event, args.limit))
    for row in rows:
        if args.json:
            print(json.dumps(row.as_json(), separators=(",", ":")))
        else:
            detail = f"  {row.error}" if row.error else ""
            print(
                f"{_stamp(row.ts_ms)}  {row.event_id}  #{row.attempt}  {row.outcome:<9} {row.status}  "
                f"{row.duration_ms} ms{detail}"
            )
    return 0


async def _queue(command: str, args: argparse.Namespace, settings: Settings) -> int:
    if command == "replay":
        if (args.event_id is None) == (args.since is None or args.until is None):
            return _fail("replay: give an event id, or --since and --until (not both)")
        if args.event_id is not None:
            found = _read(lambda client, database: get_event(client, database, args.event_id))
            if found is None:
                return _fail(f"no event {args.event_id} in ClickHouse")
            events = [found]
        else:
            if args.until <= args.since:
                return _fail("replay: --until must be after --since")
            events = []
            before: tuple[int, str] | None = None
            while len(events) <= MAX_REPLAY:
                query = EventQuery(args.customer, tuple(args.types or ()), args.since, args.until, MAX_PAGE, before)
                chunk = _read(_events_of(query))
                events += chunk
                if len(chunk) < MAX_PAGE:
                    break
                before = (chunk[-1].ts_ms, chunk[-1].id)
            if len(events) > MAX_REPLAY:
                return _fail(f"replay: more than {MAX_REPLAY} events in the range; narrow it")
    redis = admin_client(settings)
    try:
        actions = WebhookActions(
            DeliveryQueue(redis, settings.redis_prefix),
            endpoint_directory(redis, settings),
            lambda: int(datetime.now(UTC).timestamp() * 1000),
        )
        try:
            if command == "test":
                event = await actions.send_test(args.endpoint_id)
                print(f"queued {event.id} (webhook.test) to {args.endpoint_id}")
                return 0
            queued = await actions.replay(events, args.endpoint)
        except UnknownEndpoint as exc:
            return _fail(f"no endpoint {exc.args[0]!r}")
        except DisabledEndpoint as exc:
            return _fail(str(exc))
        print(f"replayed {len(events)} event(s): {queued} deliveries queued")
        return 0
    finally:
        await redis.aclose()


def main_for_tests(argv: list[str], settings: Settings) -> int:
    """Parse ``argv`` as ``tollway webhooks …`` would (for tests until the group exists)."""
    parser = argparse.ArgumentParser(prog="tollway webhooks")
    sub = parser.add_subparsers(dest="webhooks_command", required=True)
    add_commands(sub)
    return asyncio.run(run(parser.parse_args(argv), settings))
