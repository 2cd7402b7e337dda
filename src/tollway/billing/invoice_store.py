"""Invoices in ClickHouse: tables ``invoices`` and ``invoice_lines`` (migration ``0004_invoices.sql``).

Rules (docs/billing.md, "Invoices"):

* Each write of an invoice has a ``version`` (microseconds since the epoch, above any earlier version of
  that invoice); ``ReplacingMergeTree(version)`` keeps the newest, so readers use ``invoices FINAL``. An
  invoice's lines are the ``invoice_lines`` rows with its current version. Lines are written before the
  invoice row, so the current version always has its lines.
* A **draft** is replaced by the next run of its period (same invoice id, newer version).
* A **finalized** invoice is never written again: ``save`` leaves it untouched and reports it, whether
  the run is a draft run or another ``--finalize``. Its late usage goes on a later invoice
  (``invoices.late_usage``; ``load_finalized`` supplies the history).

One bill run at a time per database (the check and the write are not one transaction).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from tollway.billing.aggregate import format_instant
from tollway.billing.invoices import Invoice
from tollway.billing.money import format_amount
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


def load_lines(client: Any, database: str, invoice_id: str) -> list[dict[str, Any]]:
    """The current lines of an invoice, in order (kind, charge_id, meter, quantity, amount, sources)."""
    rows = query_rows(
        client,
        "SELECT line_no, kind, charge_id, discount_id, meter, toString(quantity), toString(amount), "
        "quantity_sql, quantity_parameters FROM {db:Identifier}.invoice_lines FINAL "
        "WHERE invoice_id = {id:String} AND version = "
        "(SELECT max(version) FROM {db:Identifier}.invoices FINAL WHERE invoice_id = {id:String}) ORDER BY line_no",
        {"db": check_identifier(database), "id": invoice_id},
    )
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


def save(client: Any, database: str, invoices: Sequence[Invoice], *, finalize: bool, now: datetime) -> list[SaveResult]:
    """Write ``invoices`` as drafts (or finalized with ``finalize``), except those already finalized."""
    current = load_current(client, database, [invoice.invoice_id for invoice in invoices])
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
        line_rows.extend(_line_rows(written, document, version))
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
        }
    )


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
    return rows
