"""``tollway invoices``: credit notes for finalized invoices, and the accounting export.

    tollway invoices credit INVOICE_ID (--amount X | --line N[=AMOUNT] ...) --reason TEXT
                            [--idempotency-key KEY] [--json]
    tollway invoices credit-notes [--customer ID] [--invoice ID] [--json]
    tollway invoices export --out PATH [--since DATE] [--until DATE] [--customer ID]

``credit`` issues a credit note (docs/billing.md, "Credit notes"): ``--amount 6.65`` credits an amount,
``--line 3`` what remains of the invoice's line 3 (1 = its first line), ``--line 3=1.50`` part of it
(``--line`` may be repeated). It prints the credit note's number, id, total and the invoice's net after
it. Sent again with the same ``--idempotency-key`` it issues nothing new and prints the same credit note
("already issued"). ``export`` writes the accounting export (docs/billing.md, "Accounting export")
atomically to ``--out``.

Bad input (an unknown or draft invoice, an amount that is not an amount of the invoice's currency, a
credit note larger than what remains, a bad date, an ``--out`` whose directory is missing or not
writable) is one line on stderr, exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from tollway.billing import credit_note_store
from tollway.billing.accounting_export import build_export, check_target, encode, load_documents, write_atomically
from tollway.billing.credit_notes import CreditRequest, LineCredit, credited
from tollway.billing.crediting import ClientRunner, CreditNoteIssuer
from tollway.billing.errors import BillingError
from tollway.billing.invoice_store import load_current
from tollway.billing.money import format_amount
from tollway.billing.seller import seller_timezone
from tollway.cli.bill import open_warehouse
from tollway.notifications.emitter import emit_after_commit
from tollway.notifications.lifecycle import credit_note_issued
from tollway.notifications.outbox import OutboxWriter
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.warehouse.connection import query_rows, quiet_driver_logs
from tollway.warehouse.errors import WarehouseError, WarehouseUnavailable
from tollway.warehouse.settings import WarehouseSettings

EXIT_BAD_INPUT: Final = 2
_LINE: Final = re.compile(r"^([0-9]{1,6})(?:=(.*))?$")
_DATE: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "invoices",
        help="credit notes for finalized invoices, and the accounting export",
        description="Correct finalized invoices with credit notes; export invoices and credit notes for accounting.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    credit = actions.add_parser(
        "credit",
        help="issue a credit note for a finalized invoice",
        description="Credit part of a finalized invoice: an amount, whole lines or parts of lines. "
        "The credit notes of an invoice never credit more than its total.",
    )
    credit.add_argument("invoice_id", metavar="INVOICE_ID", help="the finalized invoice (in_…)")
    what = credit.add_mutually_exclusive_group(required=True)
    what.add_argument("--amount", metavar="X", help="credit this amount (e.g. 6.65), not tied to a line")
    what.add_argument(
        "--line",
        action="append",
        metavar="N[=AMOUNT]",
        help="credit line N of the invoice (1 = the first): what remains of it, or AMOUNT of it; repeatable",
    )
    credit.add_argument("--reason", required=True, metavar="TEXT", help="why (printed on the credit note)")
    credit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the same key again issues nothing new (default: a random key: each run issues a credit note)",
    )
    credit.add_argument("--json", action="store_true", help="print the credit note document as JSON")
    listing = actions.add_parser("credit-notes", help="list credit notes", description="List issued credit notes.")
    listing.add_argument("--customer", metavar="ID", help="this customer's only")
    listing.add_argument("--invoice", metavar="INVOICE_ID", help="this invoice's only")
    listing.add_argument("--json", action="store_true", help="print the documents as a JSON array")
    export = actions.add_parser(
        "export",
        help="write finalized invoices and credit notes as JSON for accounting",
        description="Write the accounting export (schema tollway.accounting-export/v1, "
        "docs/schemas/accounting-export-v1.schema.json) atomically to --out.",
    )
    export.add_argument("--out", required=True, type=Path, metavar="PATH", help="the file to write (replaced whole)")
    export.add_argument("--since", metavar="YYYY-MM-DD", help="issued on or after this date")
    export.add_argument("--until", metavar="YYYY-MM-DD", help="issued on or before this date")
    export.add_argument("--customer", metavar="ID", help="this customer's only")


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def parse_lines(given: list[str]) -> tuple[LineCredit, ...]:
    """``--line`` values (``3``, ``3=1.50``) as line credits; ``BillingError`` for a malformed one."""
    found = []
    for text in given:
        match = _LINE.fullmatch(text)
        if match is None or int(match[1]) < 1:
            raise BillingError(f"--line {text}: write N or N=AMOUNT, N the invoice's line number from 1 (e.g. 3=1.50)")
        found.append(LineCredit(int(match[1]), match[2]))
    return tuple(found)


def parse_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise BillingError(f"{option} {text}: not a date (YYYY-MM-DD)") from None


def open_credit_warehouse(warehouse: WarehouseSettings) -> Any:
    """``bill.open_warehouse``, and a server must have table ``credit_notes`` (migration 0011)."""
    client = open_warehouse(warehouse)
    if not warehouse.dsn.startswith("chdb://"):
        found = query_rows(client, "EXISTS TABLE {db:Identifier}.credit_notes", {"db": warehouse.database})
        if not found or not found[0][0]:
            client.close()
            raise WarehouseUnavailable(
                f"table {warehouse.database}.credit_notes does not exist: run `tollway db migrate` against this server"
            )
    return client


def run(args: argparse.Namespace, settings: Settings) -> int:
    quiet_driver_logs()
    try:
        if args.action == "credit":
            return asyncio.run(_credit(args, settings))
        if args.action == "credit-notes":
            return _list(args)
        return _export(args)
    except (BillingError, WarehouseError) as exc:
        return _fail(str(exc))


async def _credit(args: argparse.Namespace, settings: Settings) -> int:
    request = CreditRequest(
        invoice_id=args.invoice_id,
        reason=args.reason,
        amount=args.amount,
        lines=parse_lines(args.line or []),
        idempotency_key=args.idempotency_key,
    )
    warehouse = WarehouseSettings()
    client = await asyncio.to_thread(open_credit_warehouse, warehouse)
    redis = admin_client(settings)
    try:
        runner = ClientRunner(client, warehouse.database)
        issued = await CreditNoteIssuer(redis, settings.redis_prefix, timezone=seller_timezone()).issue(
            runner, request, now=datetime.now(UTC)
        )
        await emit_after_commit(OutboxWriter(redis, settings.redis_prefix), [credit_note_issued(issued.document)])
        invoice = (await runner.run(lambda c, db: load_current(c, db, [args.invoice_id])))[args.invoice_id].document
        notes = await runner.run(lambda c, db: credit_note_store.for_invoice(c, db, args.invoice_id))
    finally:
        await redis.aclose()
        client.close()
    document = issued.document
    if args.json:
        print(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True))
        return 0
    currency = document["currency"]
    net = Decimal(str(invoice["total"])) - credited(notes)
    note = "issued" if issued.created else "already issued (same idempotency key), nothing new"
    print(
        f"{document['number']}  {document['credit_note_id']}  invoice {document['invoice_id']}  "
        f"{document['total']} {currency}  {note}"
    )
    print(
        f"invoice {document['invoice_id']}: total {invoice['total']} {currency}, credited "
        f"{format_amount(credited(notes), currency)}, net {format_amount(net, currency)} {currency}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    warehouse = WarehouseSettings()
    client = open_credit_warehouse(warehouse)
    try:
        if args.invoice is not None:
            notes = credit_note_store.for_invoice(client, warehouse.database, args.invoice)
            if args.customer is not None:
                notes = [n for n in notes if n.get("customer_id") == args.customer]
        else:
            notes = credit_note_store.listed(client, warehouse.database, customer_id=args.customer)
    finally:
        client.close()
    if args.json:
        print(json.dumps(notes, ensure_ascii=False, indent=2, sort_keys=True))
        return 0
    if not notes:
        print("no credit notes")
        return 0
    print(f"{'NUMBER':<16} {'ISSUED':<10} {'CUSTOMER':<20} {'INVOICE':<28} {'TOTAL':>12}  CURRENCY  REASON")
    for note in notes:
        print(
            f"{note['number'] or '-':<16} {note['issued_on']:<10} {note['customer_id']:<20} {note['invoice_id']:<28} "
            f"{note['total']:>12}  {note['currency']:<8}  {note['reason']}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    since = parse_date(args.since, "--since")
    until = parse_date(args.until, "--until")
    if since is not None and until is not None and until < since:
        raise BillingError(f"--until {until} is before --since {since}")
    out: Path = args.out
    check_target(out)  # before any connection
    warehouse = WarehouseSettings()
    client = open_credit_warehouse(warehouse)
    try:
        invoices, notes = load_documents(
            client, warehouse.database, since=since, until=until, customer_id=args.customer
        )
    finally:
        client.close()
    export: dict[str, Any] = build_export(
        invoices, notes, generated_at=datetime.now(UTC), since=since, until=until, customer_id=args.customer
    )
    write_atomically(out, encode(export))
    print(f"{out}: {len(export['invoices'])} invoice(s), {len(export['credit_notes'])} credit note(s)")
    return 0
