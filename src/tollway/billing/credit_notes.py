"""Credit notes: the correction of a finalized invoice (pure: no I/O, no clock).

A finalized invoice never changes (``billing.invoice_store``); a mistake found afterwards is corrected
the way accountants do, by a **credit note** that references the invoice and credits part of it back.
Rules (docs/billing.md, "Credit notes"):

* Only a finalized invoice can be credited (a draft is corrected by re-running ``tollway bill``).
* A credit note credits whole lines of the invoice (``line 3``: what remains of line 3's amount), part
  of a line (``line 3 = 1.50``) or an amount (``6.65``, not tied to a line); its total is the sum of its
  lines. Amounts are positive ``Decimal`` with at most the invoice currency's places.
* The credit notes of an invoice never credit more than the invoice total, nor more of one line than
  that line's amount: a credit note larger than what remains is refused, and nothing is written.
* Its id is derived from the invoice id and the caller's idempotency key (``credit_note_id``), so the
  same request issued twice is one credit note; the same key with a different request is refused.
* Its number (``CN-2026-000007``) is assigned when it is issued (``billing.numbering``, series ``CN``).

The document (``CreditNote.as_dict``, stored in ClickHouse ``credit_notes.document``)::

    {"credit_note_id", "number", "invoice_id", "invoice_number", "customer_id", "currency", "issued_on",
     "issued_at", "reason", "lines": [{"description", "amount", "invoice_line"}], "total"}

amounts as strings with the currency's places, ``invoice_line`` the credited line's number (1 = the
invoice's first line) or null for an amount credit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tollway.billing.errors import BillingError, UnknownCurrency
from tollway.billing.money import format_amount, quantum

SERIES: Final = "CN"
"""The numbering series of credit notes (``billing.numbering``): ``CN-2026-000001``."""

CREDIT_NOTE_ID: Final = re.compile(r"^cn_[0-9a-f]{24}$")
IDEMPOTENCY_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")
"""Printable ASCII without spaces, 1 to 255 characters (what ``Idempotency-Key`` headers carry)."""
MAX_REASON: Final = 500
MAX_LINES: Final = 100
_AMOUNT: Final = re.compile(r"^[0-9]{1,24}(\.[0-9]{1,24})?$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class CreditNoteError(BillingError):
    """A credit note that cannot be issued; the message says why (one line)."""


class InvoiceNotFound(CreditNoteError):
    """No invoice of that id (for that customer)."""

    def __init__(self, invoice_id: str, customer_id: str | None = None) -> None:
        whose = "" if customer_id is None else f" of customer {customer_id!r}"
        super().__init__(f"unknown invoice {invoice_id!r}{whose}")
        self.invoice_id = invoice_id
        self.customer_id = customer_id


class InvoiceNotFinalized(CreditNoteError):
    """The invoice is a draft: correct it by billing its period again."""


class InvalidCredit(CreditNoteError):
    """A malformed request: an amount that is not a positive amount of the currency, an unknown line,
    a missing reason, a bad idempotency key."""


class CreditTooLarge(CreditNoteError):
    """More than what remains to credit of the invoice (or of a line)."""


class IdempotencyConflict(CreditNoteError):
    """The idempotency key was used before for a different credit note."""


class CreditNoteBusy(CreditNoteError):
    """Another credit note of the same invoice is being issued and did not finish in time."""


@dataclass(frozen=True, slots=True)
class LineCredit:
    """Credit line ``line`` of the invoice (1 = its first): what remains of it, or ``amount`` (text)."""

    line: int
    amount: str | None = None


@dataclass(frozen=True, slots=True)
class CreditRequest:
    """What a caller asks for: either ``amount`` (text) or ``lines``, with a reason."""

    invoice_id: str
    reason: str
    amount: str | None = None
    lines: tuple[LineCredit, ...] = ()
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CreditLine:
    description: str
    amount: Decimal
    invoice_line: int | None = None


@dataclass(frozen=True, slots=True)
class CreditNote:
    credit_note_id: str
    invoice_id: str
    customer_id: str
    currency: str
    issued_on: date
    issued_at: datetime
    reason: str
    lines: tuple[CreditLine, ...]
    number: str | None = None
    invoice_number: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "credit_note_id": self.credit_note_id,
            "number": self.number,
            "invoice_id": self.invoice_id,
            "invoice_number": self.invoice_number,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "issued_on": self.issued_on.isoformat(),
            "issued_at": _instant(self.issued_at),
            "reason": self.reason,
            "lines": [
                {
                    "description": line.description,
                    "amount": format_amount(line.amount, self.currency),
                    "invoice_line": line.invoice_line,
                }
                for line in self.lines
            ],
            "total": format_amount(self.total, self.currency),
        }


def _instant(value: datetime) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def credit_note_id(invoice_id: str, idempotency_key: str) -> str:
    """The id of the credit note of ``invoice_id`` asked for with ``idempotency_key``: ``cn_`` and 24 hex
    digits of SHA-256 over both (the same request twice is the same credit note)."""
    digest = hashlib.sha256(f"{invoice_id}|{idempotency_key}".encode()).hexdigest()
    return "cn_" + digest[:24]


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidCredit("the idempotency key must be 1 to 255 printable ASCII characters without spaces")
    return key


def check_reason(reason: str) -> str:
    """The reason, stripped; ``InvalidCredit`` if empty, too long or with control characters."""
    text = reason.strip()
    if not text:
        raise InvalidCredit("a credit note needs a reason (--reason TEXT)")
    if len(text) > MAX_REASON:
        raise InvalidCredit(f"the reason has {len(text)} characters: at most {MAX_REASON}")
    if _CONTROL.search(text):
        raise InvalidCredit("the reason may not contain control characters (newlines, tabs, ...)")
    return text


def parse_amount(text: str, currency: str, what: str = "amount") -> Decimal:
    """A positive amount of ``currency`` written as plain decimal text (``"6.65"``): at most the
    currency's places (``"6.650"`` is 6.65; ``"6.655"`` in USD is refused). ``InvalidCredit`` else."""
    if not isinstance(text, str) or not _AMOUNT.fullmatch(text):
        raise InvalidCredit(f"{what} {text!r} is not an amount: write digits with an optional '.' (e.g. 6.65)")
    try:
        step = quantum(currency)
    except UnknownCurrency as exc:
        raise InvalidCredit(str(exc)) from None
    value = Decimal(text)
    try:
        exact = value.quantize(step)
    except InvalidOperation:
        raise InvalidCredit(f"{what} {text} is too large") from None
    if exact != value:
        places = -step.as_tuple().exponent  # type: ignore[operator]
        raise InvalidCredit(f"{what} {text} has more decimal places than {currency} has ({places})")
    if exact <= 0:
        raise InvalidCredit(f"{what} {text} is not positive: a credit note credits an amount above zero")
    return exact


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def credited(notes: Sequence[Mapping[str, Any]]) -> Decimal:
    """What ``notes`` (credit note documents) credit together."""
    return sum((_decimal(note.get("total", "0")) for note in notes), Decimal(0))


def credited_per_line(notes: Sequence[Mapping[str, Any]]) -> dict[int, Decimal]:
    """Invoice line number → what ``notes`` credit of it."""
    found: dict[int, Decimal] = {}
    for note in notes:
        for line in note.get("lines", ()):
            number = line.get("invoice_line")
            if isinstance(number, int):
                found[number] = found.get(number, Decimal(0)) + _decimal(line.get("amount", "0"))
    return found


def remaining(invoice: Mapping[str, Any], notes: Sequence[Mapping[str, Any]]) -> Decimal:
    """What is left to credit of ``invoice`` after ``notes``: its total less what they credit."""
    return _decimal(invoice.get("total", "0")) - credited(notes)


def draft_credit_note(
    invoice: Mapping[str, Any],
    earlier: Sequence[Mapping[str, Any]],
    request: CreditRequest,
    *,
    credit_note_id: str,
    issued_at: datetime,
    issued_on: date,
) -> CreditNote:
    """The credit note ``request`` asks for on ``invoice`` (its stored document), given the ``earlier``
    credit notes of that invoice; its number is not assigned yet. Raises ``InvoiceNotFinalized``,
    ``InvalidCredit`` or ``CreditTooLarge``, and builds nothing on any of them."""
    invoice_id = str(invoice.get("invoice_id"))
    if invoice.get("status") != "finalized":
        raise InvoiceNotFinalized(
            f"invoice {invoice_id} is a draft: only a finalized invoice is credited "
            "(correct a draft by billing its period again)"
        )
    currency = str(invoice.get("currency"))
    reason = check_reason(request.reason)
    if (request.amount is None) == (not request.lines):
        raise InvalidCredit("give either an amount or invoice lines to credit, not both and not neither")
    if len(request.lines) > MAX_LINES:
        raise InvalidCredit(f"{len(request.lines)} lines: a credit note credits at most {MAX_LINES}")
    lines: list[CreditLine] = []
    if request.amount is not None:
        lines.append(CreditLine(reason, parse_amount(request.amount, currency)))
    invoice_lines = list(invoice.get("lines", ()))
    already = credited_per_line(earlier)
    seen: set[int] = set()
    for item in request.lines:
        number = item.line
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(invoice_lines):
            raise InvalidCredit(f"invoice {invoice_id} has no line {number} (its lines are 1 to {len(invoice_lines)})")
        if number in seen:
            raise InvalidCredit(f"line {number} is given twice")
        seen.add(number)
        line = invoice_lines[number - 1]
        line_amount = _decimal(line.get("amount", "0"))
        left = line_amount - already.get(number, Decimal(0))
        if line_amount <= 0:
            raise InvalidCredit(
                f"line {number} of invoice {invoice_id} amounts to {line.get('amount')}: nothing to credit"
            )
        what = f"line {number}"
        amount = left if item.amount is None else parse_amount(item.amount, currency, f"the amount of {what}")
        if amount <= 0 or amount > left:
            raise CreditTooLarge(
                f"{what} of invoice {invoice_id} has {format_amount(max(left, Decimal(0)), currency)} {currency} "
                f"left to credit (of {format_amount(line_amount, currency)}): "
                + ("nothing remains" if left <= 0 else f"{format_amount(amount, currency)} is more")
            )
        lines.append(CreditLine(f"line {number}: {line.get('description', '')}", amount, number))
    note = CreditNote(
        credit_note_id=credit_note_id,
        invoice_id=invoice_id,
        customer_id=str(invoice.get("customer_id")),
        currency=currency,
        issued_on=issued_on,
        issued_at=issued_at,
        reason=reason,
        lines=tuple(lines),
        invoice_number=None if invoice.get("number") is None else str(invoice.get("number")),
    )
    left = remaining(invoice, earlier)
    if note.total > left:
        total = _decimal(invoice.get("total", "0"))
        raise CreditTooLarge(
            f"a credit note of {format_amount(note.total, currency)} {currency} is larger than what remains "
            f"to credit of invoice {invoice_id}: {format_amount(max(left, Decimal(0)), currency)} {currency} "
            f"(total {format_amount(total, currency)}, credited {format_amount(credited(earlier), currency)})"
        )
    return note


def is_retry_of(stored: Mapping[str, Any], request: CreditRequest) -> bool:
    """Whether the stored credit note is what ``request`` asks for (the same request sent again: same
    reason, same amount or same lines with the same explicit amounts)."""
    currency = str(stored.get("currency"))
    lines = list(stored.get("lines", ()))
    try:
        if check_reason(request.reason) != stored.get("reason"):
            return False
        if request.amount is not None:
            if request.lines or len(lines) != 1 or lines[0].get("invoice_line") is not None:
                return False
            return _decimal(lines[0].get("amount")) == parse_amount(request.amount, currency)
        if len(lines) != len(request.lines):
            return False
        for item, line in zip(request.lines, lines, strict=True):
            if line.get("invoice_line") != item.line:
                return False
            if item.amount is not None and _decimal(line.get("amount")) != parse_amount(item.amount, currency):
                return False
    except InvalidCredit:
        return False
    return True
