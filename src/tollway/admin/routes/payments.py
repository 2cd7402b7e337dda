"""``POST /payments/stripe/webhook``: Stripe's signed ``invoice.paid`` / ``invoice.payment_failed`` (and
``invoice.voided``) events, recorded
on Tollway's invoices (docs/payments.md#payment-status-from-stripe-webhooks).

Not behind the admin bearer credential (Stripe cannot send one): every request must carry a valid
``Stripe-Signature`` for its exact body under ``TOLLWAY_STRIPE_WEBHOOK_SECRET``, at most 300 s old.

Answers (Stripe retries any non-2xx for up to three days, so a 2xx means "never send this again"):

* 400 ``invalid-signature`` / ``malformed-event``: nothing is recorded (Stripe retries, re-signing each attempt:
  a wrong secret or clock fixed meanwhile lets the retry through).
* 503 ``payments-not-configured`` (no secret set: Stripe keeps the events and retries until it is), or
  ``store-unavailable`` / ``warehouse-unavailable``: retried by Stripe; each step is idempotent.
* 200 ``applied``, ``stale`` (older than the status in force), ``duplicate`` (seen before), ``ignored``
  (an event type Tollway does not act on) or ``unmatched`` (no finalized Tollway invoice of that id and
  customer: recorded in the history with why, logged, changes nothing; Stripe's "resend" replays it after a
  fix, since unmatched events leave no once-marker).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from tollway.admin.dependencies import Services
from tollway.admin.problems import ProblemError, problem_responses
from tollway.admin.services import AdminServices
from tollway.billing.invoice_store import load_current
from tollway.billing.payment_status import HistoryRow, history_row, write_history
from tollway.billing.stripe_webhooks import (
    MAX_BODY_BYTES,
    InvoiceEvent,
    OtherEvent,
    WebhookRejected,
    parse_event,
    verify_signature,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["payments"])

UNMATCHED: Final = "unmatched"


class WebhookReceived(BaseModel):
    """What Tollway did with the event (Stripe shows this body in the event's delivery attempts)."""

    event_id: str
    type: str
    outcome: str = Field(description="applied, stale, duplicate, ignored or unmatched")
    invoice_id: str | None = None
    customer_id: str | None = None
    status: str | None = Field(default=None, description="paid, payment_failed or voided (invoice events)")
    overdue_changed: bool = Field(default=False, description="the customer's overdue flag changed at the gateway")
    detail: str | None = None


@router.post(
    "/payments/stripe/webhook",
    response_model=WebhookReceived,
    responses=problem_responses(400, 422, 503),
    openapi_extra={"security": []},
)
async def stripe_webhook(
    request: Request,
    services: Services,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookReceived:
    """Stripe's webhook endpoint: signed with the endpoint secret, no admin credential."""
    secret = services.stripe_webhook_secret
    if secret is None or services.payments is None:
        raise ProblemError(
            503,
            "payments-not-configured",
            "Stripe webhooks are not configured: set TOLLWAY_STRIPE_WEBHOOK_SECRET (the endpoint's whsec_ secret).",
            title="Payments not configured",
            headers={"Retry-After": "3600"},
        )
    body = await _bounded_body(request)
    try:
        verify_signature(body, stripe_signature, secret.get_secret_value(), services.clock.now().timestamp())
        event = parse_event(body)
    except WebhookRejected as exc:
        log.warning("Stripe webhook refused (%s): %s", exc.reason, exc.detail)
        title = "Invalid signature" if exc.reason == "invalid-signature" else "Malformed event"
        raise ProblemError(400, exc.reason, exc.detail, title=title) from None
    if isinstance(event, OtherEvent):
        log.info("Stripe event %s of type %s ignored", event.event_id, event.type)
        return WebhookReceived(event_id=event.event_id, type=event.type, outcome="ignored")
    return await _invoice_event(services, event)


async def _bounded_body(request: Request) -> bytes:
    """The raw body (what Stripe signed), at most ``MAX_BODY_BYTES``: this route takes no credential, so a
    larger body is refused as it streams in (413), never read whole."""
    too_large = ProblemError(
        413, "body-too-large", f"A Stripe event is at most {MAX_BODY_BYTES} bytes.", title="Body too large"
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


async def _invoice_event(services: AdminServices, event: InvoiceEvent) -> WebhookReceived:
    assert services.payments is not None
    now = services.clock.now()
    invoice_id, problem = await _match(services, event)
    if problem is not None:
        log.warning("Stripe event %s (%s) unmatched: %s", event.event_id, event.type, problem)
        row = history_row(
            event, UNMATCHED, now, invoice_id=event.invoice_id or "", customer_id=event.customer_id or "",
            detail=problem,
        )  # fmt: skip
        await _history(services, row)
        return WebhookReceived(
            event_id=event.event_id, type=event.type, outcome=UNMATCHED, status=event.status, detail=problem
        )
    assert invoice_id is not None
    customer_id = invoice_id[1]
    recorded = await services.payments.record(event, invoice_id[0], customer_id, now)
    await _history(services, history_row(event, recorded.first, now, invoice_id=invoice_id[0], customer_id=customer_id))
    log.info(
        "Stripe event %s: invoice %s of %s %s (%s)", event.event_id, invoice_id[0], customer_id, event.status,
        recorded.outcome,
    )  # fmt: skip
    return WebhookReceived(
        event_id=event.event_id,
        type=event.type,
        outcome=recorded.outcome,
        invoice_id=invoice_id[0],
        customer_id=customer_id,
        status=event.status,
        overdue_changed=recorded.overdue_changed,
    )


async def _match(services: AdminServices, event: InvoiceEvent) -> tuple[tuple[str, str] | None, str | None]:
    """``((invoice id, customer id), None)`` for the finalized Tollway invoice the event names, else
    ``(None, why not)``."""
    if event.invoice_id is None:
        return None, (
            f"Stripe invoice {event.stripe_invoice_id} has no metadata.tollway_invoice_id: "
            "not an invoice Tollway pushed"
        )
    wanted = event.invoice_id
    stored = (await services.warehouse.run(lambda client, database: load_current(client, database, [wanted]))).get(
        wanted
    )
    if stored is None:
        return None, f"Tollway has no invoice {wanted!r}"
    if stored.status != "finalized":
        return None, f"invoice {wanted!r} is a {stored.status}, not finalized: only finalized invoices are collected"
    owner: Any = stored.document.get("customer_id")
    if not isinstance(owner, str) or not owner:
        return None, f"invoice {wanted!r} names no customer"
    if event.customer_id is not None and event.customer_id != owner:
        return None, (
            f"invoice {wanted!r} belongs to customer {owner!r}, not to {event.customer_id!r} "
            "(metadata.tollway_customer_id)"
        )
    return (wanted, owner), None


async def _history(services: AdminServices, row: HistoryRow) -> None:
    await services.warehouse.run(lambda client, database: write_history(client, database, [row]))
