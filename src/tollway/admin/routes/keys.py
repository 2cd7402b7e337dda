"""API keys: list a customer's, create (the secret is in that response only), read, rotate, revoke.
Through ``tollway.auth.keyring``, like ``tollway keys``: the store keeps only the key's HMAC digest."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import Reader, Recorder, Services
from tollway.admin.identifiers import CustomerId, KeyId
from tollway.admin.instants import Instant
from tollway.admin.pagination import Page, PageRequest, next_link, page_request, paginate
from tollway.admin.problems import ProblemError, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.auth.records import KeyRecord, format_instant
from tollway.auth.views import record_json

router = APIRouter(tags=["api keys"])

MAX_OVERLAP_S = 30 * 86400


class ApiKey(BaseModel):
    """A key's record: never its secret."""

    key_id: str
    customer_id: str
    env: str
    state: Literal["active", "revoked", "expired"]
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    rotated_to: str | None
    last4: str


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    env: Literal["live", "test"] = "live"
    expires_at: Instant | None = Field(default=None, description="in the future; none: never expires")


class IssuedApiKey(BaseModel):
    key: ApiKey
    api_key: str = Field(description="the secret: shown in this response only, never again")
    replaces: ApiKey | None = Field(default=None, description="on rotation: the old key, expiring after the overlap")


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int = Field(default=86400, ge=0, le=MAX_OVERLAP_S, description="how long the old key works")


def to_api_key(record: KeyRecord, services: AdminServices) -> ApiKey:
    return ApiKey.model_validate(record_json(record, services.clock.now()))


def _sort_key(record: KeyRecord) -> tuple[str, str]:
    return (format_instant(record.created_at), record.key_id)


async def _find(services: AdminServices, key_id: str) -> KeyRecord:
    found = await services.keys.find(key_id)
    if found is None:
        raise not_found(f"API key {key_id!r}")
    return found[1]


@router.get(
    "/customers/{customer_id}/keys",
    response_model=Page[ApiKey],
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def list_keys(
    request: Request,
    customer_id: CustomerId,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
) -> Page[ApiKey]:
    """The customer's keys, oldest first, in every state."""
    await require_known(services, customer_id)
    records, cursor = paginate(await services.keyring.list(customer_id), _sort_key, page)
    return Page[ApiKey](items=[to_api_key(r, services) for r in records], next=next_link(request, cursor))


@router.post(
    "/customers/{customer_id}/keys",
    status_code=201,
    response_model=IssuedApiKey,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def create_key(
    customer_id: CustomerId, body: KeyCreate, response: Response, services: Services, record: Recorder
) -> IssuedApiKey:
    """Issue a key. The response is the only time its secret (`api_key`) is shown."""
    await require_known(services, customer_id)
    try:
        issued = await services.keyring.create(customer_id, body.env, body.expires_at)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "expires_at"]) from None
    key = to_api_key(issued.record, services)
    await record("api_key.create", "api_key", key.key_id, customer_id=customer_id, before=None, after=key.model_dump())
    response.headers["Location"] = f"/keys/{key.key_id}"
    return IssuedApiKey(key=key, api_key=issued.secret)


@router.get("/keys/{key_id}", response_model=ApiKey, responses=problem_responses(401, 403, 404, 422, 503))
async def get_key(key_id: KeyId, services: Services, _: Reader) -> ApiKey:
    return to_api_key(await _find(services, key_id), services)


@router.post("/keys/{key_id}/revoke", response_model=ApiKey, responses=problem_responses(401, 403, 404, 422, 503))
async def revoke_key(key_id: KeyId, services: Services, record: Recorder) -> ApiKey:
    """Revoke at once, in every running Tollway (within 1 s). Revoking a revoked key changes nothing."""
    before = to_api_key(await _find(services, key_id), services)
    after = to_api_key(await services.keyring.revoke(key_id), services)
    if after != before:
        await record(
            "api_key.revoke",
            "api_key",
            key_id,
            customer_id=after.customer_id,
            before=before.model_dump(),
            after=after.model_dump(),
        )
    return after


@router.post(
    "/keys/{key_id}/rotate",
    status_code=201,
    response_model=IssuedApiKey,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def rotate_key(
    key_id: KeyId, body: KeyRotate, response: Response, services: Services, record: Recorder
) -> IssuedApiKey:
    """Issue a successor (its secret shown once); the old key keeps working for the overlap."""
    before = to_api_key(await _find(services, key_id), services)
    if before.state != "active":
        raise ProblemError(409, "conflict", f"API key {key_id!r} is {before.state}; only an active key rotates.")
    rotation = await services.keyring.rotate(key_id, timedelta(seconds=body.overlap_seconds))
    new = to_api_key(rotation.new.record, services)
    old = to_api_key(rotation.old, services)
    customer = old.customer_id
    await record("api_key.create", "api_key", new.key_id, customer_id=customer, before=None, after=new.model_dump())
    await record(
        "api_key.rotate", "api_key", key_id, customer_id=customer, before=before.model_dump(), after=old.model_dump()
    )
    response.headers["Location"] = f"/keys/{new.key_id}"
    return IssuedApiKey(key=new, api_key=rotation.new.secret, replaces=old)
