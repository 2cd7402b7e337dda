"""Writing events to the outbox (``notifications.keys``): once per event id, durably in Redis, before
the dispatcher delivers them.

One script call per event, in the customer's hash slot: ``SET <once-marker> NX PX ONCE_TTL_MS`` and,
only if that set it, ``XADD <customer's stream> * id … type … ts … customer … data …``. Both or neither:
a second emission of the same id (a job re-run, a racing process) finds the marker and appends nothing.
Then ``SADD <ready> <customer>`` and a wake token for an idle dispatcher (:func:`announce`; another slot
under Redis Cluster, so a separate call; sent even when the event was not new, so a re-emission repairs a
lost announcement): a process killed between the two leaves an entry the dispatcher's periodic scan of
every stream still finds.

Durability is Redis's: an emission is as durable as the Redis it went to (AOF ``appendfsync`` as
configured for the limiter's counters, docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tollway.notifications import keys
from tollway.notifications.events import Event
from tollway.redis_types import RedisClient

EMIT_LUA: Final = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'type', ARGV[3], 'ts', ARGV[4], 'customer', ARGV[5], 'data', ARGV[6])
  return 1
end
return 0
"""


async def announce(redis: RedisClient, prefix: str, *customers: str) -> None:
    """Tell the dispatchers that the outboxes of ``customers`` may hold new entries: add them to the ready
    set, then leave a wake token (one at most) for a dispatcher blocked waiting (``keys.wake_key``)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sadd(keys.ready_key(prefix), *customers)
        pipe.lpush(keys.wake_key(prefix), "1")
        pipe.ltrim(keys.wake_key(prefix), 0, 0)
        await pipe.execute()


class OutboxWriter:
    """``emit(event)``: append it to its customer's outbox unless an event of that id was appended
    before (within ``keys.ONCE_TTL_MS``); ``True`` if it was new. Redis errors propagate."""

    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(EMIT_LUA)

    async def emit(self, event: Event) -> bool:
        fields = event.stream_fields()  # EventError for a body too large: before anything is written
        customer = event.customer_id
        added = await self._script(
            keys=[keys.once_key(self._prefix, customer, event.id), keys.stream_key(self._prefix, customer)],
            args=[
                keys.ONCE_TTL_MS,
                fields["id"],
                fields["type"],
                fields["ts"],
                fields["customer"],
                fields["data"],
            ],
        )
        # Even when not new: a re-run then repairs an announcement lost by a process killed right here.
        await announce(self._redis, self._prefix, customer or keys.NO_CUSTOMER)
        return bool(added)

    async def emit_many(self, events: Iterable[Event]) -> list[bool]:
        """Each of ``events`` in order (one script call each: they may be in different slots)."""
        return [await self.emit(event) for event in events]
