"""The customer's usage and invoice page (HTML), the invoice pages it links to (and their PDFs), and
signed links that open them without an admin credential (for the customer)."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import BearerToken, Recorder, Services, authenticate
from tollway.admin.identifiers import CustomerId, InvoiceId
from tollway.admin.invoice_queries import list_invoices
from tollway.admin.problems import ProblemError, invalid, problem_responses
from tollway.admin.routes.invoices import load_document
from tollway.admin.services import AdminServices
from tollway.admin.usage_chart import DailyValue
from tollway.admin.usage_page import BalanceView, GrantLine, MeterChart, SpendCapView, UsagePage, render
from tollway.admin.usage_queries import daily_usage, meter_totals
from tollway.auth.records import format_instant
from tollway.billing.pdf import PdfUnavailable, to_pdf
from tollway.billing.render import to_html
from tollway.periods import load_timezone
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog, load_compiled_catalog
from tollway.subscriptions.errors import UnreadableSubscription
from tollway.usage.money_report import burn_per_day, money_parts

router = APIRouter(tags=["page"])

HTML_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/html": {}}, "description": "An HTML page"}}
MAX_DAILY_ROWS = 100_000
INVOICES_SHOWN = 24


async def page_access(
    customer_id: CustomerId,
    services: Services,
    bearer_token: BearerToken,
    token: Annotated[
        str | None, Query(max_length=128, description="a signed page link's token, instead of a credential")
    ] = None,
) -> str | None:
    """Who may see the page: an admin credential (any scope), or a page link signed for this customer.
    The link's token, to carry into the page's links; None for a credential."""
    if bearer_token is None and token is not None:
        if services.page_links.verify(customer_id, token, services.clock.now()):
            return token
        raise ProblemError(
            401,
            "invalid-page-link",
            "The page link is not valid for this customer, or it has expired; ask for a new one.",
            title="Invalid page link",
        )
    await authenticate(services, bearer_token)
    return None


PageToken = Annotated[str | None, Depends(page_access)]


def _units(services: AdminServices) -> dict[str, str]:
    if services.catalog_path is None:
        return {}
    try:
        catalog = load_catalog(services.catalog_path)
    except (CatalogError, OSError, UnicodeDecodeError):
        return {}
    return {name: str(getattr(meter.unit, "value", meter.unit)) for name, meter in catalog.meters.items()}


def _compiled(services: AdminServices) -> CompiledCatalog | None:
    if services.catalog_path is None:
        return None
    try:
        return load_compiled_catalog(services.catalog_path)
    except (CatalogError, OSError, UnicodeDecodeError, ValueError):
        return None


def _month_of(now: datetime) -> tuple[datetime, datetime]:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _local_days(start: datetime, end: datetime, timezone: str) -> list[str]:
    zone = load_timezone(timezone)
    first = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


async def build_page(services: AdminServices, customer_id: str, token: str | None) -> UsagePage:
    record = await services.customers.get(customer_id)
    try:
        subscription = await services.subscriptions.get(customer_id)
    except UnreadableSubscription:
        subscription = None
    now = services.clock.now()
    if subscription is not None:
        period = subscription.current_period(now)
        start, end, timezone = period.start, period.end, subscription.timezone
    else:
        (start, end), timezone = _month_of(now), "UTC"

    balance: dict[str, Any] | None = None
    spend_cap: dict[str, Any] | None = None
    compiled = _compiled(services) if subscription is not None and services.money is not None else None
    money = services.money
    if (
        subscription is not None
        and money is not None
        and compiled is not None
        and subscription.plan_id in compiled.plans
    ):
        balance, spend_cap = await money_parts(money, subscription, compiled, now)

    def query(client: Any, database: str) -> tuple[Any, Any, Any, Any]:
        totals = meter_totals(client, database, customer_id, start, end)
        rows = daily_usage(client, database, customer_id, start, end, timezone=timezone, limit=MAX_DAILY_ROWS)
        invoices = list_invoices(client, database, customer_id, limit=INVOICES_SHOWN)
        burned = burn_per_day(client, database, customer_id, start, end, timezone) if balance is not None else None
        return totals, rows, invoices, burned

    totals, rows, invoices, burned = await services.warehouse.run(query)
    per_day: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        per_day[(row.day, row.meter)] += Decimal(row.quantity)
    days = _local_days(start, end, timezone)
    units = _units(services)
    charts = [
        MeterChart(
            total.meter,
            units.get(total.meter, "units"),
            [DailyValue(day, per_day.get((day, total.meter), Decimal(0))) for day in days],
        )
        for total in totals
    ]
    zone = load_timezone(timezone)
    suffix = f"?token={token}" if token else ""
    return UsagePage(
        customer_id=customer_id,
        display_name=record.display_name if record else None,
        plan_id=subscription.plan_id if subscription else None,
        timezone=timezone,
        period_start=start.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        period_end=end.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        totals=totals,
        units=units,
        charts=charts,
        invoices=[
            (
                invoice,
                f"/customers/{customer_id}/invoices/{invoice.invoice_id}/html{suffix}",
                f"/customers/{customer_id}/invoices/{invoice.invoice_id}/pdf{suffix}",
            )
            for invoice in invoices
        ],
        generated_at=format_instant(now),
        balance=None if balance is None else _balance(balance, burned or []),
        spend_cap=None if spend_cap is None else SpendCapView(**spend_cap),
    )


def _balance(balance: dict[str, Any], burned: list[dict[str, str]]) -> BalanceView:
    return BalanceView(
        remaining=balance["remaining"],
        unit=balance["unit"],
        grants=[
            GrantLine(g["id"], g["status"], g["amount"], g["remaining"], g["expires_at"]) for g in balance["grants"]
        ],
        burn_per_day=[DailyValue(d["day"], Decimal(d["burned"])) for d in burned],
    )


@router.get(
    "/customers/{customer_id}/page",
    response_class=HTMLResponse,
    responses={**HTML_RESPONSE, **problem_responses(401, 403, 404, 422, 503)},
)
async def usage_page(customer_id: CustomerId, services: Services, token: PageToken) -> HTMLResponse:
    """This billing period's usage per meter, a chart of daily usage, and the invoices (HTML)."""
    await require_known(services, customer_id)
    return HTMLResponse(render(await build_page(services, customer_id, token)))


@router.get(
    "/customers/{customer_id}/invoices/{invoice_id}/html",
    response_class=HTMLResponse,
    responses={**HTML_RESPONSE, **problem_responses(401, 403, 404, 422, 503)},
)
async def invoice_page(
    customer_id: CustomerId, invoice_id: InvoiceId, services: Services, token: PageToken
) -> HTMLResponse:
    """The invoice as a standalone HTML page."""
    del token
    await require_known(services, customer_id)
    return HTMLResponse(to_html(await load_document(services, customer_id, invoice_id), _units(services)))


PDF_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The invoice as a PDF (A4), rendered from its HTML page",
    }
}


@router.get(
    "/customers/{customer_id}/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={**PDF_RESPONSE, **problem_responses(401, 403, 404, 422, 503)},
)
async def invoice_pdf(customer_id: CustomerId, invoice_id: InvoiceId, services: Services, token: PageToken) -> Response:
    """The invoice as a printable PDF: the HTML page rendered (A4), for a finance team to send."""
    del token
    await require_known(services, customer_id)
    document = await load_document(services, customer_id, invoice_id)
    units = _units(services)
    try:
        data = await asyncio.to_thread(to_pdf, document, units)
    except PdfUnavailable as exc:
        raise ProblemError(
            503, "pdf-unavailable", f"PDF invoices cannot be rendered here: {exc}", title="PDF unavailable"
        ) from None
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(document.get("number") or document["invoice_id"]))
    return Response(
        data, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}.pdf"'}
    )


class PageLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int | None = Field(default=None, ge=60, description="link lifetime (default 24 h, at most 30 days)")


class PageLink(BaseModel):
    url: str = Field(description="path and query of the page, to put behind this API's address")
    expires_at: str


@router.post(
    "/customers/{customer_id}/page-links",
    status_code=201,
    response_model=PageLink,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def create_page_link(
    customer_id: CustomerId, body: PageLinkCreate, services: Services, record: Recorder
) -> PageLink:
    """A link to the customer's page that works without a credential until it expires (audited)."""
    await require_known(services, customer_id)
    ttl = timedelta(seconds=body.ttl_seconds) if body.ttl_seconds is not None else services.page_link_ttl
    if ttl > services.page_link_max_ttl:
        raise invalid(
            f"ttl_seconds must be at most {int(services.page_link_max_ttl.total_seconds())}", ["body", "ttl_seconds"]
        )
    expires = (services.clock.now() + ttl).replace(microsecond=0)
    token = services.page_links.sign(customer_id, expires)
    link = PageLink(url=f"/customers/{customer_id}/page?token={token}", expires_at=format_instant(expires))
    await record(
        "page_link.create",
        "page_link",
        customer_id,
        customer_id=customer_id,
        before=None,
        after={"expires_at": link.expires_at},
    )
    return link
