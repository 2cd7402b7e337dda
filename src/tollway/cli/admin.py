"""``tollway admin``: the Entitlement Management API, and the credentials that may call it.

    tollway admin [serve] [--host H] [--port P]                 # TOLLWAY_ADMIN_API_HOST / _PORT (9195)
    tollway admin credentials create --name NAME --scope admin:read|admin:write [--json]
    tollway admin credentials list [--json]
    tollway admin credentials revoke NAME

A credential's token is printed once, at creation; Redis keeps only its HMAC digest (with the pepper).
See docs/admin-api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tollway.admin.credentials import CredentialExists, RedisCredentialStore
from tollway.admin.scopes import Scope
from tollway.admin.settings import AdminSettings
from tollway.auth.digest import KeyDigester
from tollway.cli.numbers import ascii_int
from tollway.clock import SystemClock
from tollway.redis_client import admin_client
from tollway.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser(
        "admin",
        help="the Entitlement Management API (REST) and its credentials",
        description="Serve the management API (the default), or manage the admin credentials that call it.",
    )
    sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve the management API (the default command)")
    for parser in (admin, serve):
        parser.add_argument("--host", help="listen address (default: $TOLLWAY_ADMIN_API_HOST, 127.0.0.1)")
        parser.add_argument("--port", type=ascii_int, help="listen port (default: $TOLLWAY_ADMIN_API_PORT, 9195)")

    credentials = sub.add_parser("credentials", help="admin credentials: create (token shown once), list, revoke")
    creds = credentials.add_subparsers(dest="credentials_command", required=True, metavar="COMMAND")
    create = creds.add_parser("create", help="create a credential and print its token once")
    create.add_argument("--name", required=True, help="who uses it; recorded as the actor in the audit log")
    create.add_argument("--scope", required=True, choices=[s.value for s in Scope])
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = creds.add_parser("list", help="list credentials (never their tokens)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = creds.add_parser("revoke", help="delete a credential: its token stops working at once")
    revoke.add_argument("name")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from tollway.admin.app import create_app
    from tollway.admin.services import open_services
    from tollway.warehouse.connection import quiet_driver_logs
    from tollway.warehouse.settings import WarehouseSettings

    settings.pepper_bytes()  # no pepper: a one-line error now, not at the first request
    admin_settings = AdminSettings()
    warehouse = WarehouseSettings()
    quiet_driver_logs()
    app = create_app(lambda: open_services(settings, admin_settings, warehouse))
    config = uvicorn.Config(
        app,
        host=args.host or admin_settings.host,
        port=args.port if args.port is not None else admin_settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,  # its lines carry query strings (page-link tokens); the app logs its own
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


async def _credentials(args: argparse.Namespace, settings: Settings) -> int:
    redis = admin_client(settings)
    try:
        store = RedisCredentialStore(redis, KeyDigester(settings.pepper_bytes()), settings.redis_prefix)
        command = args.credentials_command
        if command == "create":
            try:
                issued = await store.create(args.name, Scope(args.scope), SystemClock().now())
            except CredentialExists as exc:
                print(f"tollway: {exc}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps({**issued.credential.as_dict(), "token": issued.token}))
            else:
                print(f"name   {issued.credential.name}")
                print(f"scope  {issued.credential.scope.value}")
                print(f"token  {issued.token}")
                print("Store the token now: it is shown only once; Tollway keeps only its HMAC digest.")
        elif command == "list":
            found = await store.list()
            if args.json:
                print(json.dumps([c.as_dict() for c in found]))
            else:
                print(f"{'NAME':<32} {'SCOPE':<12} CREATED")
                for credential in found:
                    row = credential.as_dict()
                    print(f"{row['name']:<32} {row['scope']:<12} {row['created_at']}")
        elif command == "revoke":
            if not await store.revoke(args.name):
                print(f"tollway: no admin credential named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked admin credential {args.name}")
        return 0
    finally:
        await redis.aclose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.admin_command == "credentials":
        return asyncio.run(_credentials(args, settings))
    return _serve(args, settings)
