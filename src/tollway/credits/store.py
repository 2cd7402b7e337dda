"""Grants on Redis (or Valkey): the adapter beside the limiter's grants hash. The domain stays in
``credits.grants`` and ``credits.units``; this module only reads and writes.

Layout (``{p}`` is the prefix, ``tw:`` by default; ``{<customer>}`` is the customer's hash tag, so one
script touches all three hashes and the limiter's counters in one slot)::

    {p}cr:{<customer>}     hash  grant id -> grant record (``GrantState.encode()``), read and burned by
                                 the limiter's script; only grants that are held (live, waiting to become
                                 effective, or expired and not swept yet)
    {p}crm:{<customer>}    hash  grant id -> metadata JSON (``GrantInfo``): amount (a Decimal string), unit,
                                 effective_at, expires_at, priority, rollover_max, reason, created_at,
                                 created_by. Written once with the record, never changed.
    {p}crx:{<customer>}    hash  grant id -> removal of a grant that is no longer held (a tombstone):
                                 ``<voided|expired> <remaining> <forfeited> <rolled_ms> <at_ms> <actor>``,
                                 what the record held when it was removed. Kept, so a retried grant id
                                 is still recognised and the ledger can be completed from Redis alone.
    {p}credit-customers    set   customers who ever had a grant (``sync`` and ``reconcile`` go through it)
    {p}cre:{<customer>}    string the funding epoch: +1 with every grant made (a top-up is a grant), in the
                                 same script; part of the ids of balance.low and balance.exhausted events
                                 (``ratelimit.alerts``), so each funding may report them once

A grant is made by one script (record and metadata together, a duplicate id or a ``MAX_GRANTS``-th
grant refused); a void or an expiry sweep is one script that reads what the record still holds, deletes
it and writes the tombstone, so it never reaches back into burned amounts and never races a burn. The
index set lives in another slot and is written first (an interrupted write leaves only an index entry).

A record without metadata is the limiter's ``REFUND_GRANT`` (money returned when the customer held no
grant any more): listed as such, summed into the balance, voidable.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, cast

from tollway.credits.grants import GRANT_ID, MAX_GRANTS, NO_EXPIRY, NO_ROLLOVER, REFUND_GRANT, GrantState
from tollway.credits.units import from_micros, to_micros
from tollway.ratelimit.keys import funding_key
from tollway.redis_types import RedisClient

GrantStatus = Literal["active", "scheduled", "expired", "voided"]
RemovalKind = Literal["voided", "expired"]

_MAKE: Final = """
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 1 then return {'exists', redis.call('HGET', KEYS[2], id)} end
if redis.call('HEXISTS', KEYS[1], id) == 1 or redis.call('HEXISTS', KEYS[3], id) == 1 then
  return {'taken', ''}
end
local held = redis.call('HKEYS', KEYS[1])
if #held >= tonumber(ARGV[4]) then return {'full', tostring(#held)} end
for _, other in ipairs(held) do
  local meta = redis.call('HGET', KEYS[2], other)
  if meta then
    local unit = cjson.decode(meta)['unit']
    if unit ~= ARGV[5] then return {'unit', unit} end
  end
end
redis.call('HSET', KEYS[1], id, ARGV[2])
redis.call('HSET', KEYS[2], id, ARGV[3])
redis.call('INCR', KEYS[4])
return {'created', ''}
"""

# A tombstone from a record: remaining forfeited rolled_ms (the record's fields 1, 7, 6).
_REMOVE_FN: Final = """
local function remove(id, record, kind, at, actor)
  local f = {}
  for x in string.gmatch(record, '%S+') do f[#f + 1] = x end
  local tomb = kind .. ' ' .. f[1] .. ' ' .. f[7] .. ' ' .. f[6] .. ' ' .. at .. ' ' .. actor
  redis.call('HDEL', KEYS[1], id)
  redis.call('HSET', KEYS[2], id, tomb)
  return tomb, f
end
"""

_VOID: Final = (
    _REMOVE_FN
    + """
local id = ARGV[1]
local done = redis.call('HGET', KEYS[2], id)
if done then return {'removed', done} end
local record = redis.call('HGET', KEYS[1], id)
if not record then return {'missing', ''} end
local tomb = remove(id, record, 'voided', ARGV[2], ARGV[3])
return {'voided', tomb}
"""
)

_EXPIRE: Final = (
    _REMOVE_FN
    + """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[1])
for i = 1, #all, 2 do
  local expires = tonumber(string.match(all[i + 1], '^%S+ %S+ %S+ (%S+)'))
  if expires and expires ~= 0 and expires <= now then
    local tomb = remove(all[i], all[i + 1], 'expired', tostring(expires), ARGV[2])
    out[#out + 1] = all[i]
    out[#out + 1] = tomb
  end
end
return out
"""
)

_SNAPSHOT: Final = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
"""


class GrantError(ValueError):
    """A grant the store refuses; ``str()`` is a message for the user."""


class GrantConflict(GrantError):
    """The grant id is taken by a different grant, or the customer holds grants of another unit."""


class TooManyGrants(GrantError):
    """The customer already holds ``MAX_GRANTS`` grants."""


class GrantNotFound(GrantError):
    def __init__(self, customer_id: str, grant_id: str) -> None:
        super().__init__(f"customer {customer_id!r} has no grant {grant_id!r}")
        self.customer_id = customer_id
        self.grant_id = grant_id


def new_grant_id() -> str:
    """``grt_`` and 20 random hex digits (matches ``grants.GRANT_ID``)."""
    return "grt_" + secrets.token_hex(10)


def check_grant_id(grant_id: str) -> str:
    if not GRANT_ID.fullmatch(grant_id):
        raise GrantError(
            f"grant id {grant_id!r} is not valid: 1-64 characters from letters, digits and . _ -, "
            "starting with a letter or digit"
        )
    if grant_id == REFUND_GRANT:
        raise GrantError(f"grant id {REFUND_GRANT!r} is reserved for returned amounts")
    return grant_id


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def instant_ms(value: datetime) -> int:
    """An aware datetime in whole epoch milliseconds (exact; sub-millisecond parts are dropped)."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def ms_instant(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """Epoch ms as UTC ISO 8601 with milliseconds and ``Z``."""
    return ms_instant(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_ms(text: str) -> int:
    parsed = datetime.fromisoformat(text)
    return instant_ms(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC))


def plain(amount: Decimal) -> str:
    """A Decimal as plain text: no exponent, no trailing zeros (``10``, ``0.5``)."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """A grant's metadata (``{p}crm``): what was granted, by whom. Amounts in the unit (Decimal); times in
    epoch ms; ``expires_ms`` None: never; ``rollover_max`` None: no rollover rule (0: nothing carries)."""

    grant_id: str
    amount: Decimal
    unit: str
    effective_ms: int
    expires_ms: int | None
    priority: int
    rollover_max: Decimal | None
    reason: str
    created_ms: int
    created_by: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "grant_id": self.grant_id,
                "amount": plain(self.amount),
                "unit": self.unit,
                "effective_at": format_ms(self.effective_ms),
                "expires_at": format_ms(self.expires_ms) if self.expires_ms is not None else None,
                "priority": self.priority,
                "rollover_max": plain(self.rollover_max) if self.rollover_max is not None else None,
                "reason": self.reason,
                "created_at": format_ms(self.created_ms),
                "created_by": self.created_by,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, grant_id: str, text: str) -> GrantInfo:
        data = json.loads(text)
        expires = data.get("expires_at")
        rollover = data.get("rollover_max")
        return cls(
            grant_id=grant_id,
            amount=Decimal(data["amount"]),
            unit=str(data["unit"]),
            effective_ms=_parse_ms(data["effective_at"]),
            expires_ms=_parse_ms(expires) if expires else None,
            priority=int(data.get("priority", 0)),
            rollover_max=Decimal(rollover) if rollover is not None else None,
            reason=str(data.get("reason") or ""),
            created_ms=_parse_ms(data["created_at"]),
            created_by=str(data.get("created_by") or ""),
        )

    def record(self, rolled_ms: int) -> GrantState:
        """The grant record as first written: all of the amount remains."""
        return GrantState(
            grant_id=self.grant_id,
            remaining=to_micros(self.amount),
            priority=self.priority,
            effective_ms=self.effective_ms,
            expires_ms=self.expires_ms if self.expires_ms is not None else NO_EXPIRY,
            rollover_max=to_micros(self.rollover_max) if self.rollover_max is not None else NO_ROLLOVER,
            rolled_ms=rolled_ms,
        )

    def same_request(self, other: GrantInfo, *, compare_effective: bool) -> bool:
        """Whether ``other`` asks for this grant (an idempotent retry): the same amount, unit, expiry,
        priority, rollover rule and reason, and the same effective time when the retry gives one."""
        return (
            self.amount == other.amount
            and self.unit == other.unit
            and self.expires_ms == other.expires_ms
            and self.priority == other.priority
            and self.rollover_max == other.rollover_max
            and self.reason == other.reason
            and (not compare_effective or self.effective_ms == other.effective_ms)
        )


@dataclass(frozen=True, slots=True)
class Removal:
    """What a grant held when it was voided or swept after expiry (micro-units); ``at_ms``: the void's
    time or the grant's expiry."""

    grant_id: str
    kind: RemovalKind
    remaining: int
    forfeited: int
    rolled_ms: int
    at_ms: int
    actor: str

    def encode(self) -> str:
        return f"{self.kind} {self.remaining} {self.forfeited} {self.rolled_ms} {self.at_ms} {self.actor}"

    @classmethod
    def decode(cls, grant_id: str, text: str) -> Removal:
        parts = text.split(" ", 5)
        if len(parts) < 5 or parts[0] not in ("voided", "expired"):
            raise ValueError(f"grant {grant_id!r}: malformed removal {text!r}")
        actor = parts[5] if len(parts) == 6 else ""
        kind = cast(RemovalKind, parts[0])
        return cls(grant_id, kind, int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]), actor)


@dataclass(frozen=True, slots=True)
class GrantView:
    """One grant as listed: metadata (None for the limiter's returned-amount record), the live record
    (None once removed) and the removal (None while held). ``remaining``/``forfeited`` in micro-units."""

    customer_id: str
    grant_id: str
    info: GrantInfo | None
    record: GrantState | None
    removal: Removal | None
    unit: str

    @property
    def remaining(self) -> int:
        if self.record is not None:
            return self.record.remaining
        return 0

    @property
    def forfeited(self) -> int:
        if self.record is not None:
            return self.record.forfeited
        return self.removal.forfeited if self.removal is not None else 0

    def status(self, now_ms: int) -> GrantStatus:
        if self.removal is not None:
            return "expired" if self.removal.kind == "expired" else "voided"
        record = self.record
        assert record is not None
        if record.expires_ms != NO_EXPIRY and now_ms >= record.expires_ms:
            return "expired"
        return "scheduled" if now_ms < record.effective_ms else "active"

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        """JSON form: amounts as decimal strings, times as UTC ISO 8601."""
        info = self.info
        record = self.record
        removal = self.removal
        effective = info.effective_ms if info else (record.effective_ms if record else None)
        expires = info.expires_ms if info else (record.expires_ms or None if record else None)
        return {
            "grant_id": self.grant_id,
            "customer_id": self.customer_id,
            "status": self.status(now_ms),
            "unit": self.unit,
            "amount": plain(info.amount) if info else None,
            "remaining": plain(from_micros(self.remaining)),
            "forfeited": plain(from_micros(self.forfeited)),
            "priority": info.priority if info else (record.priority if record else 0),
            "effective_at": format_ms(effective) if effective is not None else None,
            "expires_at": format_ms(expires) if expires else None,
            "rollover_max": plain(info.rollover_max) if info and info.rollover_max is not None else None,
            "reason": info.reason if info else ("returned amounts" if self.grant_id == REFUND_GRANT else ""),
            "created_at": format_ms(info.created_ms) if info else None,
            "created_by": info.created_by if info else None,
            "voided_at": format_ms(removal.at_ms) if removal and removal.kind == "voided" else None,
            "voided_by": removal.actor if removal and removal.kind == "voided" else None,
            "voided_amount": plain(from_micros(removal.remaining)) if removal and removal.kind == "voided" else None,
            "expired_amount": plain(from_micros(removal.remaining)) if removal and removal.kind == "expired" else None,
        }


@dataclass(frozen=True, slots=True)
class CustomerCredits:
    """Everything Redis holds about one customer's grants, read atomically."""

    customer_id: str
    records: Mapping[str, GrantState]
    infos: Mapping[str, GrantInfo]
    removals: Mapping[str, Removal]
    unit: str = field(default="")

    def views(self) -> list[GrantView]:
        ids = set(self.records) | set(self.infos) | set(self.removals)
        out = [
            GrantView(
                self.customer_id,
                grant_id,
                self.infos.get(grant_id),
                self.records.get(grant_id),
                self.removals.get(grant_id) if grant_id not in self.records else None,
                self.infos[grant_id].unit if grant_id in self.infos else self.unit,
            )
            for grant_id in ids
        ]
        return sorted(out, key=lambda v: (v.info.created_ms if v.info else 0, v.grant_id))

    def held_total(self) -> int:
        """Σ remaining + Σ forfeited over every record held (the reconcile identity's Redis side)."""
        return sum(r.remaining + r.forfeited for r in self.records.values())


@dataclass(frozen=True, slots=True)
class MakeResult:
    grant: GrantView
    created: bool


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class GrantStore:
    """Grants of customers on the limiter's Redis (same client kind, same prefix)."""

    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._index = f"{prefix}credit-customers"

    def grants_key(self, customer_id: str) -> str:
        return f"{self._prefix}cr:{{{customer_id}}}"

    def metadata_key(self, customer_id: str) -> str:
        return f"{self._prefix}crm:{{{customer_id}}}"

    def removals_key(self, customer_id: str) -> str:
        return f"{self._prefix}crx:{{{customer_id}}}"

    def _keys(self, customer_id: str) -> list[str]:
        return [self.grants_key(customer_id), self.metadata_key(customer_id), self.removals_key(customer_id)]

    async def _eval(self, script: str, keys: Sequence[str], *args: str | int) -> Any:
        return await self._redis.eval(script, len(keys), *keys, *args)

    async def make(self, customer_id: str, grant: GrantInfo, *, rolled_ms: int | None = None) -> MakeResult:
        """Write a new grant (record with ``rolled_ms``, default ``effective_ms``, and metadata) at once.
        The same id again with the same request is the existing grant (``created`` False); with a
        different one, or a record of that id without metadata, ``GrantConflict``. ``TooManyGrants``
        past ``MAX_GRANTS`` held grants; ``GrantConflict`` when the customer holds grants of another unit
        (the limiter burns every held grant for one price)."""
        check_grant_id(grant.grant_id)
        record = grant.record(grant.effective_ms if rolled_ms is None else rolled_ms)
        await self._redis.sadd(self._index, customer_id)
        reply = await self._eval(
            _MAKE,
            [*self._keys(customer_id), funding_key(self._prefix, customer_id)],
            grant.grant_id,
            record.encode(),
            grant.to_json(),
            MAX_GRANTS,
            grant.unit,
        )
        status, detail = str(reply[0]), str(reply[1])
        if status == "created":
            view = GrantView(customer_id, grant.grant_id, grant, record, None, grant.unit)
            return MakeResult(view, True)
        if status == "full":
            raise TooManyGrants(
                f"customer {customer_id!r} holds {detail} grants, the most a customer may hold "
                f"({MAX_GRANTS}); void one or wait for expired ones to be swept (tollway credits sync)"
            )
        if status == "unit":
            raise GrantConflict(
                f"customer {customer_id!r} holds grants in {detail}, not {grant.unit}: one balance has one unit"
            )
        if status == "taken":
            raise GrantConflict(f"grant id {grant.grant_id!r} of customer {customer_id!r} is in use")
        existing = GrantInfo.from_json(grant.grant_id, detail)
        return MakeResult(await self._view(customer_id, existing), False)

    async def _view(self, customer_id: str, info: GrantInfo) -> GrantView:
        snapshot = await self.snapshot(customer_id)
        return GrantView(
            customer_id,
            info.grant_id,
            info,
            snapshot.records.get(info.grant_id),
            snapshot.removals.get(info.grant_id) if info.grant_id not in snapshot.records else None,
            info.unit,
        )

    async def snapshot(self, customer_id: str) -> CustomerCredits:
        records_raw, infos_raw, removals_raw = await self._eval(_SNAPSHOT, self._keys(customer_id))
        records = {k: GrantState.decode(k, v) for k, v in _pairs(records_raw).items()}
        infos = {k: GrantInfo.from_json(k, v) for k, v in _pairs(infos_raw).items()}
        removals = {k: Removal.decode(k, v) for k, v in _pairs(removals_raw).items()}
        newest = max(infos.values(), key=lambda i: (i.created_ms, i.grant_id), default=None)
        return CustomerCredits(customer_id, records, infos, removals, newest.unit if newest else "")

    async def get(self, customer_id: str, grant_id: str) -> GrantView | None:
        for view in (await self.snapshot(customer_id)).views():
            if view.grant_id == grant_id:
                return view
        return None

    async def void(self, customer_id: str, grant_id: str, *, at_ms: int, actor: str) -> tuple[Removal, bool]:
        """Remove a held grant, taking what it still holds (never what was burned): the removal and
        True; for a grant removed before (voided or expired), that removal and False. ``GrantNotFound``
        for an id the customer never had."""
        keys = [self.grants_key(customer_id), self.removals_key(customer_id)]
        reply = await self._eval(_VOID, keys, grant_id, at_ms, actor)
        status, detail = str(reply[0]), str(reply[1])
        if status == "missing":
            raise GrantNotFound(customer_id, grant_id)
        return Removal.decode(grant_id, detail), status == "voided"

    async def expire(self, customer_id: str, now_ms: int, *, actor: str = "sweep") -> list[Removal]:
        """Remove every held grant past its expiry; what each still held."""
        keys = [self.grants_key(customer_id), self.removals_key(customer_id)]
        flat = cast(list[str], await self._eval(_EXPIRE, keys, now_ms, actor))
        return [Removal.decode(k, v) for k, v in _pairs(flat).items()]

    async def balance(self, customer_id: str, now_ms: int, period_start_ms: int | None = None) -> int:
        """The live balance in micro-units: Σ remaining of the grants live at ``now_ms``, after the
        rollover of the period starting at ``period_start_ms`` (when given) that the limiter applies at
        its next check."""
        snapshot = await self.snapshot(customer_id)
        return live_balance(snapshot.records.values(), now_ms, period_start_ms)

    async def customers(self) -> list[str]:
        return sorted(cast(set[str], await self._redis.smembers(self._index)))

    async def list(self, customer_id: str) -> list[GrantView]:
        """Every grant of the customer, held or removed, oldest first."""
        return (await self.snapshot(customer_id)).views()


def live_balance(records: Any, now_ms: int, period_start_ms: int | None = None) -> int:
    total = 0
    for record in records:
        state = record.rolled_over(period_start_ms) if period_start_ms is not None else record
        if state.live(now_ms):
            total += state.remaining
    return total
