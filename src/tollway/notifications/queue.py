"""The delivery queue: one member ``<endpoint id>|<event id>`` per delivery, in the dispatcher's ``{wh}``
hash slot (``notifications.keys``), so each operation below is one atomic script call.

* ``enqueue(event, endpoint ids)``: the event's fields under ``event_key`` (``EVENT_TTL_MS``), each member
  added to ``due`` with ``ZADD NX`` (queuing the same delivery twice queues it once: an outbox entry read
  again after a crash changes nothing while its delivery waits), and the event's history row appended to
  the history buffer (``history_key``) for ClickHouse — all in one call.
* ``claim(now, n)``: up to ``n`` members due at ``now``; each claimed one gets a random token under its
  ``claim_key`` (``PX claim_ms``), its score moved to ``now + claim_ms`` (a dispatcher killed mid-delivery
  leaves it there, and it is due again when the claim expires) and its attempt counted in ``tries``.
  Members of endpoints this dispatcher reports busy are deferred by ``defer_ms`` instead (a slow endpoint
  never holds the head of the queue, so the others are unaffected).
* ``settle(outcomes)``: per claimed delivery, delivered (removed), retry at a time, or given up (removed)
  — only while the claim is still this dispatcher's (or has expired unclaimed); each appends an attempt
  row to the history buffer.

The failing-since mark of an endpoint (``failing_key``: endpoint id → first failure without a success
since, ms) is kept here too: the dispatcher disables an endpoint from it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from tollway.notifications import keys
from tollway.notifications.events import Event
from tollway.redis_types import RedisClient

Outcome = Literal["delivered", "retry", "failed", "dropped"]
"""``delivered`` 2xx; ``retry`` failed, due again later; ``failed`` failed and given up (schedule spent or
endpoint disabled); ``dropped`` not attempted (endpoint gone or disabled, event expired)."""

HISTORY_MAX: Final = 1_000_000
"""The history buffer keeps at most this many rows while ClickHouse is away (oldest dropped, logged)."""


def history_key(prefix: str) -> str:
    """List of JSON rows waiting for ClickHouse (``notifications.history``)."""
    return f"{prefix}{{wh}}:history"


def history_lock_key(prefix: str) -> str:
    return f"{prefix}{{wh}}:history:lock"


def failing_key(prefix: str) -> str:
    """Hash endpoint id → failing since (ms): the first failed attempt with no success after it."""
    return f"{prefix}{{wh}}:failing"


_ENQUEUE = """
-- KEYS: due, history. ARGV: ttl ms, at ms, max history, then per event: event key, event json, history row,
-- member count, members...
local added = 0
local i = 4
while i <= #ARGV do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', ARGV[1])
  if ARGV[i + 2] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[i + 2]) end
  local n = tonumber(ARGV[i + 3])
  for j = i + 4, i + 3 + n do
    added = added + redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[j])
  end
  i = i + 4 + n
end
local len = redis.call('LLEN', KEYS[2])
if len > tonumber(ARGV[3]) then redis.call('LTRIM', KEYS[2], len - tonumber(ARGV[3]), -1) end
return added
"""

_CLAIM = """
-- KEYS: due, tries. ARGV: now, n, claim ms, defer ms, key prefix ({p}{wh}:), scan, busy endpoint...
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local busy = {}
for i = 7, #ARGV do busy[ARGV[i]] = true end
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
local out = {}
local claimed = 0
for _, member in ipairs(found) do
  if claimed >= want then break end
  local endpoint = string.match(member, '^([^|]*)|')
  if endpoint and busy[endpoint] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[4]), member)
  else
    local token = redis.sha1hex(member .. ARGV[1] .. tostring(claimed) .. redis.call('INCR', ARGV[5] .. 'claims'))
    redis.call('SET', ARGV[5] .. 'lease:' .. member, token, 'PX', ARGV[3])
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), member)
    local tries = redis.call('HINCRBY', KEYS[2], member, 1)
    local event_id = string.sub(member, string.len(endpoint or '') + 2)
    local event = redis.call('GET', ARGV[5] .. 'event:' .. event_id) or ''
    out[#out + 1] = {member, token, tries, event}
    claimed = claimed + 1
  end
end
return out
"""

_SETTLE = """
-- KEYS: due, tries, history, failing. ARGV: key prefix, max history, then per delivery 7 values:
-- member, token, outcome, next ms, history row, endpoint id, now ms
local n = 0
for i = 3, #ARGV, 7 do
  local member, token, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local lease = ARGV[1] .. 'lease:' .. member
  local holder = redis.call('GET', lease)
  if holder == token or (holder == false and redis.call('ZSCORE', KEYS[1], member)) then
    if outcome == 'retry' then
      redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 3], member)
    else
      redis.call('ZREM', KEYS[1], member)
      redis.call('HDEL', KEYS[2], member)
    end
    redis.call('DEL', lease)
    n = n + 1
  end
  if outcome == 'delivered' then
    redis.call('HDEL', KEYS[4], ARGV[i + 5])
  elseif outcome == 'retry' or outcome == 'failed' then
    redis.call('HSETNX', KEYS[4], ARGV[i + 5], ARGV[i + 6])
  end
  if ARGV[i + 4] ~= '' then redis.call('RPUSH', KEYS[3], ARGV[i + 4]) end
end
local len = redis.call('LLEN', KEYS[3])
if len > tonumber(ARGV[2]) then redis.call('LTRIM', KEYS[3], len - tonumber(ARGV[2]), -1) end
return n
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher holds: attempt ``attempt`` (1 = the first) of ``event`` to ``endpoint_id``.
    ``event`` None: its fields expired from Redis (older than ``EVENT_TTL_MS``)."""

    endpoint_id: str
    event_id: str
    token: str
    attempt: int
    event: Event | None

    @property
    def member(self) -> str:
        return keys.delivery_member(self.endpoint_id, self.event_id)


@dataclass(frozen=True, slots=True)
class Settled:
    """What became of a claimed delivery; ``next_ms`` for a retry; ``row``: its history row (JSON) or ''."""

    claimed: Claimed
    outcome: Outcome
    next_ms: int = 0
    row: str = ""
    now_ms: int = 0


def event_row(event: Event) -> str:
    """The history row of an event (table ``events``)."""
    fields = event.stream_fields()
    return json.dumps(
        {"t": "events", "id": event.id, "type": event.type, "ts": event.ts_ms, "customer_id": event.customer_id,
         "data": fields["data"]},
        separators=(",", ":"),
    )  # fmt: skip


class DeliveryQueue:
    """The delivery queue on ``redis`` under ``prefix`` (see the module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        *,
        claim_ms: int = 60_000,
        defer_ms: int = 1_000,
        history_max: int = HISTORY_MAX,
        event_ttl_ms: int = keys.EVENT_TTL_MS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.claim_ms = claim_ms
        self._defer_ms = defer_ms
        self._history_max = history_max
        self._event_ttl_ms = event_ttl_ms
        self._enqueue: Any = redis.register_script(_ENQUEUE)
        self._claim: Any = redis.register_script(_CLAIM)
        self._settle: Any = redis.register_script(_SETTLE)

    @property
    def prefix(self) -> str:
        return self._prefix

    async def enqueue(
        self, event: Event, endpoint_ids: Iterable[str], at_ms: int = 0, *, record: bool = True, fresh: bool = False
    ) -> int:
        """Queue ``event`` for each endpoint (due at ``at_ms``; 0: at once); the deliveries newly queued.
        ``record``: append the event's history row too. ``fresh`` (a replay): forget earlier attempts, so
        the replayed delivery gets the whole schedule again."""
        return await self.enqueue_many([(event, list(endpoint_ids))], at_ms, record=record, fresh=fresh)

    async def enqueue_many(
        self,
        batch: Sequence[tuple[Event, Sequence[str]]],
        at_ms: int = 0,
        *,
        record: bool = True,
        fresh: bool = False,
    ) -> int:
        """``enqueue`` for several events in one call."""
        if not batch:
            return 0
        p = self._prefix
        if fresh:
            members = [keys.delivery_member(e, event.id) for event, endpoints in batch for e in endpoints]
            if members:
                await self._redis.hdel(keys.tries_key(p), *members)
        args: list[str | int] = [self._event_ttl_ms, at_ms, self._history_max]
        for event, endpoints in batch:
            fields = json.dumps(event.stream_fields(), separators=(",", ":"))
            args += [keys.event_key(p, event.id), fields, event_row(event) if record else "", len(endpoints)]
            args += [keys.delivery_member(e, event.id) for e in endpoints]
        added: int = await self._enqueue(keys=[keys.due_key(p), history_key(p)], args=args)
        return int(added)

    async def claim(self, now_ms: int, limit: int, busy: Sequence[str] = ()) -> list[Claimed]:
        """Up to ``limit`` deliveries due at ``now_ms``, claimed for ``claim_ms``; members of ``busy``
        endpoints are deferred, not claimed."""
        p = self._prefix
        found = await self._claim(
            keys=[keys.due_key(p), keys.tries_key(p)],
            args=[now_ms, limit, self.claim_ms, self._defer_ms, f"{p}{{wh}}:", limit * 2 + 16, *busy],
        )
        out = []
        for member, token, tries, fields in found:
            endpoint_id, _, event_id = member.partition("|")
            event = None
            if fields:
                try:
                    event = Event.from_stream(json.loads(fields))
                except ValueError:
                    event = None
            out.append(Claimed(endpoint_id, event_id, token, int(tries), event))
        return out

    async def settle(self, settled: Sequence[Settled]) -> int:
        """Record what became of claimed deliveries (one call); how many were still this dispatcher's."""
        if not settled:
            return 0
        p = self._prefix
        args: list[str | int] = [f"{p}{{wh}}:", self._history_max]
        for s in settled:
            c = s.claimed
            args += [c.member, c.token, s.outcome, s.next_ms, s.row, c.endpoint_id, s.now_ms]
        n: int = await self._settle(
            keys=[keys.due_key(p), keys.tries_key(p), history_key(p), failing_key(p)], args=args
        )
        return int(n)

    async def next_due_ms(self) -> int | None:
        """When the earliest queued delivery is due (None: the queue is empty)."""
        first = await self._redis.zrange(keys.due_key(self._prefix), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def pending(self) -> int:
        return int(await self._redis.zcard(keys.due_key(self._prefix)))

    async def failing_since(self, endpoint_id: str) -> int | None:
        value = await self._redis.hget(failing_key(self._prefix), endpoint_id)
        return int(value) if value is not None else None

    async def clear_failing(self, endpoint_id: str) -> None:
        await self._redis.hdel(failing_key(self._prefix), endpoint_id)


def new_nonce() -> str:
    return secrets.token_hex(8)
