"""``tollway keys``: create, list, revoke, rotate. Secrets are printed once, at creation or rotation."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import IssuedKey, Keyring
from tollway.auth.records import format_instant
from tollway.auth.redis_store import RedisKeyStore
from tollway.auth.views import record_json
from tollway.cli.durations import parse_duration, parse_instant
from tollway.clock import SystemClock
from tollway.notifications.outbox import OutboxWriter
from tollway.redis_client import admin_client
from tollway.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--customer", required=True, help="customer id the key belongs to")
    create.add_argument("--env", choices=("live", "test"), default="live")
    create.add_argument("--expires", help="a duration from now (90d) or an ISO 8601 time")
    create.add_argument("--json", action="store_true", help="print JSON")

    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--customer", help="only this customer's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")

    revoke = sub.add_parser("revoke", help="revoke a key at once, in every running Tollway")
    revoke.add_argument("key_id")
    revoke.add_argument("--json", action="store_true", help="print JSON")

    rotate = sub.add_parser("rotate", help="issue a successor; the old key works until the overlap ends")
    rotate.add_argument("key_id")
    rotate.add_argument("--overlap", default="24h", help="how long the old key keeps working (default 24h)")
    rotate.add_argument("--json", action="store_true", help="print JSON")


def _iso(value: datetime | None) -> str | None:
    return format_instant(value) or None


def _print_issued(issued: IssuedKey, as_json: bool, now: datetime, **extra: object) -> None:
    if as_json:
        print(json.dumps({**record_json(issued.record, now), "api_key": issued.secret, **extra}))
        return
    record = issued.record
    print(f"key_id    {record.key_id}")
    print(f"customer  {record.customer_id}")
    print(f"env       {record.env}")
    print(f"expires   {_iso(record.expires_at) or 'never'}")
    for name, value in extra.items():
        print(f"{name:<9} {value}")
    print(f"api_key   {issued.secret}")
    print("Store the key now: it is shown only once; Tollway keeps only its HMAC digest.")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    clock = SystemClock()
    redis = admin_client(settings)
    try:
        keyring = Keyring(
            RedisKeyStore(redis, settings.redis_prefix),
            KeyDigester(settings.pepper_bytes()),
            clock,
            OutboxWriter(redis, settings.redis_prefix),
        )
        now = clock.now()
        command = args.keys_command
        if command == "create":
            expires = parse_instant(args.expires, now) if args.expires else None
            issued = await keyring.create(args.customer, args.env, expires)
            _print_issued(issued, args.json, now)
        elif command == "list":
            records = await keyring.list(args.customer)
            if args.json:
                print(json.dumps([record_json(r, now) for r in records]))
            else:
                print(f"{'KEY ID':<21} {'CUSTOMER':<20} {'ENV':<4} {'STATE':<8} {'LAST4':<5} {'CREATED':<24} EXPIRES")
                for r in records:
                    print(
                        f"{r.key_id:<21} {r.customer_id:<20} {r.env:<4} {r.state_at(now):<8} …{r.last4:<4} "
                        f"{_iso(r.created_at):<24} {_iso(r.expires_at) or '-'}"
                    )
        elif command == "revoke":
            record = await keyring.revoke(args.key_id)
            if args.json:
                print(json.dumps(record_json(record, now)))
            else:
                print(f"revoked {record.key_id} (customer {record.customer_id}) at {_iso(record.revoked_at)}")
        elif command == "rotate":
            rotation = await keyring.rotate(args.key_id, parse_duration(args.overlap))
            _print_issued(
                rotation.new,
                args.json,
                now,
                replaces=rotation.old.key_id,
                old_key_expires_at=_iso(rotation.old.expires_at),
            )
        return 0
    finally:
        await redis.aclose()
