"""``GET /audit``: every change made through this API, newest first."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tollway.admin.audit import STREAM_ID
from tollway.admin.dependencies import Reader, Services
from tollway.admin.pagination import Page, PageRequest, decode_cursor, encode_cursor, next_link, page_request
from tollway.admin.problems import ProblemError, problem_responses

router = APIRouter(tags=["audit"])


class AuditEntryOut(BaseModel):
    audit_id: str = Field(description="the entry's id, increasing with time")
    at: str
    actor: str = Field(description="the name of the admin credential that made the change")
    action: str = Field(description="e.g. api_key.create, subscription.plan_change")
    resource_type: str
    resource_id: str
    customer_id: str | None
    request_id: str
    before: dict[str, Any] | None = Field(description="the resource before the change; null when created")
    after: dict[str, Any] | None = Field(description="the resource after the change; null when deleted")


@router.get("/audit", response_model=Page[AuditEntryOut], responses=problem_responses(400, 401, 403, 422, 503))
async def list_audit(
    request: Request, services: Services, _: Reader, page: Annotated[PageRequest, Depends(page_request)]
) -> Page[AuditEntryOut]:
    """Who changed what and when, with the resource before and after; never a secret."""
    before_id = None
    if page.cursor is not None:
        key = decode_cursor(page.cursor)
        if len(key) != 1 or not STREAM_ID.fullmatch(key[0]):
            raise ProblemError(400, "invalid-cursor", "The cursor is not one this API handed out; start from page 1.")
        before_id = key[0]
    entries, last = await services.audit.newest_first(page.limit, before_id)
    cursor = encode_cursor([last]) if last is not None else None
    return Page[AuditEntryOut](items=[AuditEntryOut(**asdict(e)) for e in entries], next=next_link(request, cursor))
