"""The lifecycle events of a committed change, built from what was committed (pure: no I/O, no clock).

Each has the deterministic id of docs/notifications.md, derived from the change itself, so the code path
that committed it may emit it again (a job re-run, a retry after Redis failed) and the outbox's
once-marker keeps one event per change:

* ``key.created`` (key id), ``key.revoked`` (key id), ``key.expiring`` (key id, expires_at ms)
* ``subscription.changed`` (customer, change stamp ms): the start of a new subscription, or the
  effective time of a plan change (``PlanChange.at``)
* ``invoice.finalized`` (invoice id), ``invoice.adjusted`` (adjusted invoice id, adjusting invoice id)
* ``credit_note.issued`` (credit note id)
* ``grant.expiring`` (customer, grant id, expires ms)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tollway.auth.records import KeyRecord
from tollway.notifications.events import Event, event_id
from tollway.subscriptions.model import Subscription


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def rfc3339(value: datetime) -> str:
    """UTC, milliseconds, ``Z``: how event bodies write times."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_ms(value_ms: int) -> str:
    return rfc3339(datetime.fromtimestamp(value_ms / 1000, UTC))


def key_created(record: KeyRecord) -> Event:
    expires = None if record.expires_at is None else rfc3339(record.expires_at)
    return Event(
        event_id("key.created", record.key_id),
        "key.created",
        ms(record.created_at),
        record.customer_id,
        {"key_id": record.key_id, "env": record.env, "expires_at": expires},
    )


def key_revoked(record: KeyRecord) -> Event:
    """Of a revoked record (``revoked_at`` set)."""
    if record.revoked_at is None:
        raise ValueError(f"key {record.key_id} is not revoked")
    return Event(
        event_id("key.revoked", record.key_id),
        "key.revoked",
        ms(record.revoked_at),
        record.customer_id,
        {"key_id": record.key_id, "revoked_at": rfc3339(record.revoked_at)},
    )


def key_expiring(record: KeyRecord, now: datetime) -> Event:
    """Of a key with an expiry; one per (key, expiry): a rotation that moves it earlier is told again."""
    if record.expires_at is None:
        raise ValueError(f"key {record.key_id} never expires")
    return Event(
        event_id("key.expiring", record.key_id, ms(record.expires_at)),
        "key.expiring",
        ms(now),
        record.customer_id,
        {"key_id": record.key_id, "expires_at": rfc3339(record.expires_at)},
    )


def subscription_changed(previous: Subscription | None, current: Subscription, now: datetime) -> Event | None:
    """The event of writing ``current`` over ``previous`` (None when the plan did not change: a write of
    the same subscription, or of its overrides only)."""
    continued = previous is not None and previous.started_at == current.started_at
    if continued and previous is not None:
        if current.changes == previous.changes and current.plan_id == previous.plan_id:
            return None
        if not current.changes:
            return None  # not a plan change (an unreadable record replaced by the same plan)
        last = current.changes[-1]
        stamp, effective = last.at, last.at
        before: str | None = last.previous_plan_id
    else:
        stamp, effective = current.started_at, current.started_at
        before = previous.plan_id if previous is not None else None
    return Event(
        event_id("subscription.changed", current.customer_id, ms(stamp)),
        "subscription.changed",
        ms(now),
        current.customer_id,
        {"plan": current.plan_id, "previous_plan": before, "effective_at": rfc3339(effective)},
    )


def _instant_ms(text: str) -> int:
    return ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def invoice_events(document: Mapping[str, Any]) -> list[Event]:
    """The events of a stored invoice document: none for a draft; for a finalized one
    ``invoice.finalized`` and one ``invoice.adjusted`` per earlier invoice its adjustment lines adjust
    (the amounts of its parts summed)."""
    if document.get("status") != "finalized":
        return []
    invoice = str(document["invoice_id"])
    customer = str(document["customer_id"])
    currency = str(document["currency"])
    finalized_at = document.get("finalized_at") or document.get("generated_at")
    at_ms = _instant_ms(str(finalized_at)) if finalized_at else 0
    period = document["period"]
    events = [
        Event(
            event_id("invoice.finalized", invoice),
            "invoice.finalized",
            at_ms,
            customer,
            {
                "invoice_id": invoice,
                "period_start": rfc3339_ms(_instant_ms(str(period["start"]))),
                "period_end": rfc3339_ms(_instant_ms(str(period["end"]))),
                "currency": currency,
                "total": str(document["total"]),
                # The invoice number and due date, once finalization gives them (billing.finalization).
                **{key: str(document[key]) for key in ("number", "due_on") if document.get(key)},
            },
        )
    ]
    adjusted: dict[str, Decimal] = {}
    for line in document.get("lines", ()):
        if line.get("kind") != "adjustment" or not line.get("adjusts"):
            continue
        try:
            amount = Decimal(str(line["amount"]))
        except (InvalidOperation, KeyError):
            continue
        adjusted[str(line["adjusts"])] = adjusted.get(str(line["adjusts"]), Decimal(0)) + amount
    for earlier, amount in sorted(adjusted.items()):
        events.append(
            Event(
                event_id("invoice.adjusted", earlier, invoice),
                "invoice.adjusted",
                at_ms,
                customer,
                {"invoice_id": earlier, "adjusted_by": invoice, "amount": str(amount), "currency": currency},
            )
        )
    return events


def credit_note_issued(document: Mapping[str, Any]) -> Event:
    """The event of an issued credit note (its stored document, ``billing.credit_notes``)."""
    note = str(document["credit_note_id"])
    return Event(
        event_id("credit_note.issued", note),
        "credit_note.issued",
        _instant_ms(str(document["issued_at"])),
        str(document["customer_id"]),
        {
            "credit_note_id": note,
            "number": document.get("number"),
            "invoice_id": str(document["invoice_id"]),
            "invoice_number": document.get("invoice_number"),
            "currency": str(document["currency"]),
            "total": str(document["total"]),
            "reason": str(document["reason"]),
        },
    )


def grant_expiring(
    customer_id: str, grant_id: str, unit: str, remaining: Decimal, expires_ms: int, now: datetime
) -> Event:
    return Event(
        event_id("grant.expiring", customer_id, grant_id, expires_ms),
        "grant.expiring",
        ms(now),
        customer_id,
        {
            "grant_id": grant_id,
            "unit": unit,
            "remaining": _plain(remaining),
            "expires_at": rfc3339_ms(expires_ms),
        },
    )


def _plain(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"
