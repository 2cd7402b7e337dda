"""Stripe invoice events as Stripe sends them (the shape of a real ``invoice.paid`` / ``invoice.payment_failed``
event, trimmed), signed as Stripe signs them, and finalized Tollway invoices for them to name."""

import json
from datetime import UTC, datetime
from typing import Any

from tollway.billing.stripe_webhooks import sign
from tollway.warehouse.connection import insert_json_rows

SECRET = "whsec_tollway_test_4f1c2a9e8b7d6c5a"


def invoice_event(
    event_id: str,
    kind: str,
    created: int,
    *,
    invoice_id: str | None,
    customer_id: str | None = None,
    stripe_invoice: str = "in_1QtestInvoice",
) -> bytes:
    metadata: dict[str, str] = {}
    if invoice_id is not None:
        metadata["tollway_invoice_id"] = invoice_id
    if customer_id is not None:
        metadata["tollway_customer_id"] = customer_id
    paid = kind == "invoice.paid"
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "data": {
            "object": {
                "id": stripe_invoice,
                "object": "invoice",
                "account_country": "US",
                "amount_due": 1200,
                "amount_paid": 1200 if paid else 0,
                "amount_remaining": 0 if paid else 1200,
                "attempt_count": 1,
                "attempted": True,
                "collection_method": "charge_automatically",
                "currency": "eur",
                "customer": "cus_Qtest",
                "livemode": False,
                "metadata": metadata,
                "number": "TW-0001",
                "paid": paid,
                "status": "paid" if paid else "open",
                "total": 1200,
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }
    return json.dumps(event, indent=2).encode()


def signed(body: bytes, at: int, secret: str = SECRET) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, at), "Content-Type": "application/json"}


def insert_invoice(client: Any, database: str, invoice_id: str, customer_id: str, status: str = "finalized") -> None:
    """A stored invoice row (the document trimmed to what the webhook and the admin API read)."""
    document = {"invoice_id": invoice_id, "customer_id": customer_id, "status": status, "total": "12.00"}
    row = {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "plan_id": "pro",
        "period": "2026-11",
        "period_start": "2026-11-01 00:00:00.000000",
        "period_end": "2026-12-01 00:00:00.000000",
        "timezone": "UTC",
        "currency": "EUR",
        "status": status,
        "total": "12.00",
        "generated_at": "2026-12-01 00:00:00.000000",
        "finalized_at": "2026-12-01 00:00:00.000000" if status == "finalized" else None,
        "document": json.dumps(document),
        "version": int(datetime.now(UTC).timestamp() * 1_000_000),
    }
    insert_json_rows(client, database, "invoices", json.dumps(row).encode() + b"\n")
