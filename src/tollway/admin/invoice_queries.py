"""A customer's invoices as ``tollway bill`` stored them (``invoices FINAL``: the current write of
each); one invoice's document comes from ``tollway.billing.invoice_store.load_current``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tollway.billing.invoice_store import load_current
from tollway.warehouse.connection import check_identifier, query_rows

LIST_SQL: Final = """
SELECT invoice_id, period, toString(status), JSONExtractString(document, 'total') AS total_text, currency, plan_id,
       JSONExtractString(document, 'period', 'start') AS start_text,
       JSONExtractString(document, 'period', 'end') AS end_text
FROM {db:Identifier}.invoices FINAL
WHERE customer_id = {customer:String}
ORDER BY period_start DESC, invoice_id
LIMIT {limit:UInt32} OFFSET {offset:UInt64}
"""


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    invoice_id: str
    period: str
    status: str
    total: str
    currency: str
    plan_id: str
    period_start: str
    period_end: str


def list_invoices(
    client: Any, database: str, customer_id: str, *, offset: int = 0, limit: int = 50
) -> list[InvoiceSummary]:
    """The customer's invoices, newest period first."""
    parameters = {"db": check_identifier(database), "customer": customer_id, "offset": offset, "limit": limit}
    return [InvoiceSummary(*(str(value) for value in row)) for row in query_rows(client, LIST_SQL, parameters)]


def invoice_document(client: Any, database: str, customer_id: str, invoice_id: str) -> dict[str, Any] | None:
    """The invoice's JSON document, or None when there is none of that id for this customer."""
    stored = load_current(client, database, [invoice_id]).get(invoice_id)
    if stored is None or stored.document.get("customer_id") != customer_id:
        return None
    return stored.document
