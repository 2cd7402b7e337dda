"""Credit notes of a customer's finalized invoice: issue one, list them (docs/billing.md, "Credit notes";
the rules are ``tollway.billing.credit_notes``', the issuing ``tollway.billing.crediting``'s).

Amounts are decimal strings, never JSON numbers. ``Idempotency-Key`` makes a retry safe: the same key
and request answer 200 with the credit note issued the first time; the same key with another request
is a 409."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tollway.admin.dependencies import Reader, Recorder, Services
from tollway.admin.identifiers import CustomerId, InvoiceId
from tollway.admin.problems import ProblemError, conflict, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.billing import credit_note_store
from tollway.billing.credit_notes import (
    MAX_LINES,
    MAX_REASON,
    CreditNoteBusy,
    CreditNoteError,
    CreditRequest,
    CreditTooLarge,
    IdempotencyConflict,
    InvoiceNotFinalized,
    InvoiceNotFound,
    LineCredit,
    credited,
)
from tollway.billing.invoice_store import load_current
from tollway.billing.money import format_amount
from tollway.notifications.emitter import emit_after_commit
from tollway.notifications.lifecycle import credit_note_issued

router = APIRouter(tags=["invoices"])

AMOUNT_PATTERN: Final = r"^[0-9]{1,24}(\.[0-9]{1,24})?$"
AmountText = Annotated[
    str,
    StringConstraints(pattern=AMOUNT_PATTERN),
    Field(description='a positive decimal string with at most the currency\'s places, e.g. "6.65" (never a number)'),
]
PROBLEMS: Final = problem_responses(401, 403, 404, 409, 422, 503)


class CreditLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int = Field(ge=1, le=1_000_000, description="the invoice's line number (1 = its first line)")
    amount: AmountText | None = Field(default=None, description="part of the line; absent: what remains of it")


class CreditNoteIn(BaseModel):
    """Either `amount` or `lines`."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON, description="why; printed on the credit note")
    amount: AmountText | None = Field(default=None, description="credit this amount, not tied to a line")
    lines: list[CreditLineIn] | None = Field(default=None, min_length=1, max_length=MAX_LINES)


class CreditNoteLineOut(BaseModel):
    description: str
    amount: str
    invoice_line: int | None


class CreditNoteOut(BaseModel):
    credit_note_id: str
    number: str | None
    invoice_id: str
    invoice_number: str | None
    customer_id: str
    currency: str
    issued_on: str
    issued_at: str
    reason: str
    lines: list[CreditNoteLineOut]
    total: str


class CreditNotesOut(BaseModel):
    """An invoice's credit notes in the order they were issued, and what they leave of it."""

    items: list[CreditNoteOut]
    invoice_total: str
    credited: str
    net: str
    currency: str


async def _invoice(services: AdminServices, customer_id: str, invoice_id: str) -> dict[str, Any]:
    stored = await services.warehouse.run(lambda client, database: load_current(client, database, [invoice_id]))
    found = stored.get(invoice_id)
    if found is None or found.document.get("customer_id") != customer_id:
        raise not_found(f"Invoice {invoice_id!r} of customer {customer_id!r}")
    document: dict[str, Any] = found.document
    return document


def _problem(error: CreditNoteError) -> ProblemError:
    detail = str(error)
    if isinstance(error, InvoiceNotFound):
        return not_found(f"Invoice {error.invoice_id!r} of customer {error.customer_id!r}")
    if isinstance(error, InvoiceNotFinalized | IdempotencyConflict):
        return conflict(detail)
    if isinstance(error, CreditNoteBusy):
        return ProblemError(409, "conflict", detail, headers={"Retry-After": "1"})
    if isinstance(error, CreditTooLarge):
        return ProblemError(422, "credit-too-large", detail)
    return invalid(detail)  # InvalidCredit: a bad amount, line, reason or key


@router.post(
    "/customers/{customer_id}/invoices/{invoice_id}/credit-notes",
    status_code=201,
    response_model=CreditNoteOut,
    responses={200: {"description": "The same credit note again (a retry)", "model": CreditNoteOut}, **PROBLEMS},
)
async def issue_credit_note(
    customer_id: CustomerId,
    invoice_id: InvoiceId,
    body: CreditNoteIn,
    response: Response,
    services: Services,
    record: Recorder,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=r"^[\x21-\x7e]{1,255}$",
            description="a retry with the same key and request answers the credit note issued the first time",
        ),
    ] = None,
) -> CreditNoteOut:
    """Credit part of a finalized invoice (an amount, whole lines or parts of lines): 201 with the new
    credit note; 200 with the same one for a retry (same `Idempotency-Key` and request). 409 for a
    draft invoice, 422 (`credit-too-large`) when the credit notes would credit more than the invoice."""
    if (body.amount is None) == (body.lines is None):
        raise invalid("Give either amount or lines, not both and not neither.")
    issuer = services.credit_notes
    if issuer is None:
        raise ProblemError(503, "unavailable", "Credit notes cannot be issued by this server.")
    request = CreditRequest(
        invoice_id=invoice_id,
        reason=body.reason,
        amount=body.amount,
        lines=tuple(LineCredit(line.line, line.amount) for line in body.lines or ()),
        idempotency_key=idempotency_key,
    )
    try:
        issued = await issuer.issue(services.warehouse, request, now=services.clock.now(), customer_id=customer_id)
    except CreditNoteError as exc:
        raise _problem(exc) from None
    document = issued.document
    response.headers["Location"] = f"/customers/{customer_id}/invoices/{invoice_id}/credit-notes"
    await emit_after_commit(services.events, [credit_note_issued(document)])
    if issued.created:
        await record(
            "credit_note.issue",
            "credit_note",
            str(document["credit_note_id"]),
            customer_id=customer_id,
            before=None,
            after=document,
        )
    else:
        response.status_code = 200
    return CreditNoteOut.model_validate(document)


@router.get(
    "/customers/{customer_id}/invoices/{invoice_id}/credit-notes",
    response_model=CreditNotesOut,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_credit_notes(
    customer_id: CustomerId, invoice_id: InvoiceId, services: Services, _: Reader
) -> CreditNotesOut:
    """The invoice's credit notes, oldest first, with its total, what they credit and the net."""
    invoice = await _invoice(services, customer_id, invoice_id)
    notes = await services.warehouse.run(
        lambda client, database: credit_note_store.for_invoice(client, database, invoice_id)
    )
    currency = str(invoice["currency"])
    total = str(invoice["total"])
    done = credited(notes)
    return CreditNotesOut(
        items=[CreditNoteOut.model_validate(note) for note in notes],
        invoice_total=total,
        credited=format_amount(done, currency),
        net=format_amount(Decimal(total) - done, currency),
        currency=currency,
    )
