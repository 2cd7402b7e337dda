"""A customer's invoices: the list, one as JSON (the document ``tollway bill`` stored) and as the HTML
page ``tollway.billing.render.to_html`` makes (and its PDF, ``tollway.billing.pdf``: routes/page.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import Reader, Services
from tollway.admin.identifiers import CustomerId, InvoiceId
from tollway.admin.invoice_queries import invoice_document, list_invoices
from tollway.admin.pagination import Page, PageRequest, decode_offset, encode_cursor, next_link, page_request
from tollway.admin.problems import not_found, problem_responses
from tollway.admin.services import AdminServices

router = APIRouter(tags=["invoices"])


class InvoiceLinks(BaseModel):
    json_document: str
    html: str
    pdf: str


class InvoiceSummaryOut(BaseModel):
    invoice_id: str
    period: str
    status: str
    total: str
    currency: str
    plan_id: str
    period_start: str
    period_end: str
    links: InvoiceLinks


def invoice_links(customer_id: str, invoice_id: str) -> InvoiceLinks:
    base = f"/customers/{customer_id}/invoices/{invoice_id}"
    return InvoiceLinks(json_document=base, html=f"{base}/html", pdf=f"{base}/pdf")


async def load_document(services: AdminServices, customer_id: str, invoice_id: str) -> dict[str, Any]:
    document = await services.warehouse.run(
        lambda client, database: invoice_document(client, database, customer_id, invoice_id)
    )
    if document is None:
        raise not_found(f"Invoice {invoice_id!r} of customer {customer_id!r}")
    return document


@router.get(
    "/customers/{customer_id}/invoices",
    response_model=Page[InvoiceSummaryOut],
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def get_invoices(
    request: Request,
    customer_id: CustomerId,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
) -> Page[InvoiceSummaryOut]:
    """Newest period first, drafts and finalized alike."""
    await require_known(services, customer_id)
    offset = decode_offset(page.cursor)
    rows = await services.warehouse.run(
        lambda client, database: list_invoices(client, database, customer_id, offset=offset, limit=page.limit + 1)
    )
    items = [
        InvoiceSummaryOut(**asdict(row), links=invoice_links(customer_id, row.invoice_id)) for row in rows[: page.limit]
    ]
    cursor = encode_cursor([str(offset + page.limit)]) if len(rows) > page.limit else None
    return Page[InvoiceSummaryOut](items=items, next=next_link(request, cursor))


@router.get(
    "/customers/{customer_id}/invoices/{invoice_id}",
    response_model=dict[str, Any],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_invoice(customer_id: CustomerId, invoice_id: InvoiceId, services: Services, _: Reader) -> dict[str, Any]:
    """The invoice document: lines with breakdowns, parts per plan held, totals (docs/billing.md), and
    ``payment_status`` once the payment provider reported one (docs/payments.md; not part of the stored
    document, which never changes once finalized)."""
    document = await load_document(services, customer_id, invoice_id)
    if services.payments is not None:
        payment = await services.payments.get(customer_id, invoice_id)
        if payment is not None:
            document = {**document, "payment_status": payment.as_dict()}
    return document
