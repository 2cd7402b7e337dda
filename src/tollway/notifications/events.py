"""The event model: what happened, to which customer, when, with a stable id (pure: no I/O).

Every event has a **deterministic id** derived from what it is about, never from when or where it was
noticed: a threshold crossing's id is (type, customer, policy, period start, threshold), an invoice's
finalization (type, invoice id), a key's revocation (type, key id). So a replay after a crash, a job run
twice or three processes racing past the same threshold all produce the same id, and the outbox's
once-marker (``notifications.keys.once_key``) turns them into one event. The id is ``evt_`` and the
first 32 hex digits of SHA-1 over the parts joined by ``|`` — SHA-1 because the limiter script computes
the same id with ``redis.sha1hex`` (an id, not a secret: collision resistance is all it needs).

In the outbox (one Redis stream per customer, ``notifications.keys.stream_key``) an event is one stream
entry with the fields ``id``, ``type``, ``ts`` (milliseconds since the epoch, UTC), ``customer`` ('' for
none) and ``data`` (a JSON object, the body documented per type in docs/notifications.md). Delivered, it
is the Standard Webhooks payload ``{"type": ..., "timestamp": RFC 3339, "data": {...}}`` with the
``webhook-id`` header set to the event id; ``data`` always carries ``customer_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

EventType = Literal[
    "quota.threshold_crossed",
    "limit.threshold_crossed",
    "balance.low",
    "balance.exhausted",
    "spend_cap.reached",
    "grant.expiring",
    "invoice.finalized",
    "invoice.adjusted",
    "credit_note.issued",
    "key.created",
    "key.revoked",
    "key.expiring",
    "subscription.changed",
    "endpoint.disabled",
    "budget.threshold_crossed",
    "webhook.test",
]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)
"""Every type an endpoint may filter on, in the order of docs/notifications.md."""

ID_PREFIX: Final = "evt_"
ID_HEX: Final = 32
MAX_DATA_BYTES: Final = 64 * 1024
"""An event body larger than this is a bug in its emitter: refused before it reaches the outbox."""


class EventError(ValueError):
    """An event that cannot be built or read (unknown type, bad id, body not a JSON object, too large)."""


def event_id(event_type: str, *parts: str | int) -> str:
    """The deterministic id of the event ``event_type`` about ``parts`` (customer, policy, period start,
    threshold, …): ``evt_`` + the first 32 hex digits of SHA-1 over ``type|part|part…``. The limiter
    script builds the same string and hashes it with ``redis.sha1hex``."""
    text = "|".join([event_type, *(str(p) for p in parts)])
    return ID_PREFIX + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:ID_HEX]


def threshold_event_id(event_type: str, customer_id: str, policy: str, period_start_ms: int, threshold: int) -> str:
    """The id of a crossing of ``threshold`` units of ``policy`` in the period (or window) starting at
    ``period_start_ms``: one event per crossing, whichever process saw it and however often it is replayed."""
    return event_id(event_type, customer_id, policy, period_start_ms, threshold)


def is_event_id(value: str) -> bool:
    rest = value[len(ID_PREFIX) :]
    return value.startswith(ID_PREFIX) and len(rest) == ID_HEX and all(c in "0123456789abcdef" for c in rest)


@dataclass(frozen=True, slots=True)
class Event:
    """One event. ``ts_ms``: when it happened (UTC milliseconds; for a crossing, the limiter's clock);
    ``customer_id``: '' for events about no customer (``endpoint.disabled``); ``data``: the body."""

    id: str
    type: str
    ts_ms: int
    customer_id: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise EventError(f"unknown event type {self.type!r}")
        if not is_event_id(self.id):
            raise EventError(f"event id {self.id!r} is not evt_ and 32 hex digits")
        if not isinstance(self.data, Mapping):
            raise EventError("an event's data is a JSON object")

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, UTC)

    def body(self) -> dict[str, Any]:
        """``data`` with ``customer_id`` (always present; '' for none)."""
        return {"customer_id": self.customer_id, **self.data}

    def payload(self) -> bytes:
        """The Standard Webhooks JSON body (compact, UTF-8): type, timestamp (RFC 3339, ms, Z), data."""
        stamp = self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json.dumps(
            {"type": self.type, "timestamp": stamp, "data": self.body()}, separators=(",", ":"), ensure_ascii=False
        ).encode()

    def stream_fields(self) -> dict[str, str]:
        """The outbox stream entry (``XADD … id <id> type <type> ts <ms> customer <id> data <json>``)."""
        data = json.dumps(dict(self.data), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        if len(data) > MAX_DATA_BYTES:
            raise EventError(f"event {self.id} ({self.type}) has a body of {len(data)} bytes")
        return {"id": self.id, "type": self.type, "ts": str(self.ts_ms), "customer": self.customer_id, "data": data}

    @classmethod
    def from_stream(cls, fields: Mapping[str, str]) -> Event:
        """Read an outbox entry back; EventError if it is not one (a corrupt entry is reported, not retried)."""
        try:
            data = json.loads(fields["data"])
            return cls(fields["id"], fields["type"], int(fields["ts"]), fields.get("customer", ""), data)
        except (KeyError, ValueError, TypeError) as exc:
            raise EventError(f"not an outbox entry: {exc}") from exc
