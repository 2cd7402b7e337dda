"""Push finalized invoices to Stripe with the official SDK (docs/payments.md).

For each finalized invoice whose push is not complete (``push_state``), in order:

1. the customer: the recorded Stripe id, else the customer Stripe holds with
   ``metadata.tollway_customer_id`` (search), else one created (idempotency key
   ``tollway:customer:<customer>:v1``); recorded;
2. the invoice: the recorded id, else the customer's invoice with ``metadata.tollway_invoice_id``
   (listed), else one created as a draft with ``auto_advance=False`` (``tollway:<invoice>:invoice:v1``);
   recorded;
3. while it is a draft: its items are listed, and each line without its item gets one
   (``tollway:<invoice>:line:<n>:v1``); an item whose amount differs from its line, or one that is no
   line of the invoice, stops the push of that invoice (reported, not finalized);
4. finalized (``tollway:<invoice>:finalize:v1``, with the configured ``auto_advance``); recorded as done.

Every create is keyed by Tollway's ids, and every object is looked for before it is created, so a
re-run after a crash at any point (``kill -9`` between Stripe's answer and the state write included)
neither duplicates nor skips anything, within Stripe's 24 hours of idempotency and beyond them.

A Stripe 4xx for one invoice (``InvalidRequestError``, ``IdempotencyError``, ...) is that invoice's
failure (``PushResult``, with Stripe's message and code) and the run goes on; a refused key (401, 403)
raises ``StripeKeyRefused`` and Stripe out of reach (network, 5xx, 429 after the SDK's retries)
``StripeUnreachable``: every other call would fail alike, so the run stops there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import stripe
from stripe import StripeClient

from tollway.billing.aggregate import format_instant
from tollway.payments.push_settings import StripePushSettings
from tollway.payments.push_state import FINALIZED, PushState
from tollway.payments.stripe_mapping import (
    CUSTOMER_ID_KEY,
    INVOICE_ID_KEY,
    LINE_KEY,
    InvoicePlan,
    NotPushable,
    PushOptions,
    plan_invoice,
)
from tollway.warehouse.connection import check_identifier, query_rows

Outcome = Literal["pushed", "already pushed", "failed"]
_PERIOD: Final = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


class StripeKeyRefused(Exception):
    """Stripe refused the API key (401) or its permissions (403): nothing can be pushed with it."""


class StripeUnreachable(Exception):
    """Stripe could not be reached or failed (network error, 5xx, 429) after the SDK's retries."""


@dataclass(frozen=True, slots=True)
class PushResult:
    """What happened to one invoice."""

    invoice_id: str
    customer_id: str
    outcome: Outcome
    stripe_invoice_id: str | None = None
    stripe_number: str | None = None
    message: str | None = None
    code: str | None = None


def stripe_client(settings: StripePushSettings) -> StripeClient:
    """The SDK's client for ``settings``. Raises ``ValueError`` without an API key."""
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise ValueError("no Stripe API key: set TOLLWAY_STRIPE_API_KEY (nothing was sent)")
    return StripeClient(
        settings.api_key.get_secret_value(),
        base_addresses={"api": settings.api_base} if settings.api_base else None,
        max_network_retries=settings.max_network_retries,
        http_client=stripe.HTTPXClient(),
    )


def finalized_documents(
    client: Any, database: str, *, customer_id: str | None = None, period: str | None = None
) -> list[dict[str, Any]]:
    """The documents of finalized invoices (of ``customer_id``, of the month ``period``), oldest period
    first. Raises ``ValueError`` for a malformed period."""
    if period is not None and not _PERIOD.fullmatch(period):
        raise ValueError(f"invalid --period {period!r}: expected YYYY-MM")
    rows = query_rows(
        client,
        "SELECT document FROM {db:Identifier}.invoices FINAL WHERE status = 'finalized' "
        "AND ({any_customer:Bool} OR customer_id = {customer:String}) "
        "AND ({any_period:Bool} OR period = {period:String}) ORDER BY period_start, invoice_id",
        {
            "db": check_identifier(database),
            "any_customer": customer_id is None,
            "customer": customer_id or "",
            "any_period": period is None,
            "period": period or "",
        },
    )
    return [json.loads(row[0]) for row in rows]


class StripePusher:
    """Pushes finalized invoice documents through ``client``, recording progress in ``state``."""

    def __init__(
        self,
        client: StripeClient,
        state: PushState,
        options: PushOptions,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._stripe = client.v1
        self._state = state
        self._options = options
        self._now = now

    async def push_all(self, documents: Sequence[dict[str, Any]]) -> list[PushResult]:
        """Push each document in order. Raises ``StripeKeyRefused`` or ``StripeUnreachable`` (the run
        stops; what was pushed before stands and is recorded)."""
        return [await self.push(document) for document in documents]

    async def push(self, document: dict[str, Any]) -> PushResult:
        invoice_id = str(document.get("invoice_id"))
        customer_id = str(document.get("customer_id"))
        try:
            plan = plan_invoice(document, self._options)
        except NotPushable as exc:
            return PushResult(invoice_id, customer_id, "failed", message=str(exc), code="not_pushable")
        state = await self._state.invoice(customer_id, invoice_id)
        if state.get("status") == FINALIZED:
            return PushResult(
                invoice_id, customer_id, "already pushed", state.get("invoice"), state.get("stripe_number") or None
            )
        try:
            return await self._push(plan, state)
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise StripeKeyRefused(f"Stripe refused the API key ({exc.http_status}): {_message(exc)}") from None
        except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
            raise StripeUnreachable(f"Stripe could not be reached or failed: {_message(exc)}") from None
        except stripe.StripeError as exc:
            return PushResult(
                invoice_id,
                customer_id,
                "failed",
                state.get("invoice"),
                message=f"Stripe answered {exc.http_status}: {_message(exc)}",
                code=_code(exc),
            )

    async def _push(self, plan: InvoicePlan, state: dict[str, str]) -> PushResult:
        customer = await self._customer(plan)
        recorded = state.get("invoice")
        if recorded:
            invoice = await self._stripe.invoices.retrieve_async(recorded)
        else:
            found = await self._find_invoice(customer, plan.invoice_id)
            invoice = found or await self._stripe.invoices.create_async(
                {**plan.invoice, "customer": customer}, {"idempotency_key": plan.invoice_key}
            )
            await self._state.record(plan.customer_id, plan.invoice_id, {"invoice": invoice.id})
        if invoice.status == "draft":
            refusal = await self._add_items(plan, customer, invoice.id)
            if refusal is not None:
                failed = PushResult(plan.invoice_id, plan.customer_id, "failed", invoice.id, message=refusal)
                return replace(failed, code="mismatch")
            invoice = await self._stripe.invoices.finalize_invoice_async(
                invoice.id, plan.finalize, {"idempotency_key": plan.finalize_key}
            )
        await self._state.record(
            plan.customer_id,
            plan.invoice_id,
            {
                "status": FINALIZED,
                "stripe_status": str(invoice.status or ""),
                "stripe_number": invoice.number or "",
                "pushed_at": format_instant(self._now()),
            },
        )
        return PushResult(plan.invoice_id, plan.customer_id, "pushed", invoice.id, invoice.number)

    async def _customer(self, plan: InvoicePlan) -> str:
        recorded = await self._state.customer(plan.customer_id)
        if recorded:
            return recorded
        query = f"metadata['{CUSTOMER_ID_KEY}']:'{_quote(plan.customer_id)}'"
        found = await self._stripe.customers.search_async({"query": query, "limit": 10})
        matches = sorted(
            (c for c in found.data if _metadata(c.metadata, CUSTOMER_ID_KEY) == plan.customer_id),
            key=lambda c: (c.created, c.id),
        )
        if matches:
            stripe_id = matches[0].id
        else:
            created = await self._stripe.customers.create_async(plan.customer, {"idempotency_key": plan.customer_key})
            stripe_id = created.id
        await self._state.set_customer(plan.customer_id, stripe_id)
        return stripe_id

    async def _find_invoice(self, customer: str, invoice_id: str) -> stripe.Invoice | None:
        page = await self._stripe.invoices.list_async({"customer": customer, "limit": 100})
        async for invoice in page.auto_paging_iter():
            if _metadata(invoice.metadata, INVOICE_ID_KEY) == invoice_id:
                return invoice
        return None

    async def _add_items(self, plan: InvoicePlan, customer: str, stripe_invoice: str) -> str | None:
        """Create the items the draft lacks; a refusal (why the invoice must not be finalized) or None."""
        existing: dict[int, stripe.InvoiceItem] = {}
        page = await self._stripe.invoice_items.list_async({"invoice": stripe_invoice, "limit": 100})
        async for item in page.auto_paging_iter():
            line = _metadata(item.metadata, LINE_KEY)
            if line is None or not line.isdigit() or not 1 <= int(line) <= len(plan.items):
                return f"Stripe invoice {stripe_invoice} has an item that is no line of {plan.invoice_id}: {item.id}"
            existing[int(line)] = item
        items: dict[str, str] = {}
        for planned in plan.items:
            found = existing.get(planned.line)
            item = (
                found
                if found is not None
                else await self._stripe.invoice_items.create_async(
                    {**planned.params, "customer": customer, "invoice": stripe_invoice},
                    {"idempotency_key": planned.idempotency_key},
                )
            )
            if item.amount != planned.amount:
                return (
                    f"Stripe item {item.id} of line {planned.line} has amount {item.amount}, the line "
                    f"{planned.amount} (minor units): not finalized"
                )
            items[f"item:{planned.line}"] = item.id
        if items:
            await self._state.record(plan.customer_id, plan.invoice_id, items)
        return None


def _metadata(metadata: Any, key: str) -> str | None:
    """A metadata value of a Stripe object (``UntypedStripeObject`` to the type checker), or None."""
    if metadata is None or key not in metadata:
        return None
    return str(metadata[key])


def _quote(value: str) -> str:
    """A value inside single quotes of Stripe's search query language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _message(exc: stripe.StripeError) -> str:
    return exc.user_message or type(exc).__name__


def _code(exc: stripe.StripeError) -> str | None:
    if exc.code:
        return str(exc.code)
    error = exc.error
    return None if error is None else getattr(error, "type", None)
