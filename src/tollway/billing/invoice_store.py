"""Invoices in ClickHouse: tables ``invoices`` and ``invoice_lines`` (migrations ``0004_invoices.sql``,
``0005_invoice_lines_tombstones.sql``).

Rules (docs/billing.md, "Invoices"):

* Each write of an invoice has a ``version`` (microseconds since the epoch, above any earlier version of
  that invoice); ``ReplacingMergeTree(version)`` keeps the newest, so readers use ``invoices FINAL``.
  ``invoice_lines`` is ``ReplacingMergeTree(version, is_deleted)`` keyed by (invoice, line number): a
  write replaces each line it has, and writes a tombstone (``is_deleted = 1``) for each line number of
  the replaced write beyond its own, so ``invoice_lines FINAL WHERE invoice_id = …`` is exactly the
  current lines. Lines are written before the invoice row, so the current version always has its lines.
* A **draft** is replaced by the next run of its period (same invoice id, newer version).
* A prepaid invoice's balance section (``document["balance"]``) is stored after the priced lines as
  rows of kind ``balance`` (informational: not part of the total; ``billing.prepaid``).
* An invoice **finalized** now with ``facts`` (``documents.InvoiceFacts``: ``tollway bill`` always gives
  them) has its number, issue and due dates, payment terms, seller and buyer in its document, and the
  number and dates in columns ``number``, ``issued_on`` and ``due_on`` (migration ``0010``; empty and
  null on drafts and on rows written before).
* A **finalized** invoice is never written again: ``save`` leaves it untouched and reports it, whether
  the run is a draft run or another ``--finalize``. Its late usage goes on a later invoice
  (``invoices.late_usage``; ``load_finalized`` supplies the history).

One bill run at a time per database (the check and the write are not one transaction).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from tollway.billing.aggregate import format_instant
from tollway.billing.documents import InvoiceFacts
from tollway.billing.invoices import Invoice
from tollway.billing.money import format_amount
from tollway.billing.prepaid import BALANCE_KIND
from tollway.warehouse.connection import check_identifier, insert_json_rows, query_rows

Action = Literal["created", "replaced", "finalized", "unchanged"]


@dataclass(frozen=True, slots=True)
class StoredInvoice:
    """The current row of an invoice: its status, version and JSON document."""

    invoice_id: str
    status: str
    version: int
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What ``save`` did with one invoice, and the document now stored (the old one when unchanged)."""

    invoice_id: str
    action: Action
    document: dict[str, Any]


def load_current(client: Any, database: str, invoice_ids: Sequence[str]) -> dict[str, StoredInvoice]:
    """The current rows of ``invoice_ids`` that exist."""
    if not invoice_ids:
        return {}
    rows = query_rows(
        client,
        "SELECT invoice_id, toString(status), version, document FROM {db:Identifier}.invoices FINAL "
        "WHERE invoice_id IN {ids:Array(String)}",
        {"db": check_identifier(database), "ids": list(invoice_ids)},
    )
    return {str(r[0]): StoredInvoice(str(r[0]), str(r[1]), int(r[2]), json.loads(r[3])) for r in rows}


def load_finalized(client: Any, database: str, customer_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Customer id → the documents of their finalized invoices (for late-usage adjustments)."""
    found: dict[str, list[dict[str, Any]]] = {}
    if not customer_ids:
        return found
    rows = query_rows(
        client,
        "SELECT customer_id, document FROM {db:Identifier}.invoices FINAL "
        "WHERE customer_id IN {customers:Array(String)} AND status = 'finalized' ORDER BY period_start",
        {"db": check_identifier(database), "customers": list(customer_ids)},
    )
    for customer_id, document in rows:
        found.setdefault(str(customer_id), []).append(json.loads(document))
    return found


def load_earlier_drafts(client: Any, database: str, invoices: Sequence[Invoice]) -> dict[str, list[str]]:
    """Invoice id → the months of its customer's draft invoices of periods starting before its own (an
    invoice with none is absent): what ``invoices.finalize_refusal`` refuses to finalize past. The
    drafts of ``invoices`` themselves are left out (a weekly customer has several in one run; the
    caller decides them in order)."""
    found: dict[str, list[str]] = {}
    if not invoices:
        return found
    rows = query_rows(
        client,
        "SELECT customer_id, period_start, period, invoice_id FROM {db:Identifier}.invoices FINAL "
        "WHERE customer_id IN {customers:Array(String)} AND status = 'draft' ORDER BY period_start",
        {"db": check_identifier(database), "customers": sorted({invoice.customer_id for invoice in invoices})},
    )
    billed = {invoice.invoice_id for invoice in invoices}
    for invoice in invoices:
        start = invoice.period.start
        months = [
            str(r[2])
            for r in rows
            if str(r[0]) == invoice.customer_id and _utc(r[1]) < start and str(r[3]) not in billed
        ]
        if months:
            found[invoice.invoice_id] = months
    return found


def _utc(value: Any) -> datetime:
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


NUMBERED_TABLES: Final = ("invoices", "credit_notes")


def highest_number(client: Any, database: str, series: str, year: int, table: str = "invoices") -> int:
    """The highest number of ``series`` and ``year`` among the stored invoices (or the stored credit
    notes: ``table``) (``INV-2026-000042`` → 42; 0 when there is none): where the sequence must continue
    from (``numbering.raise_sequence``)."""
    if table not in NUMBERED_TABLES:
        raise ValueError(f"{table!r} holds no numbered documents")
    prefix = f"{series}-{year}-"
    rows = query_rows(
        client,
        "SELECT max(toUInt64OrZero(substring(number, {start:UInt32}))) FROM {db:Identifier}.{table:Identifier} "
        "WHERE startsWith(number, {prefix:String})",
        {"db": check_identifier(database), "table": table, "start": len(prefix) + 1, "prefix": prefix},
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


LINES_SQL = (
    "SELECT line_no, kind, charge_id, discount_id, meter, toString(quantity), toString(amount), "
    "quantity_sql, quantity_parameters FROM {db:Identifier}.invoice_lines FINAL "
    "WHERE invoice_id = {id:String} ORDER BY line_no"
)
"""The documented way to read an invoice's current lines (docs/billing.md): ``FINAL`` alone suffices."""


def load_lines(client: Any, database: str, invoice_id: str) -> list[dict[str, Any]]:
    """The current lines of an invoice, in order (kind, charge_id, meter, quantity, amount, sources)."""
    rows = query_rows(client, LINES_SQL, {"db": check_identifier(database), "id": invoice_id})
    return [
        {
            "line_no": int(r[0]),
            "kind": r[1],
            "charge_id": r[2],
            "discount_id": r[3],
            "meter": r[4],
            "quantity": r[5],
            "amount": r[6],
            "quantity_sql": r[7],
            "quantity_parameters": json.loads(r[8]) if r[8] else None,
        }
        for r in rows
    ]


def save(
    client: Any,
    database: str,
    invoices: Sequence[Invoice],
    *,
    finalize: bool,
    now: datetime,
    facts: Mapping[str, InvoiceFacts] | None = None,
) -> list[SaveResult]:
    """Write ``invoices`` as drafts (or finalized with ``finalize``), except those already finalized. With
    ``finalize``, the ``facts`` of an invoice (by id) go into its document and row."""
    current = load_current(client, database, [invoice.invoice_id for invoice in invoices])
    lines = _line_counts(client, database, [invoice.invoice_id for invoice in invoices])
    results: list[SaveResult] = []
    line_rows: list[bytes] = []
    invoice_rows: list[bytes] = []
    for invoice in invoices:
        stored = current.get(invoice.invoice_id)
        if stored is not None and stored.status == "finalized":
            results.append(SaveResult(invoice.invoice_id, "unchanged", stored.document))
            continue
        version = max(time.time_ns() // 1000, stored.version + 1 if stored else 0)
        written = replace(
            invoice,
            status="finalized" if finalize else "draft",
            generated_at=now,
            finalized_at=now if finalize else None,
        )
        document = written.as_dict()
        found = facts.get(invoice.invoice_id) if facts is not None and finalize else None
        if found is not None:
            document.update(found.as_dict())
        rows = _line_rows(written, document, version)
        line_rows.extend(rows)
        line_rows.extend(_tombstones(invoice.invoice_id, len(rows) + 1, lines.get(invoice.invoice_id, 0), version))
        invoice_rows.append(_invoice_row(written, document, version))
        action: Action = "finalized" if finalize else ("replaced" if stored else "created")
        results.append(SaveResult(invoice.invoice_id, action, document))
    if line_rows:
        insert_json_rows(client, database, "invoice_lines", b"".join(line_rows))
    if invoice_rows:
        insert_json_rows(client, database, "invoices", b"".join(invoice_rows))
    return results


def _json_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _invoice_row(invoice: Invoice, document: dict[str, Any], version: int) -> bytes:
    assert invoice.generated_at is not None
    return _json_line(
        {
            "invoice_id": invoice.invoice_id,
            "customer_id": invoice.customer_id,
            "plan_id": invoice.plan_id,
            "period": invoice.month,
            "period_start": format_instant(invoice.period.start),
            "period_end": format_instant(invoice.period.end),
            "timezone": invoice.timezone,
            "currency": invoice.currency,
            "status": invoice.status,
            "total": format_amount(invoice.total, invoice.currency),
            "generated_at": format_instant(invoice.generated_at),
            "finalized_at": None if invoice.finalized_at is None else format_instant(invoice.finalized_at),
            "document": json.dumps(document, ensure_ascii=False, sort_keys=True),
            "version": version,
            **_fact_columns(document),
        }
    )


def _fact_columns(document: dict[str, Any]) -> dict[str, Any]:
    """Columns of migration 0010, only when the document has a number (else they keep their defaults:
    a row is then what it was before that migration)."""
    if "number" not in document:
        return {}
    return {"number": document["number"], "issued_on": document["issued_on"], "due_on": document["due_on"]}


def _line_counts(client: Any, database: str, invoice_ids: Sequence[str]) -> dict[str, int]:
    """Invoice id → its highest line number now in ``invoice_lines FINAL`` (whichever write it is of:
    also a write whose invoice row never followed)."""
    if not invoice_ids:
        return {}
    rows = query_rows(
        client,
        "SELECT invoice_id, max(line_no) FROM {db:Identifier}.invoice_lines FINAL "
        "WHERE invoice_id IN {ids:Array(String)} GROUP BY invoice_id",
        {"db": check_identifier(database), "ids": list(invoice_ids)},
    )
    return {str(r[0]): int(r[1]) for r in rows}


def _tombstones(invoice_id: str, first: int, last: int, version: int) -> list[bytes]:
    """Rows deleting line numbers ``first``..``last`` of ``invoice_id`` as of ``version`` (a re-run with
    fewer lines than the write it replaces)."""
    return [
        _json_line(
            {
                "invoice_id": invoice_id,
                "line_no": number,
                "kind": "",
                "charge_id": "",
                "discount_id": "",
                "meter": "",
                "description": "",
                "quantity": None,
                "amount": "0",
                "timing": "",
                "breakdown": [],
                "quantity_sql": "",
                "quantity_parameters": "",
                "version": version,
                "is_deleted": 1,
            }
        )
        for number in range(first, last + 1)
    ]


def _line_rows(invoice: Invoice, document: dict[str, Any], version: int) -> list[bytes]:
    """The ``invoice_lines`` rows of a document. A usage line's ``quantity_sql``/``quantity_parameters``
    reproduce its quantity; an adjustment line has no single quantity: its ``quantity_parameters`` map
    each meter to its own ``{"sql", "parameters"}``."""
    rows = []
    for number, line in enumerate(document["lines"], start=1):
        source = line.get("quantity_source")
        if source is not None:
            sql, parameters = source["sql"], json.dumps(source["parameters"], sort_keys=True)
        elif line["kind"] == "adjustment":
            sql, parameters = "", json.dumps(line["quantity_sources"], sort_keys=True)
        else:
            sql, parameters = "", ""
        rows.append(
            _json_line(
                {
                    "invoice_id": invoice.invoice_id,
                    "line_no": number,
                    "kind": line["kind"],
                    "charge_id": line["charge_id"],
                    "discount_id": line["discount_id"] or "",
                    "meter": line["meter"] or "",
                    "description": line["description"],
                    "quantity": line["quantity"],
                    "amount": line["amount"],
                    "timing": line["timing"],
                    "breakdown": list(line["breakdown"]),
                    "quantity_sql": sql,
                    "quantity_parameters": parameters,
                    "version": version,
                }
            )
        )
    balance = document.get("balance")
    if balance is not None:
        rows.extend(_balance_rows(invoice.invoice_id, balance, len(rows) + 1, version))
    return rows


def _balance_rows(invoice_id: str, balance: dict[str, Any], first: int, version: int) -> list[bytes]:
    """The informational rows of a prepaid invoice's balance section, after its priced lines: ``kind``
    ``balance``, ``charge_id`` the row's kind (``balance_start``, ``top_up``, ``burned``, ...),
    ``discount_id`` the grant, ``quantity`` the amount in the balance unit, ``amount`` its worth in the
    currency (rounded); never part of the total."""
    return [
        _json_line(
            {
                "invoice_id": invoice_id,
                "line_no": number,
                "kind": BALANCE_KIND,
                "charge_id": line["kind"],
                "discount_id": line["grant_id"] or "",
                "meter": "",
                "description": line["description"],
                "quantity": line["amount"],
                "amount": line["amount_currency"],
                "timing": "",
                "breakdown": [f"{line['amount']} {balance['unit']}"] + ([f"at {line['at']}"] if line["at"] else []),
                "quantity_sql": "",
                "quantity_parameters": "",
                "version": version,
            }
        )
        for number, line in enumerate(balance["lines"], start=first)
    ]
