"""Webhook events and deliveries: list events (from ClickHouse), one event, the attempts of an endpoint,
replay one event or a time range (the same ``webhook-id``), send a test event to an endpoint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tollway.admin.dependencies import Reader, Services, Writer
from tollway.admin.identifiers import IDENTIFIER
from tollway.admin.instants import Instant
from tollway.admin.pagination import Page, PageRequest, decode_cursor, encode_cursor, next_link, page_request
from tollway.admin.problems import ProblemError, conflict, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.notifications.events import EVENT_TYPES, Event
from tollway.notifications.history import MAX_PAGE, EventQuery, get_event, query_attempts, query_events
from tollway.notifications.replay import DisabledEndpoint, UnknownEndpoint, WebhookActions

router = APIRouter(tags=["webhooks"])

EVENT_ID = r"^evt_[0-9a-f]{32}$"
ENDPOINT_ID = r"^[A-Za-z0-9_.:-]{1,128}$"
MAX_REPLAY = 10_000
EventId = Annotated[str, Path(pattern=EVENT_ID, description="an event id, `evt_` and 32 hex digits")]
EndpointId = Annotated[str, Path(pattern=ENDPOINT_ID, description="an endpoint id")]


class EventOut(BaseModel):
    id: str
    type: str
    timestamp: str
    customer_id: str
    data: dict[str, Any]


class AttemptOut(BaseModel):
    endpoint_id: str
    event_id: str
    attempt: int
    at: str
    status: int = Field(description="HTTP status; 0 when no response came (timeout, refused, not attempted)")
    outcome: str = Field(description="delivered, retry, failed (given up) or dropped (not attempted)")
    duration_ms: int
    error: str


class ReplayOne(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_id: str | None = Field(default=None, pattern=ENDPOINT_ID, description="only this endpoint")


class ReplayRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: Instant
    until: Instant
    customer_id: str | None = Field(default=None, pattern=IDENTIFIER, max_length=128)
    types: list[str] = Field(default_factory=list, max_length=len(EVENT_TYPES))
    endpoint_id: str | None = Field(default=None, pattern=ENDPOINT_ID)


class Replayed(BaseModel):
    events: int
    deliveries_queued: int


class TestSent(BaseModel):
    event_id: str


def _events_of(query: EventQuery) -> Callable[[Any, str], list[Event]]:
    return lambda client, database: query_events(client, database, query)


def _out(event: Event) -> EventOut:
    stamp = event.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return EventOut(id=event.id, type=event.type, timestamp=stamp, customer_id=event.customer_id, data=event.body())


def _types(types: list[str], where: str) -> tuple[str, ...]:
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise invalid(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}", (where, "type"))
    return tuple(types)


def _ms(at: datetime | None) -> int | None:
    return int(at.astimezone(UTC).timestamp() * 1000) if at is not None else None


def _actions(services: AdminServices) -> WebhookActions:
    actions = services.webhooks
    if actions is None:
        raise ProblemError(503, "webhooks-unavailable", "Webhook deliveries are not configured in this process.")
    return actions


def _keyset(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    key = decode_cursor(cursor)
    if len(key) != 2 or not key[0].isdigit() or len(key[0]) > 15:
        raise ProblemError(400, "invalid-cursor", "The cursor is not one this API handed out; start from page 1.")
    return int(key[0]), key[1]


@router.get("/webhooks/events", response_model=Page[EventOut], responses=problem_responses(400, 401, 403, 422, 503))
async def list_events(
    request: Request,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
    customer_id: Annotated[str | None, Query(pattern=IDENTIFIER, max_length=128)] = None,
    type: Annotated[list[str] | None, Query(max_length=len(EVENT_TYPES), description="event types (repeat)")] = None,
    since: Annotated[Instant | None, Query(description="from this instant (RFC 3339), inclusive")] = None,
    until: Annotated[Instant | None, Query(description="to this instant, exclusive")] = None,
) -> Page[EventOut]:
    """Events newest first, filtered by customer, types and a time range."""
    query = EventQuery(
        customer_id=customer_id,
        types=_types(type or [], "query"),
        since_ms=_ms(since),
        until_ms=_ms(until),
        limit=page.limit + 1,
        before=_keyset(page.cursor),
    )
    events = await services.warehouse.run(lambda client, database: query_events(client, database, query))
    items = [_out(e) for e in events[: page.limit]]
    last = events[page.limit - 1] if len(events) > page.limit else None
    cursor = encode_cursor([str(last.ts_ms), last.id]) if last is not None else None
    return Page[EventOut](items=items, next=next_link(request, cursor))


@router.get(
    "/webhooks/events/{event_id}", response_model=EventOut, responses=problem_responses(401, 403, 404, 422, 503)
)
async def get_one_event(event_id: EventId, services: Services, _: Reader) -> EventOut:
    event = await services.warehouse.run(lambda client, database: get_event(client, database, event_id))
    if event is None:
        raise not_found(f"Event {event_id!r}")
    return _out(event)


@router.get(
    "/webhooks/endpoints/{endpoint_id}/attempts",
    response_model=Page[AttemptOut],
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def list_attempts(
    request: Request,
    endpoint_id: EndpointId,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
    event_id: Annotated[str | None, Query(pattern=EVENT_ID)] = None,
) -> Page[AttemptOut]:
    """Delivery attempts to the endpoint, newest first (of one event with ``event_id``)."""
    before = _keyset(page.cursor)
    rows = await services.warehouse.run(
        lambda client, database: query_attempts(client, database, endpoint_id, event_id, page.limit + 1, before)
    )
    items = [AttemptOut(**r.as_json()) for r in rows[: page.limit]]
    last = rows[page.limit - 1] if len(rows) > page.limit else None
    cursor = encode_cursor([str(last.ts_ms), last.attempt_id]) if last is not None else None
    return Page[AttemptOut](items=items, next=next_link(request, cursor))


async def _replay(services: AdminServices, events: list[Event], endpoint_id: str | None) -> int:
    try:
        return await _actions(services).replay(events, endpoint_id)
    except UnknownEndpoint:
        raise not_found(f"Endpoint {endpoint_id!r}") from None
    except DisabledEndpoint as exc:
        raise conflict(str(exc)) from None


@router.post(
    "/webhooks/events/{event_id}/replay",
    status_code=202,
    response_model=Replayed,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def replay_event(event_id: EventId, services: Services, _: Writer, body: ReplayOne | None = None) -> Replayed:
    """Deliver the event again (same ``webhook-id``) to its endpoints, or to ``endpoint_id`` only."""
    event = await services.warehouse.run(lambda client, database: get_event(client, database, event_id))
    if event is None:
        raise not_found(f"Event {event_id!r}")
    endpoint = body.endpoint_id if body is not None else None
    return Replayed(events=1, deliveries_queued=await _replay(services, [event], endpoint))


@router.post(
    "/webhooks/replays",
    status_code=202,
    response_model=Replayed,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def replay_range(body: ReplayRange, services: Services, _: Writer) -> Replayed:
    """Deliver again every event in ``[since, until)`` (optionally of one customer, of some types), at
    most 10,000 per call: narrow the range for more."""
    if body.until <= body.since:
        raise invalid("until must be after since", ("body", "until"))
    types = _types(body.types, "body")
    events: list[Event] = []
    before: tuple[int, str] | None = None
    while len(events) <= MAX_REPLAY:
        query = EventQuery(body.customer_id, types, _ms(body.since), _ms(body.until), MAX_PAGE, before)
        chunk = await services.warehouse.run(_events_of(query))
        events += chunk
        if len(chunk) < MAX_PAGE:
            break
        before = (chunk[-1].ts_ms, chunk[-1].id)
    if len(events) > MAX_REPLAY:
        raise invalid(f"more than {MAX_REPLAY} events in the range; narrow it", ("body", "since"))
    return Replayed(events=len(events), deliveries_queued=await _replay(services, events, body.endpoint_id))


@router.post(
    "/webhooks/endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=TestSent,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def send_test(endpoint_id: EndpointId, services: Services, _: Writer) -> TestSent:
    """Queue a ``webhook.test`` event to the endpoint (whatever its filter)."""
    try:
        event = await _actions(services).send_test(endpoint_id)
    except UnknownEndpoint:
        raise not_found(f"Endpoint {endpoint_id!r}") from None
    except DisabledEndpoint as exc:
        raise conflict(str(exc)) from None
    return TestSent(event_id=event.id)
