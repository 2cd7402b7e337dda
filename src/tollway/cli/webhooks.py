"""``tollway webhooks``: register, list, show, update, delete webhook endpoints and rotate their secret.

    tollway webhooks create URL [--description TEXT] [--events TYPE,TYPE...] [--disabled] [--json]
    tollway webhooks list [--json]
    tollway webhooks show ENDPOINT_ID [--json]
    tollway webhooks update ENDPOINT_ID [--url URL] [--description TEXT] [--events TYPE,... | --all-events]
                                        [--enable | --disable] [--json]
    tollway webhooks delete ENDPOINT_ID
    tollway webhooks rotate-secret ENDPOINT_ID [--overlap 24h] [--json]

The signing secret (``whsec_…``) is printed once, by ``create`` and ``rotate-secret``; Redis keeps it only
encrypted under a key derived from the pepper. URLs follow the rules of the management API
(docs/webhook-endpoints.md): https, public addresses, unless ``TOLLWAY_WEBHOOKS_ALLOW_HTTP`` /
``TOLLWAY_WEBHOOKS_ALLOW_PRIVATE`` say otherwise. Exit status: 0; 1 for an unknown endpoint or a change that
lost a race (or the endpoint limit); 2 for bad input (the message names the option).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tollway.cli import webhook_deliveries
from tollway.cli.durations import parse_duration
from tollway.clock import SystemClock
from tollway.notifications.endpoint_store import (
    UNSET,
    EndpointConflict,
    EndpointNotFound,
    EndpointStore,
    IssuedEndpoint,
    TooManyEndpoints,
    store_from_settings,
)
from tollway.notifications.endpoints import (
    DEFAULT_OVERLAP,
    MAX_OVERLAP,
    Endpoint,
    EndpointError,
    is_endpoint_id,
)
from tollway.notifications.events import EVENT_TYPES
from tollway.redis_client import admin_client
from tollway.settings import Settings

EXIT_FAILED = 1
_OWN_COMMANDS = frozenset({"create", "list", "show", "update", "delete", "rotate-secret"})


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    webhooks = commands.add_parser(
        "webhooks",
        help="webhook endpoints: create (secret shown once), list, show, update, delete, rotate-secret",
        description="Manage the endpoints Tollway sends signed events to (docs/webhook-endpoints.md).",
    )
    sub = webhooks.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")
    types = f"comma-separated event types (default: every type): {', '.join(EVENT_TYPES)}"

    create = sub.add_parser("create", help="register an endpoint and print its signing secret once")
    create.add_argument("url", help="https URL events are POSTed to")
    create.add_argument("--description", default="", help="what it is for (at most 500 characters)")
    create.add_argument("--events", help=types)
    create.add_argument("--disabled", action="store_true", help="register it disabled (nothing is sent)")
    create.add_argument("--json", action="store_true", help="print JSON")

    listing = sub.add_parser("list", help="list endpoints (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = sub.add_parser("show", help="one endpoint (never its secret)")
    show.add_argument("endpoint_id")
    show.add_argument("--json", action="store_true", help="print JSON")

    update = sub.add_parser("update", help="change an endpoint's URL, description, event types or state")
    update.add_argument("endpoint_id")
    update.add_argument("--url", help="the new URL")
    update.add_argument("--description", help="the new description ('' clears it)")
    events = update.add_mutually_exclusive_group()
    events.add_argument("--events", help=types)
    events.add_argument("--all-events", action="store_true", help="send every event type (clear the filter)")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", action="store_true", help="enable it (clears a failing or disabled state)")
    state.add_argument("--disable", action="store_true", help="disable it: nothing is sent until enabled")
    update.add_argument("--json", action="store_true", help="print JSON")

    delete = sub.add_parser("delete", help="delete an endpoint: nothing more is sent to it")
    delete.add_argument("endpoint_id")

    rotate = sub.add_parser(
        "rotate-secret", help="issue a new signing secret (printed once); the old one signs too for the overlap"
    )
    rotate.add_argument("endpoint_id")
    rotate.add_argument("--overlap", default="24h", help="how long the old secret keeps signing (default 24h, ≤ 7d)")
    rotate.add_argument("--json", action="store_true", help="print JSON")

    webhook_deliveries.add_commands(sub)  # events, attempts, replay, test


def parse_events(text: str) -> list[str]:
    """``--events a,b``: the names, stripped; an empty list is refused (use ``--all-events``)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise EndpointError(
            "event_types", "--events names no event type; leave it out (or --all-events) for every type"
        )
    return names


def _option(exc: EndpointError) -> str:
    return {"url": "URL", "event_types": "--events", "description": "--description", "overlap": "--overlap"}.get(
        exc.field, exc.field
    )


def _print_endpoint(view: dict[str, Any]) -> None:
    types = view["event_types"]
    rows = [
        ("endpoint_id", view["endpoint_id"]),
        ("url", view["url"]),
        ("description", view["description"] or "-"),
        ("events", ", ".join(types) if types else "all"),
        ("state", view["state"]),
        ("created", view["created_at"]),
        ("updated", view["updated_at"]),
        ("secret made", view["secret_created_at"]),
    ]
    if view["previous_secret_expires_at"]:
        rows.append(("old secret", f"signs until {view['previous_secret_expires_at']}"))
    if view["failing_since"]:
        rows.append(("failing", f"since {view['failing_since']}"))
    if view["disabled_at"]:
        rows.append(("disabled", f"{view['disabled_at']} ({view['disabled_reason'] or 'no reason given'})"))
    for name, value in rows:
        print(f"{name:<12} {value}")


def _print_issued(issued: IssuedEndpoint, as_json: bool, now: Any) -> None:
    view = issued.endpoint.view(now)
    if as_json:
        print(json.dumps({"endpoint": view, "secret": issued.secret}))
        return
    _print_endpoint(view)
    print(f"{'secret':<12} {issued.secret}")
    print("Store the secret now: it is shown only once; Tollway keeps it only encrypted.")


def _print_one(endpoint: Endpoint, as_json: bool, now: Any) -> None:
    if as_json:
        print(json.dumps(endpoint.view(now)))
    else:
        _print_endpoint(endpoint.view(now))


def _fail(message: str, code: int) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return code


async def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.webhooks_command
    if command not in _OWN_COMMANDS:
        if command in webhook_deliveries.COMMANDS:
            return await webhook_deliveries.run(args, settings)
        return _fail(f"unknown webhooks command {command!r}", 2)
    endpoint_id = getattr(args, "endpoint_id", None)
    if endpoint_id is not None and not is_endpoint_id(endpoint_id):
        return _fail(f"{endpoint_id!r} is not an endpoint id (ep_ and 24 hex digits; see `tollway webhooks list`)", 2)
    try:
        overlap = DEFAULT_OVERLAP
        if command == "rotate-secret":
            overlap = parse_duration(args.overlap)
            if overlap > MAX_OVERLAP:
                return _fail(f"--overlap {args.overlap!r} is longer than 7 days", 2)
        events = parse_events(args.events) if getattr(args, "events", None) is not None else None
    except EndpointError as exc:
        return _fail(str(exc), 2)
    except ValueError as exc:
        return _fail(f"--overlap: {exc}", 2)
    clock = SystemClock()
    redis = admin_client(settings)
    try:
        store = store_from_settings(redis, settings, clock)
        return await _run(args, store, clock.now(), events, overlap)
    except EndpointError as exc:
        return _fail(f"{_option(exc)}: {exc}", 2)
    except EndpointNotFound as exc:
        return _fail(str(exc), EXIT_FAILED)
    except (EndpointConflict, TooManyEndpoints) as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        await redis.aclose()


async def _run(args: argparse.Namespace, store: EndpointStore, now: Any, events: list[str] | None, overlap: Any) -> int:
    command = args.webhooks_command
    if command == "create":
        issued = await store.create(
            args.url, description=args.description, event_types=events or (), enabled=not args.disabled
        )
        _print_issued(issued, args.json, now)
    elif command == "list":
        endpoints = await store.all()
        if args.json:
            print(json.dumps([e.view(now) for e in endpoints]))
        else:
            print(f"{'ENDPOINT ID':<27} {'STATE':<9} {'EVENTS':<8} URL")
            for e in endpoints:
                shown = str(len(e.event_types)) if e.event_types else "all"
                print(f"{e.id:<27} {e.state():<9} {shown:<8} {e.url}")
    elif command == "show":
        _print_one(await store.require(args.endpoint_id), args.json, now)
    elif command == "update":
        changes: dict[str, Any] = {}
        if args.url is not None:
            changes["url"] = args.url
        if args.description is not None:
            changes["description"] = args.description
        if args.all_events:
            changes["event_types"] = []
        elif events is not None:
            changes["event_types"] = events
        if args.enable or args.disable:
            changes["enabled"] = bool(args.enable)
        if not changes:
            return _fail(
                "nothing to change: give --url, --description, --events, --all-events, --enable or --disable", 2
            )
        before, after = await store.update(
            args.endpoint_id,
            url=changes.get("url", UNSET),
            description=changes.get("description", UNSET),
            event_types=changes.get("event_types", UNSET),
            enabled=changes.get("enabled", UNSET),
        )
        if not args.json and after == before:
            print("nothing changed")
        _print_one(after, args.json, now)
    elif command == "delete":
        if not await store.delete(args.endpoint_id):
            raise EndpointNotFound(args.endpoint_id)
        print(f"deleted {args.endpoint_id}")
    elif command == "rotate-secret":
        issued, _before = await store.rotate_secret(args.endpoint_id, overlap)
        _print_issued(issued, args.json, now)
    return 0
