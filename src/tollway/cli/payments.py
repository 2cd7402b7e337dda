"""``tollway payments push``: push finalized invoices to Stripe (docs/payments.md).

    tollway payments push [--customer ID] [--period YYYY-MM]

Reads the finalized invoices from ClickHouse (``TOLLWAY_CLICKHOUSE_DSN`` / ``_DATABASE``), the push
state from Redis (``TOLLWAY_REDIS_URL``), and sends to Stripe with ``TOLLWAY_STRIPE_API_KEY`` (to
``TOLLWAY_STRIPE_API_BASE`` when set). Prints one line per invoice: ``pushed`` (with the Stripe invoice
id and number) or ``already pushed``; each invoice Stripe refused is one line on stderr with Stripe's
message and code, and the others go on.

Exit status: 0 when every invoice is pushed; 1 when some were not (refused, or Stripe out of reach:
run it again, it resumes); 2 for bad input, no API key (nothing is sent) or a key Stripe refuses
(401/403: nothing was created, nothing recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any, Final

from pydantic import ValidationError

from tollway.cli.bill import open_warehouse
from tollway.payments.push_settings import StripePushSettings
from tollway.payments.push_state import PushState
from tollway.payments.stripe_push import (
    PushResult,
    StripeKeyRefused,
    StripePusher,
    StripeUnreachable,
    finalized_documents,
    stripe_client,
)
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.warehouse.connection import quiet_driver_logs
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.settings import WarehouseSettings

EXIT_SOME_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2


def register(commands: Any) -> None:
    payments = commands.add_parser("payments", help="hand finalized invoices to a payment provider (Stripe)")
    actions = payments.add_subparsers(dest="payments_command", required=True, metavar="ACTION")
    push = actions.add_parser(
        "push",
        help="push finalized invoices (customers, lines, invoices) to Stripe; re-runs resume, never duplicate",
    )
    push.add_argument("--customer", help="only this customer's invoices")
    push.add_argument("--period", help="only invoices of this month (YYYY-MM)")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, settings: Settings) -> int:
    quiet_driver_logs()
    for chatty in ("stripe", "httpx", "httpcore"):  # a line per request: the command prints the outcomes
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        stripe_settings = StripePushSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "TOLLWAY_STRIPE_" + "_".join(str(p) for p in error["loc"]).upper()
        return _fail(f"invalid settings: {name}: {error['msg'].removeprefix('Value error, ')}")
    try:
        client = stripe_client(stripe_settings)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        warehouse = WarehouseSettings()
        connection = open_warehouse(warehouse)
        try:
            documents = finalized_documents(
                connection, warehouse.database, customer_id=args.customer, period=args.period
            )
        finally:
            connection.close()
    except WarehouseError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    if not documents:
        print("no finalized invoice to push")
        return 0
    results: list[PushResult] = []
    try:
        asyncio.run(_push(settings, stripe_settings, client, documents, results))
    except StripeKeyRefused as exc:
        return _fail(f"{exc}; check TOLLWAY_STRIPE_API_KEY", EXIT_BAD_INPUT)
    except StripeUnreachable as exc:
        _print(results)
        left = len(documents) - len(results)
        return _fail(f"{exc}; {left} invoice(s) not pushed: run `tollway payments push` again", EXIT_SOME_FAILED)
    return _print(results)


async def _push(
    settings: Settings,
    stripe_settings: StripePushSettings,
    client: Any,
    documents: Sequence[dict[str, Any]],
    results: list[PushResult],
) -> None:
    redis = admin_client(settings)
    try:
        pusher = StripePusher(client, PushState(redis, settings.redis_prefix), stripe_settings.options())
        for document in documents:
            results.append(await pusher.push(document))
    finally:
        await redis.aclose()


def _print(results: Sequence[PushResult]) -> int:
    failed = 0
    for result in results:
        if result.outcome == "failed":
            failed += 1
            code = f" [{result.code}]" if result.code else ""
            print(
                f"tollway: not pushed: invoice {result.invoice_id} (customer {result.customer_id}): "
                f"{result.message}{code}",
                file=sys.stderr,
            )
            continue
        print(
            f"{result.invoice_id}  {result.customer_id}  {result.outcome}  "
            f"{result.stripe_invoice_id or '-'}  {result.stripe_number or '-'}"
        )
    if failed:
        print(f"tollway: {failed} invoice(s) not pushed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
