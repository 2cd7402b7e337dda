"""Credit notes in ClickHouse: table ``credit_notes`` (migration ``0011_credit_notes.sql``).

A credit note is written once, when it is issued (``billing.crediting``), and never changed: its row
carries the document (``billing.credit_notes.CreditNote.as_dict``) and the columns readers filter on.
The table is ``ReplacingMergeTree(version)`` keyed by (invoice, credit note id), so the same credit note
written twice (a retry after a crash between the insert and its answer) is one row in
``credit_notes FINAL``, which every reader uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import date
from typing import Any

from tollway.warehouse.connection import check_identifier, insert_json_rows, query_rows


def insert(client: Any, database: str, document: Mapping[str, Any]) -> None:
    """Store an issued credit note (its document, numbered)."""
    row = {
        "credit_note_id": document["credit_note_id"],
        "number": document["number"] or "",
        "invoice_id": document["invoice_id"],
        "customer_id": document["customer_id"],
        "currency": document["currency"],
        "issued_on": document["issued_on"],
        "issued_at": str(document["issued_at"]).replace("T", " ").removesuffix("Z"),
        "total": document["total"],
        "document": json.dumps(document, ensure_ascii=False, sort_keys=True),
        "version": time.time_ns() // 1000,
    }
    line = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
    insert_json_rows(client, database, "credit_notes", line.encode())


def for_invoice(client: Any, database: str, invoice_id: str) -> list[dict[str, Any]]:
    """The documents of the invoice's credit notes, in the order they were issued."""
    rows = query_rows(
        client,
        "SELECT document FROM {db:Identifier}.credit_notes FINAL WHERE invoice_id = {id:String} "
        "ORDER BY issued_at, number, credit_note_id",
        {"db": check_identifier(database), "id": invoice_id},
    )
    return [json.loads(r[0]) for r in rows]


def for_invoices(client: Any, database: str, invoice_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Invoice id → the documents of its credit notes (invoices without any are absent)."""
    found: dict[str, list[dict[str, Any]]] = {}
    if not invoice_ids:
        return found
    rows = query_rows(
        client,
        "SELECT invoice_id, document FROM {db:Identifier}.credit_notes FINAL "
        "WHERE invoice_id IN {ids:Array(String)} ORDER BY issued_at, number, credit_note_id",
        {"db": check_identifier(database), "ids": invoice_ids},
    )
    for invoice_id, document in rows:
        found.setdefault(str(invoice_id), []).append(json.loads(document))
    return found


def listed(
    client: Any,
    database: str,
    *,
    customer_id: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[dict[str, Any]]:
    """Credit note documents, optionally of one customer and issued from ``since`` to ``until`` (both
    included), in the order they were issued (then by number and id: deterministic)."""
    conditions = ["1"]
    parameters: dict[str, Any] = {"db": check_identifier(database)}
    if customer_id is not None:
        conditions.append("customer_id = {customer:String}")
        parameters["customer"] = customer_id
    if since is not None:
        conditions.append("issued_on >= {since:Date}")
        parameters["since"] = since
    if until is not None:
        conditions.append("issued_on <= {until:Date}")
        parameters["until"] = until
    rows = query_rows(
        client,
        "SELECT document FROM {db:Identifier}.credit_notes FINAL WHERE "  # noqa: S608 (fixed conditions; values are bound parameters)
        + " AND ".join(conditions)
        + " ORDER BY issued_on, issued_at, number, credit_note_id",
        parameters,
    )
    return [json.loads(r[0]) for r in rows]
