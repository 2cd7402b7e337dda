"""Invoice documents built by hand and stored as ``tollway bill`` stores them (one ``invoices`` row), for
the credit note and export tests: a finalized one carries the keys numbering adds at finalization
(``number``, ``issued_on``, ``due_on``, ``payment_terms_days``, ``seller``, ``buyer``)."""

import json
from typing import Any

from tollway.warehouse.connection import insert_json_rows


def invoice_document(
    invoice_id: str = "in_" + "a" * 24,
    customer_id: str = "acme",
    *,
    status: str = "finalized",
    total: str = "76.65",
    currency: str = "USD",
    number: str | None = "INV-2026-000042",
    issued_on: str = "2026-12-01",
    month: str = "2026-11",
) -> dict[str, Any]:
    """An invoice of 76.65 USD: platform 49.00, calls 21.00 and egress 6.65 (the line wrongly charged)."""
    document: dict[str, Any] = {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "status": status,
        "plan": "metered",
        "currency": currency,
        "period": {
            "month": month,
            "start": f"{month}-01T00:00:00Z",
            "end": "2026-12-01T00:00:00Z",
            "timezone": "UTC",
            "local_start": f"{month}-01T00:00:00+00:00",
            "local_end": "2026-12-01T00:00:00+00:00",
            "fraction": "1",
            "index": 0,
        },
        "plans": [],
        "lines": [
            {"kind": "charge", "charge_id": "platform", "description": "Platform", "quantity": None, "amount": "49.00"},
            {"kind": "charge", "charge_id": "calls", "description": "Calls", "quantity": "42", "amount": "21.00"},
            {"kind": "charge", "charge_id": "egress", "description": "Egress", "quantity": "6650", "amount": "6.65"},
        ],
        "total": total,
        "balance": None,
        "generated_at": "2026-12-01T08:00:00Z",
        "finalized_at": None if status != "finalized" else "2026-12-01T08:00:00Z",
    }
    if status == "finalized" and number is not None:
        document.update(
            {
                "number": number,
                "issued_on": issued_on,
                "due_on": "2026-12-31",
                "payment_terms_days": 30,
                "seller": {"name": "Tollway Ltd", "address": ["1 Main St", "Dublin"], "country": "IE"},
                "buyer": {"name": "Acme Corp", "email": "billing@acme.test"},
            }
        )
    return document


def store_invoice(client: Any, database: str, document: dict[str, Any], version: int = 1) -> None:
    """Write ``document`` as the current row of its invoice."""
    period = document["period"]
    row = {
        "invoice_id": document["invoice_id"],
        "customer_id": document["customer_id"],
        "plan_id": document["plan"],
        "period": period["month"],
        "period_start": period["start"].replace("T", " ").removesuffix("Z"),
        "period_end": period["end"].replace("T", " ").removesuffix("Z"),
        "timezone": period["timezone"],
        "currency": document["currency"],
        "status": document["status"],
        "total": document["total"],
        "generated_at": document["generated_at"].replace("T", " ").removesuffix("Z"),
        "finalized_at": None
        if document["finalized_at"] is None
        else document["finalized_at"].replace("T", " ").removesuffix("Z"),
        "document": json.dumps(document, sort_keys=True),
        "version": version,
    }
    insert_json_rows(client, database, "invoices", (json.dumps(row) + "\n").encode())
