"""The accounting export: finalized invoices and credit notes as one documented, versioned JSON document.

``tollway invoices export --out PATH [--since DATE] [--until DATE] [--customer ID]`` writes it; its
JSON Schema is ``docs/schemas/accounting-export-v1.schema.json`` and docs/billing.md ("Accounting
export") documents each member and the versioning policy. Shape (``SCHEMA`` names the version)::

    {"schema": "tollway.accounting-export/v1", "generated_at": "...Z",
     "filters": {"since": "2026-11-01" | null, "until": ... | null, "customer_id": ... | null},
     "invoices": [...finalized only...], "credit_notes": [...]}

* An invoice's ``issued_on`` is its document's (set when it was numbered at finalization) or, for an
  invoice finalized before numbering existed, the UTC date of its ``finalized_at``; ``--since`` and
  ``--until`` (both included) select invoices and credit notes by it.
* Deterministic: invoices ordered by (issued_on, number, invoice_id), credit notes by (issued_on,
  number, credit_note_id); keys sorted; the same data gives the same bytes but for ``generated_at``.
* Written atomically (``write_atomically``): a temporary file in the target's directory, flushed and
  renamed over the target, so a reader never sees half an export and a failure leaves none.

``build_export`` is pure; ``load_documents`` reads ClickHouse; ``write_atomically`` writes the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tollway.billing import credit_note_store
from tollway.billing.errors import BillingError
from tollway.warehouse.connection import check_identifier, query_rows

SCHEMA: Final = "tollway.accounting-export/v1"
SCHEMA_FILE: Final = "docs/schemas/accounting-export-v1.schema.json"
_MARGIN: Final = timedelta(days=2)  # issue dates are local: finalized_at may be a day either side


class ExportError(BillingError):
    """An export that cannot be written (bad --out, bad dates); nothing was written."""


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def issued_on(document: Mapping[str, Any]) -> str:
    """The invoice's issue date: its ``issued_on``, else the UTC date of ``finalized_at`` (or '')."""
    given = document.get("issued_on")
    if isinstance(given, str) and given:
        return given
    finalized = document.get("finalized_at") or document.get("generated_at")
    if not finalized:
        return ""
    return datetime.fromisoformat(str(finalized).replace("Z", "+00:00")).astimezone(UTC).date().isoformat()


def invoice_entry(document: Mapping[str, Any]) -> dict[str, Any]:
    """An invoice as the export carries it (docs/billing.md, "Accounting export")."""
    period = document.get("period") or {}
    terms = document.get("payment_terms_days")
    return {
        "invoice_id": str(document["invoice_id"]),
        "number": document.get("number"),
        "customer_id": str(document["customer_id"]),
        "plan": document.get("plan"),
        "currency": str(document["currency"]),
        "issued_on": issued_on(document),
        "due_on": document.get("due_on"),
        "payment_terms_days": terms if isinstance(terms, int) else None,
        "finalized_at": document.get("finalized_at"),
        "period": {
            "month": period.get("month"),
            "start": period.get("start"),
            "end": period.get("end"),
            "timezone": period.get("timezone"),
        },
        "seller": document.get("seller"),
        "buyer": document.get("buyer"),
        "lines": [
            {
                "line": number,
                "kind": line.get("kind"),
                "description": line.get("description", ""),
                "quantity": None if line.get("quantity") is None else str(line.get("quantity")),
                "amount": str(line.get("amount")),
            }
            for number, line in enumerate(document.get("lines", ()), start=1)
        ],
        "total": str(document["total"]),
    }


def credit_note_entry(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "credit_note_id": str(document["credit_note_id"]),
        "number": document.get("number"),
        "invoice_id": str(document["invoice_id"]),
        "invoice_number": document.get("invoice_number"),
        "customer_id": str(document["customer_id"]),
        "currency": str(document["currency"]),
        "issued_on": str(document["issued_on"]),
        "issued_at": document.get("issued_at"),
        "reason": str(document.get("reason", "")),
        "lines": [
            {
                "description": str(line.get("description", "")),
                "amount": str(line["amount"]),
                "invoice_line": line.get("invoice_line"),
            }
            for line in document.get("lines", ())
        ],
        "total": str(document["total"]),
    }


def build_export(
    invoices: Sequence[Mapping[str, Any]],
    credit_notes: Sequence[Mapping[str, Any]],
    *,
    generated_at: datetime,
    since: date | None = None,
    until: date | None = None,
    customer_id: str | None = None,
) -> dict[str, Any]:
    """The export of the finalized ``invoices`` and the ``credit_notes`` (documents as stored) that
    the filters select, in the documented order."""

    def selected(on: str, customer: str) -> bool:
        return (
            (since is None or on >= since.isoformat())
            and (until is None or on <= until.isoformat())
            and (customer_id is None or customer == customer_id)
        )

    entries = [
        invoice_entry(d)
        for d in invoices
        if d.get("status") == "finalized" and selected(issued_on(d), str(d.get("customer_id")))
    ]
    notes = [credit_note_entry(d) for d in credit_notes if selected(str(d.get("issued_on")), str(d.get("customer_id")))]
    entries.sort(key=lambda e: (e["issued_on"], e["number"] or "", e["invoice_id"]))
    notes.sort(key=lambda e: (e["issued_on"], e["number"] or "", e["credit_note_id"]))
    return {
        "schema": SCHEMA,
        "generated_at": _instant(generated_at),
        "filters": {
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
            "customer_id": customer_id,
        },
        "invoices": entries,
        "credit_notes": notes,
    }


def encode(export: Mapping[str, Any]) -> bytes:
    """The export as the file holds it: UTF-8 JSON, keys sorted, two-space indent, a final newline."""
    return (json.dumps(export, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()


def load_documents(
    client: Any,
    database: str,
    *,
    since: date | None = None,
    until: date | None = None,
    customer_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finalized invoice documents and the credit note documents that may be selected (a superset:
    ``build_export`` applies the filters exactly)."""
    conditions = ["status = 'finalized'"]
    parameters: dict[str, Any] = {"db": check_identifier(database)}
    if customer_id is not None:
        conditions.append("customer_id = {customer:String}")
        parameters["customer"] = customer_id
    if since is not None:
        conditions.append("finalized_at >= {since:DateTime64(6, 'UTC')}")
        parameters["since"] = _sql_instant(since - _MARGIN)
    if until is not None:
        conditions.append("finalized_at < {until:DateTime64(6, 'UTC')}")
        parameters["until"] = _sql_instant(until + _MARGIN + timedelta(days=1))
    rows = query_rows(
        client,
        "SELECT document FROM {db:Identifier}.invoices FINAL WHERE "  # noqa: S608 (fixed conditions; values are bound parameters)
        + " AND ".join(conditions)
        + " ORDER BY invoice_id",
        parameters,
    )
    invoices = [json.loads(r[0]) for r in rows]
    notes = credit_note_store.listed(client, database, customer_id=customer_id, since=since, until=until)
    return invoices, notes


def _sql_instant(day: date) -> str:
    return f"{day.isoformat()} 00:00:00"


def check_target(path: Path) -> None:
    """``ExportError`` unless ``path`` can be written atomically: its directory exists and is writable,
    and it is not itself a directory."""
    directory = path.parent
    if not directory.is_dir():
        raise ExportError(f"--out {path}: directory {directory} does not exist")
    if path.is_dir():
        raise ExportError(f"--out {path}: is a directory (give a file path, e.g. {path / 'export.json'})")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ExportError(f"--out {path}: directory {directory} is not writable")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: a temporary file in its directory, flushed to disk, renamed over
    ``path``. On any failure the temporary file is removed and ``path`` is as it was (``ExportError``)."""
    check_target(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"--out {path}: cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ExportError(f"--out {path}: cannot write: {exc.strerror or exc}") from None
