"""``GET /customers/{id}/usage``: usage per day, feature and meter over a time range, from ClickHouse."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import Reader, Services
from tollway.admin.identifiers import IDENTIFIER, CustomerId
from tollway.admin.instants import Instant
from tollway.admin.pagination import Page, PageRequest, decode_offset, encode_cursor, next_link, page_request
from tollway.admin.problems import invalid, problem_responses
from tollway.admin.usage_queries import daily_usage
from tollway.periods import load_timezone

router = APIRouter(tags=["usage"])

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=400)


class UsageDay(BaseModel):
    day: str = Field(description="the day (YYYY-MM-DD) in the requested timezone")
    feature: str
    meter: str
    requests: int = Field(description="admitted requests that carried the meter")
    quantity: str = Field(description="the meter's total over those requests, a decimal string")
    refused: int = Field(description="refused requests that carried the meter (never billed)")


@router.get(
    "/customers/{customer_id}/usage",
    response_model=Page[UsageDay],
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def get_usage(
    request: Request,
    customer_id: CustomerId,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
    start: Annotated[Instant | None, Query(alias="from", description="range start (default: `to` − 30 days)")] = None,
    end: Annotated[Instant | None, Query(alias="to", description="range end, exclusive (default: now)")] = None,
    feature: Annotated[str | None, Query(pattern=IDENTIFIER, max_length=128)] = None,
    meter: Annotated[str | None, Query(pattern=IDENTIFIER, max_length=128)] = None,
    timezone: Annotated[str, Query(min_length=1, max_length=64, description="IANA timezone of the days")] = "UTC",
) -> Page[UsageDay]:
    """Rows in (day, feature, meter) order; at most 400 days per query."""
    await require_known(services, customer_id)
    try:
        load_timezone(timezone)
    except ValueError as exc:
        raise invalid(str(exc), ["query", "timezone"]) from None
    until: datetime = end or services.clock.now()
    since: datetime = start or until - DEFAULT_RANGE
    if since >= until:
        raise invalid("`from` must be before `to`", ["query", "from"])
    if until - since > MAX_RANGE:
        raise invalid(f"a usage query covers at most {MAX_RANGE.days} days", ["query", "from"])
    offset = decode_offset(page.cursor)
    rows = await services.warehouse.run(
        lambda client, database: daily_usage(
            client,
            database,
            customer_id,
            since,
            until,
            timezone=timezone,
            feature=feature or "",
            meter=meter or "",
            offset=offset,
            limit=page.limit + 1,
        )
    )
    more = len(rows) > page.limit
    items = [UsageDay(**asdict(row)) for row in rows[: page.limit]]
    cursor = encode_cursor([str(offset + page.limit)]) if more else None
    return Page[UsageDay](items=items, next=next_link(request, cursor))
