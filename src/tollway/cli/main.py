"""Entry point of the ``tollway`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from redis.exceptions import RedisError

from tollway import __version__, logs
from tollway.auth.errors import KeyNotFound
from tollway.cli import (
    admin,
    bill,
    credits,
    db,
    dispatch,
    invoices,
    keys,
    meter,
    payments,
    plans,
    quote,
    serve,
    subscriptions,
    usage,
    webhooks,
)
from tollway.listen import ListenError
from tollway.plans.errors import CatalogError
from tollway.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tollway",
        description="Authenticate, entitle, meter and bill API traffic behind Envoy.",
        epilog="Settings come from TOLLWAY_* environment variables (see docs/authentication.md).",
    )
    parser.add_argument("--version", action="version", version=f"tollway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    meter.register(commands)
    dispatch.register(commands)
    keys.register(commands)
    plans.register(commands)
    subscriptions.register(commands)
    credits.register(commands)
    db.register(commands)
    usage.register(commands)
    quote.register(commands)
    bill.register(commands)
    admin.register(commands)
    webhooks.register(commands)
    payments.register(commands)
    invoices.register(commands)
    return parser


def _fail(message: str, code: int = 2) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOLLWAY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        return _fail(f"invalid settings: {problems}")
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            return serve.run(args, settings)
        if args.command == "meter":
            return meter.run(args, settings)
        if args.command == "dispatch":
            return dispatch.run(args, settings)
        if args.command == "keys":
            return asyncio.run(keys.run(args, settings))
        if args.command == "plans":
            return plans.run(args, settings)
        if args.command == "subscriptions":
            return asyncio.run(subscriptions.run(args, settings))
        if args.command == "credits":
            return asyncio.run(credits.run(args, settings))
        if args.command == "db":
            return db.run(args, settings)
        if args.command == "usage":
            return usage.run(args, settings)
        if args.command == "quote":
            return quote.run(args, settings)
        if args.command == "bill":
            return bill.run(args, settings)
        if args.command == "admin":
            return admin.run(args, settings)
        if args.command == "webhooks":
            return asyncio.run(webhooks.run(args, settings))
        if args.command == "payments":
            return payments.run(args, settings)
        if args.command == "invoices":
            return invoices.run(args, settings)
    except CatalogError as exc:
        return _fail(f"invalid catalog ({len(exc.issues)} problem(s)):\n{exc}")
    except KeyNotFound as exc:
        return _fail(str(exc), 1)
    except ValidationError as exc:
        return _fail(f"invalid settings: {exc.errors()[0]['msg']}")
    except ValueError as exc:
        return _fail(str(exc))
    except ListenError as exc:
        return _fail(str(exc), 1)
    except RedisError as exc:
        return _fail(f"cannot reach Redis at {settings.redis_url}: {exc}", 1)
    except OSError as exc:  # a file or socket error is reported as what it is, never blamed on Redis
        return _fail(os_error_message(exc), 1)
    except KeyboardInterrupt:
        return 130
    return _fail(f"unknown command {args.command!r}")


def os_error_message(exc: OSError) -> str:
    """An ``OSError`` as one line naming its path(s): ``cannot use invoices: [Errno 17] File exists``."""
    if exc.filename is None:
        return str(exc)
    paths = str(exc.filename) if exc.filename2 is None else f"{exc.filename} → {exc.filename2}"
    return f"cannot use {paths}: {exc.strerror or exc}"


if __name__ == "__main__":
    raise SystemExit(main())
