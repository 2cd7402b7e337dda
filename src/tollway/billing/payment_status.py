"""The payment status of finalized invoices, as the payment provider reports it (Stripe's ``invoice.paid``,
``invoice.payment_failed`` and ``invoice.voided`` webhooks: ``billing.stripe_webhooks``), and the overdue flag
it sets on the customer's subscription (docs/payments.md).

A finalized invoice's document never changes: its payment status lives beside it.

Redis (``{p}`` the prefix, ``{c}`` the customer id as a Redis Cluster hash tag: one slot, one script)::

    {p}pay:{c}                 hash    invoice id -> the status in force (JSON: status, event_id, created, …)
    {p}pay-ev:{c}:<event id>   string  the event's once-marker (applied | stale), kept MARKER_TTL_S
    {p}subscription:{c}        hash    field ``overdue``: JSON list of the invoice ids whose payment failed and
                                       is not made yet (absent: none); read with the subscription, so the
                                       gateway knows at no extra cost (``Subscription.overdue``)

One script applies an event atomically: a redelivered event (same id) changes nothing; an event older than the
status in force (Stripe's ``created``, seconds; at the same second ``paid`` or ``voided`` wins over
``payment_failed``: Stripe never retries a paid or voided invoice) is recorded as ``stale`` and changes nothing;
else the status is replaced and the invoice joins (``payment_failed``) or leaves (``paid``, ``voided``) the
overdue list. When the list changed, the customer is announced on the subscription change channel,
so every gateway process evicts its cached subscription at once.

ClickHouse ``payment_events`` (migration 0012) keeps the history: one row per event id, written after Redis
(a redelivery writes the same row again; ``FINAL`` keeps one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from tollway.billing.stripe_webhooks import InvoiceEvent
from tollway.redis_types import RedisClient
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import check_identifier, insert_json_rows, query_rows

MARKER_TTL_S: Final = 35 * 86400
"""How long an event id is remembered: longer than Stripe retries (3 days) and keeps events (30 days)."""

Outcome = Literal["applied", "stale", "duplicate"]

_APPLY: Final = """
local marker = redis.call('GET', KEYS[2])
if marker then return {'duplicate', marker, 0} end
local invoice, status, created = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local rank = 0
if status ~= 'payment_failed' then rank = 1 end
local current = redis.call('HGET', KEYS[1], invoice)
if current then
  local held = cjson.decode(current)
  local held_rank = 0
  if held['status'] ~= 'payment_failed' then held_rank = 1 end
  if held['created'] > created or (held['created'] == created and held_rank >= rank) then
    redis.call('SET', KEYS[2], 'stale', 'EX', ttl)
    return {'stale', 'stale', 0}
  end
end
redis.call('HSET', KEYS[1], invoice, ARGV[4])
redis.call('SET', KEYS[2], 'applied', 'EX', ttl)
local changed = 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  local raw = redis.call('HGET', KEYS[3], 'overdue')
  local listed = {}
  if raw then listed = cjson.decode(raw) end
  local at = nil
  for i, id in ipairs(listed) do
    if id == invoice then at = i end
  end
  if status == 'payment_failed' and not at then
    table.insert(listed, invoice)
    table.sort(listed)
    changed = 1
  elseif status ~= 'payment_failed' and at then
    table.remove(listed, at)
    changed = 1
  end
  if changed == 1 then
    if #listed == 0 then
      redis.call('HDEL', KEYS[3], 'overdue')
    else
      redis.call('HSET', KEYS[3], 'overdue', cjson.encode(listed))
    end
  end
end
return {'applied', 'applied', changed}
"""


@dataclass(frozen=True, slots=True)
class PaymentStatus:
    """An invoice's payment status in force: from which provider event, created when (provider's clock)."""

    invoice_id: str
    status: str  # paid | payment_failed | voided
    event_id: str
    event_type: str
    created: datetime
    provider: str
    provider_invoice_id: str
    recorded_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "status": self.status,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_created": _iso(self.created),
            "provider": self.provider,
            "provider_invoice_id": self.provider_invoice_id,
            "recorded_at": _iso(self.recorded_at),
        }


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`PaymentStatusStore.record` did: ``applied``, ``stale`` (older than the status in force) or
    ``duplicate`` (seen before; ``first`` is what was done then). ``overdue_changed``: the invoice joined or
    left the customer's overdue list (and the change was announced)."""

    outcome: Outcome
    first: str
    overdue_changed: bool


class PaymentStatusStore:
    def __init__(self, redis: RedisClient, subscriptions: RedisSubscriptionStore, prefix: str = "tw:") -> None:
        self._redis = redis
        self._subscriptions = subscriptions
        self._prefix = prefix
        self._apply = redis.register_script(_APPLY)

    def status_key(self, customer_id: str) -> str:
        return f"{self._prefix}pay:{{{customer_id}}}"

    def marker_key(self, customer_id: str, event_id: str) -> str:
        return f"{self._prefix}pay-ev:{{{customer_id}}}:{event_id}"

    async def record(self, event: InvoiceEvent, invoice_id: str, customer_id: str, now: datetime) -> Recorded:
        """Apply ``event`` to invoice ``invoice_id`` of ``customer_id`` (matched by the caller), once."""
        status = PaymentStatus(
            invoice_id=invoice_id,
            status=event.status,
            event_id=event.event_id,
            event_type=event.type,
            created=datetime.fromtimestamp(event.created, UTC),
            provider="stripe",
            provider_invoice_id=event.stripe_invoice_id,
            recorded_at=now.astimezone(UTC),
        )
        document = {**status.as_dict(), "created": event.created}
        keys = [
            self.status_key(customer_id),
            self.marker_key(customer_id, event.event_id),
            self._subscriptions.record_key(customer_id),
        ]
        reply = cast(
            list[Any],
            await self._apply(
                keys=keys,
                args=[invoice_id, event.status, event.created, _compact(document), MARKER_TTL_S],
            ),
        )
        outcome, first, changed = _text(reply[0]), _text(reply[1]), bool(int(reply[2]))
        if changed:  # not in the script: Redis Cluster refuses a PUBLISH from it to another slot's subscribers
            await self._redis.publish(self._subscriptions.channel, customer_id)
        return Recorded(cast(Outcome, outcome), first, changed)

    async def get(self, customer_id: str, invoice_id: str) -> PaymentStatus | None:
        raw = cast(str | None, await self._redis.hget(self.status_key(customer_id), invoice_id))
        return None if raw is None else _decode(invoice_id, raw)

    async def all(self, customer_id: str) -> dict[str, PaymentStatus]:
        """Invoice id → payment status, for every invoice of the customer with one."""
        found = cast(dict[str, str], await self._redis.hgetall(self.status_key(customer_id)))
        return {invoice_id: _decode(invoice_id, raw) for invoice_id, raw in sorted(found.items())}


def _decode(invoice_id: str, raw: str) -> PaymentStatus:
    data = json.loads(raw)
    return PaymentStatus(
        invoice_id=invoice_id,
        status=str(data["status"]),
        event_id=str(data["event_id"]),
        event_type=str(data["event_type"]),
        created=datetime.fromtimestamp(int(data["created"]), UTC),
        provider=str(data.get("provider", "stripe")),
        provider_invoice_id=str(data.get("provider_invoice_id", "")),
        recorded_at=datetime.fromisoformat(str(data["recorded_at"]).replace("Z", "+00:00")),
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ch_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# --- history (ClickHouse payment_events, migration 0012) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRow:
    event_id: str
    type: str
    created: datetime
    invoice_id: str
    customer_id: str
    provider_invoice_id: str
    status: str
    outcome: str  # applied | stale | unmatched
    detail: str
    received_at: datetime

    def as_json(self) -> bytes:
        row = {
            "event_id": self.event_id,
            "provider": "stripe",
            "type": self.type,
            "created": _ch_time(self.created),
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "provider_invoice_id": self.provider_invoice_id,
            "status": self.status,
            "outcome": self.outcome,
            "detail": self.detail,
            "received_at": _ch_time(self.received_at),
        }
        return json.dumps(row, separators=(",", ":")).encode() + b"\n"


def history_row(
    event: InvoiceEvent, outcome: str, received_at: datetime, *, invoice_id: str = "", customer_id: str = "",
    detail: str = "",
) -> HistoryRow:  # fmt: skip
    return HistoryRow(
        event_id=event.event_id,
        type=event.type,
        created=datetime.fromtimestamp(event.created, UTC),
        invoice_id=invoice_id,
        customer_id=customer_id,
        provider_invoice_id=event.stripe_invoice_id,
        status=event.status,
        outcome=outcome,
        detail=detail,
        received_at=received_at,
    )


def write_history(client: Any, database: str, rows: Sequence[HistoryRow]) -> int:
    return insert_json_rows(client, database, "payment_events", b"".join(row.as_json() for row in rows))


def read_history(client: Any, database: str, *, invoice_id: str) -> list[dict[str, str]]:
    """The payment events of one invoice, oldest first (``FINAL``: one row per event)."""
    rows = query_rows(
        client,
        "SELECT event_id, type, toString(created), status, outcome, toString(received_at) "
        "FROM {db:Identifier}.payment_events FINAL WHERE invoice_id = {invoice:String} ORDER BY created, event_id",
        {"db": check_identifier(database), "invoice": invoice_id},
    )
    names = ("event_id", "type", "created", "status", "outcome", "received_at")
    return [dict(zip(names, (str(value) for value in row), strict=True)) for row in rows]
