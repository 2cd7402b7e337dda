"""``/webhooks/endpoints``: register, list, read, update, delete webhook endpoints and rotate their
signing secret (shown once, on create and on rotate). Through ``tollway.notifications.endpoint_store``,
like ``tollway webhooks``: the store keeps the secret only sealed. URLs are checked against SSRF rules
(``notifications.endpoints.validate_url``; ``TOLLWAY_WEBHOOKS_ALLOW_HTTP`` / ``_ALLOW_PRIVATE``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tollway.admin.dependencies import Reader, Recorder, Services
from tollway.admin.pagination import Page, PageRequest, decode_cursor, encode_cursor, next_link, page_request
from tollway.admin.problems import ProblemError, conflict, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.notifications.endpoint_store import (
    UNSET,
    EndpointConflict,
    EndpointNotFound,
    TooManyEndpoints,
)
from tollway.notifications.endpoints import (
    MAX_DESCRIPTION_CHARS,
    MAX_OVERLAP,
    MAX_URL_CHARS,
    Endpoint,
    EndpointError,
)
from tollway.notifications.events import EVENT_TYPES, EventType

router = APIRouter(tags=["webhook endpoints"])

ENDPOINT_ID: Final = r"^ep_[0-9a-f]{24}$"
EndpointId = Annotated[str, Path(pattern=ENDPOINT_ID, description="a webhook endpoint id, `ep_` and 24 hex digits")]
PROBLEMS: Final = problem_responses(401, 403, 404, 422, 503)

URL_FIELD: Final = (
    "an absolute https URL (http only with TOLLWAY_WEBHOOKS_ALLOW_HTTP), without user info or fragment; "
    "a loopback, private or link-local address is refused unless TOLLWAY_WEBHOOKS_ALLOW_PRIVATE"
)
TYPES_FIELD: Final = "the event types sent to it, each at most once; empty: every type"


class WebhookEndpoint(BaseModel):
    """An endpoint: never its secret."""

    endpoint_id: str
    url: str
    description: str
    event_types: list[str] = Field(description="the event types sent to it; empty: every type")
    enabled: bool
    state: Literal["enabled", "failing", "disabled"] = Field(
        description="failing: enabled, deliveries failing since failing_since; disabled: nothing is sent"
    )
    failing_since: str | None
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str
    updated_at: str
    secret_created_at: str
    previous_secret_expires_at: str | None = Field(
        description="after a rotation: until when the previous secret signs too; null without one"
    )


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description=URL_FIELD)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    event_types: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES), description=TYPES_FIELD)
    enabled: bool = True


class EndpointUpdate(BaseModel):
    """Fields given replace the stored ones. Enabling a disabled endpoint clears its failing state."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_CHARS, description=URL_FIELD)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS, description="null clears it")
    event_types: list[EventType] | None = Field(default=None, max_length=len(EVENT_TYPES), description=TYPES_FIELD)
    enabled: bool | None = None


class IssuedWebhookEndpoint(BaseModel):
    endpoint: WebhookEndpoint
    secret: str = Field(description="the signing secret (whsec_…): shown in this response only, never again")


class SecretRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int = Field(
        default=86400,
        ge=0,
        le=int(MAX_OVERLAP.total_seconds()),
        description="how long the previous secret keeps signing beside the new one (at most 7 days)",
    )


def to_view(endpoint: Endpoint, services: AdminServices) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(endpoint.view(services.clock.now()))


def _bad_input(exc: EndpointError) -> ProblemError:
    return invalid(str(exc), ["body", exc.field])


async def _find(services: AdminServices, endpoint_id: str) -> Endpoint:
    endpoint = await services.webhook_endpoints.get(endpoint_id)
    if endpoint is None:
        raise not_found(f"Webhook endpoint {endpoint_id!r}")
    return endpoint


@router.post(
    "/webhooks/endpoints",
    status_code=201,
    response_model=IssuedWebhookEndpoint,
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def create_endpoint(
    body: EndpointCreate, response: Response, services: Services, record: Recorder
) -> IssuedWebhookEndpoint:
    """Register an endpoint. The response is the only time its signing secret (`secret`) is shown."""
    try:
        issued = await services.webhook_endpoints.create(
            body.url, description=body.description, event_types=list(body.event_types), enabled=body.enabled
        )
    except EndpointError as exc:
        raise _bad_input(exc) from None
    except TooManyEndpoints as exc:
        raise conflict(f"{str(exc).capitalize()}.") from None
    view = to_view(issued.endpoint, services)
    await record(
        "webhook_endpoint.create",
        "webhook_endpoint",
        view.endpoint_id,
        customer_id=None,
        before=None,
        after=view.model_dump(),
    )
    response.headers["Location"] = f"/webhooks/endpoints/{view.endpoint_id}"
    return IssuedWebhookEndpoint(endpoint=view, secret=issued.secret)


@router.get(
    "/webhooks/endpoints",
    response_model=Page[WebhookEndpoint],
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def list_endpoints(
    request: Request, services: Services, _: Reader, page: Annotated[PageRequest, Depends(page_request)]
) -> Page[WebhookEndpoint]:
    """Every endpoint, oldest first, in every state (never a secret)."""
    after = decode_cursor(page.cursor) if page.cursor is not None else None
    if after is not None and len(after) != 2:
        raise ProblemError(400, "invalid-cursor", "The cursor is not one this API handed out; start from page 1.")
    endpoints, key = await services.webhook_endpoints.page(page.limit, after)
    cursor = encode_cursor(key) if key is not None else None
    return Page[WebhookEndpoint](items=[to_view(e, services) for e in endpoints], next=next_link(request, cursor))


@router.get("/webhooks/endpoints/{endpoint_id}", response_model=WebhookEndpoint, responses=PROBLEMS)
async def get_endpoint(endpoint_id: EndpointId, services: Services, _: Reader) -> WebhookEndpoint:
    return to_view(await _find(services, endpoint_id), services)


@router.patch(
    "/webhooks/endpoints/{endpoint_id}",
    response_model=WebhookEndpoint,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointUpdate, services: Services, record: Recorder
) -> WebhookEndpoint:
    """Change the URL, description, event types or enabled flag. A field given as null is refused, but
    `description` (null clears it)."""
    given = body.model_fields_set
    for name in ("url", "event_types", "enabled"):
        if name in given and getattr(body, name) is None:
            raise invalid(f"{name} may not be null; leave it out to keep it.", ["body", name])
    try:
        before, after = await services.webhook_endpoints.update(
            endpoint_id,
            url=body.url if body.url is not None else UNSET,
            description=(body.description or "") if "description" in given else UNSET,
            event_types=list(body.event_types) if body.event_types is not None else UNSET,
            enabled=body.enabled if body.enabled is not None else UNSET,
        )
    except EndpointError as exc:
        raise _bad_input(exc) from None
    except EndpointNotFound:
        raise not_found(f"Webhook endpoint {endpoint_id!r}") from None
    except EndpointConflict as exc:
        raise conflict(str(exc)) from None
    old, new = to_view(before, services), to_view(after, services)
    if after != before:
        await record(
            "webhook_endpoint.update",
            "webhook_endpoint",
            endpoint_id,
            customer_id=None,
            before=old.model_dump(),
            after=new.model_dump(),
        )
    return new


@router.delete("/webhooks/endpoints/{endpoint_id}", status_code=204, response_class=Response, responses=PROBLEMS)
async def delete_endpoint(endpoint_id: EndpointId, services: Services, record: Recorder) -> Response:
    """Delete the endpoint: nothing more is sent to it (a delivery in flight may still arrive)."""
    before = to_view(await _find(services, endpoint_id), services)
    if not await services.webhook_endpoints.delete(endpoint_id):
        raise not_found(f"Webhook endpoint {endpoint_id!r}")
    await record(
        "webhook_endpoint.delete",
        "webhook_endpoint",
        endpoint_id,
        customer_id=None,
        before=before.model_dump(),
        after=None,
    )
    return Response(status_code=204)


@router.post(
    "/webhooks/endpoints/{endpoint_id}/rotate-secret",
    response_model=IssuedWebhookEndpoint,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def rotate_secret(
    endpoint_id: EndpointId, services: Services, record: Recorder, body: SecretRotate | None = None
) -> IssuedWebhookEndpoint:
    """Issue a new signing secret (shown in this response only). The previous one keeps signing beside it
    for `overlap_seconds` (default 24 h, at most 7 days): deliveries carry both signatures, so receivers
    can switch in that time. A secret still overlapping from an earlier rotation stops signing now."""
    overlap = timedelta(seconds=(body or SecretRotate()).overlap_seconds)
    try:
        issued, before = await services.webhook_endpoints.rotate_secret(endpoint_id, overlap)
    except EndpointNotFound:
        raise not_found(f"Webhook endpoint {endpoint_id!r}") from None
    except EndpointConflict as exc:
        raise conflict(str(exc)) from None
    old, new = to_view(before, services), to_view(issued.endpoint, services)
    await record(
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint",
        endpoint_id,
        customer_id=None,
        before=old.model_dump(),
        after=new.model_dump(),
    )
    return IssuedWebhookEndpoint(endpoint=new, secret=issued.secret)
