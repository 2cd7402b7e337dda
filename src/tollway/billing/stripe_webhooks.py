"""Stripe's signed webhooks, checked and read. Pure: no I/O, the time is given.

Stripe signs each delivery with the endpoint's secret (``whsec_…``) in the ``Stripe-Signature`` header::

    Stripe-Signature: t=1765100000,v1=5257a869…,v1=…,v0=…

``v1`` is the hex HMAC-SHA256 of ``"{t}.{raw body}"`` under the secret; there may be several (while a secret
is rolled, one per active secret) and any one matching is enough; other schemes (``v0``) are ignored. A
timestamp older than the tolerance (300 s, Stripe's default) is refused, so a captured delivery cannot be
replayed later. :func:`verify_signature` decides exactly as the ``stripe`` SDK's
``WebhookSignature.verify_header`` does (``tests/unit/billing/test_stripe_webhooks.py`` checks them against
each other), with the clock injected and stricter header parsing: a header the SDK would read leniently
(``t= 12``, ``t=1_000``) is refused.

:func:`parse_event` reads the event (after the signature passed): the invoice events Tollway acts on
(``invoice.paid``, ``invoice.payment_failed``, and ``invoice.voided``: an invoice no longer owed) as
:class:`InvoiceEvent`, any other type as :class:`OtherEvent` (acknowledged and ignored). Tollway's invoice and
customer come from the Stripe invoice's ``metadata`` (``tollway_invoice_id``, ``tollway_customer_id``), which the
Stripe push sets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Final, Literal

SIGNATURE_TOLERANCE_S: Final = 300
"""A signature's timestamp may be at most this many seconds old (Stripe's SDK default)."""
MAX_HEADER_BYTES: Final = 8192
MAX_SIGNATURES: Final = 64
MAX_BODY_BYTES: Final = 1 << 20
"""The largest event body read (Stripe's invoice events are far smaller; lines beyond 10 are not inlined)."""
SCHEME: Final = "v1"

_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_EVENT_ID: Final = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_STRIPE_ID: Final = re.compile(r"[A-Za-z0-9_]{1,250}")
_TOLLWAY_ID: Final = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")

PaymentStatus = Literal["paid", "payment_failed", "voided"]
STATUS_OF: Final[dict[str, PaymentStatus]] = {
    "invoice.paid": "paid",
    "invoice.payment_failed": "payment_failed",
    "invoice.voided": "voided",  # no longer owed: like paid, it ends the invoice's overdue
}
HANDLED: Final = tuple(STATUS_OF)


class WebhookRejected(Exception):
    """The delivery is refused; ``reason`` is a stable slug, ``detail`` says why (never the secret)."""

    reason = "bad-webhook"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadSignature(WebhookRejected):
    reason = "invalid-signature"


class MalformedEvent(WebhookRejected):
    reason = "malformed-event"


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    timestamp: int
    signatures: tuple[str, ...]  # the v1 ones, in order


def parse_signature_header(header: str) -> SignatureHeader:
    """``t=<unix seconds>`` and the ``v1=`` signatures of a ``Stripe-Signature`` header. Items are separated
    by commas, each ``key=value``; the first ``t`` counts (as in the SDK); unknown keys are ignored.
    :class:`BadSignature` when there is no usable timestamp or no ``v1`` signature."""
    if len(header) > MAX_HEADER_BYTES:
        raise BadSignature(f"the Stripe-Signature header is longer than {MAX_HEADER_BYTES} characters")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, separator, value = item.partition("=")
        if not separator:
            if key in ("t", SCHEME):  # the SDK refuses these too
                raise BadSignature(f"the Stripe-Signature header's {key} has no value")
            continue
        if key == "t" and timestamp is None:
            if not _TIMESTAMP.fullmatch(value):
                raise BadSignature("the Stripe-Signature header's timestamp t= is not a number of seconds")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise BadSignature("the Stripe-Signature header has no timestamp (t=)")
    if not signatures:
        raise BadSignature(f"the Stripe-Signature header has no {SCHEME} signature")
    if len(signatures) > MAX_SIGNATURES:
        raise BadSignature(f"the Stripe-Signature header has more than {MAX_SIGNATURES} signatures")
    return SignatureHeader(timestamp, tuple(signatures))


def signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature Stripe sends for ``payload`` at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header for ``payload``, as Stripe makes it (tests, and a replay by hand)."""
    return f"t={timestamp},{SCHEME}={signature(payload, secret, timestamp)}"


def verify_signature(
    payload: bytes, header: str | None, secret: str, now_s: float, tolerance_s: int = SIGNATURE_TOLERANCE_S
) -> int:
    """The signature's timestamp if ``header`` signs ``payload`` with ``secret`` and is at most
    ``tolerance_s`` old at ``now_s``; else :class:`BadSignature` saying why."""
    if not header:
        raise BadSignature("the request has no Stripe-Signature header")
    if not secret.strip():
        raise BadSignature("no webhook secret is configured")
    parsed = parse_signature_header(header)
    expected = signature(payload, secret, parsed.timestamp)
    if not any(hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")) for given in parsed.signatures):
        raise BadSignature("no v1 signature of the Stripe-Signature header matches the body and the endpoint secret")
    if tolerance_s and parsed.timestamp < now_s - tolerance_s:
        raise BadSignature(
            f"the signature's timestamp ({parsed.timestamp}) is more than {tolerance_s} s old: a replayed delivery?"
        )
    return parsed.timestamp


@dataclass(frozen=True, slots=True)
class InvoiceEvent:
    """``invoice.paid``, ``invoice.payment_failed`` or ``invoice.voided``; ``invoice_id`` / ``customer_id`` are
    Tollway's (from the Stripe invoice's metadata; ``None`` when absent: not an invoice Tollway pushed)."""

    event_id: str
    type: str
    status: PaymentStatus
    created: int  # unix seconds, Stripe's clock: orders two events of one invoice
    livemode: bool
    stripe_invoice_id: str
    invoice_id: str | None
    customer_id: str | None


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event of a type Tollway does not act on: acknowledged (200) and ignored."""

    event_id: str
    type: str


def parse_event(payload: bytes) -> InvoiceEvent | OtherEvent:
    """The event of a verified body; :class:`MalformedEvent` when it is not a Stripe event (or an invoice
    event without the invoice)."""
    if len(payload) > MAX_BODY_BYTES:
        raise MalformedEvent(f"the event is larger than {MAX_BODY_BYTES} bytes")
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedEvent(f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise MalformedEvent("the body is not a JSON object (a Stripe event)")
    event_id = event.get("id")
    kind = event.get("type")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise MalformedEvent("the event has no id of the form evt_…")
    if not isinstance(kind, str) or not 1 <= len(kind) <= 200:
        raise MalformedEvent("the event has no type")
    if kind not in STATUS_OF:
        return OtherEvent(event_id, kind)
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 10**11:
        raise MalformedEvent("the event's created is not a time in unix seconds")
    data = event.get("data")
    invoice = data.get("object") if isinstance(data, dict) else None
    if not isinstance(invoice, dict) or invoice.get("object") != "invoice":
        raise MalformedEvent(f"a {kind} event's data.object is not an invoice")
    stripe_invoice_id = invoice.get("id")
    if not isinstance(stripe_invoice_id, str) or not _STRIPE_ID.fullmatch(stripe_invoice_id):
        raise MalformedEvent("the invoice has no id")
    metadata = invoice.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise MalformedEvent("the invoice's metadata is not an object")
    return InvoiceEvent(
        event_id=event_id,
        type=kind,
        status=STATUS_OF[kind],
        created=created,
        livemode=event.get("livemode") is True,
        stripe_invoice_id=stripe_invoice_id,
        invoice_id=_tollway_id(metadata, "tollway_invoice_id"),
        customer_id=_tollway_id(metadata, "tollway_customer_id"),
    )


def _tollway_id(metadata: dict[str, object], key: str) -> str | None:
    value = metadata.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TOLLWAY_ID.fullmatch(value):
        raise MalformedEvent(f"the invoice's metadata.{key} is not a Tollway id")
    return value
