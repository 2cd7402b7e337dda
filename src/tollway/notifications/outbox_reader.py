"""Read every customer's outbox stream and hand each event to the delivery queue.

Each outbox stream (``keys.stream_key``) is read with the consumer group ``keys.GROUP`` (created at ``0``
with ``MKSTREAM``; ``BUSYGROUP`` tolerated), one consumer name per dispatcher process. Which streams:

* fast path: customers announced in ``keys.ready_key`` (``SPOP``; an announcement popped by a dispatcher
  killed before reading is covered by the next point); when none is, the reader blocks on the wake token
  an announcement leaves (``BLPOP keys.wake_key``, at most ``poll_s``), so an idle dispatcher neither
  polls nor burns CPU;
* safety net: every ``TOLLWAY_OUTBOX_SCAN_S`` a ``SCAN MATCH keys.stream_pattern`` of every stream, which
  also ``XAUTOCLAIM``s entries a dead dispatcher read but never acknowledged (idle ``claim_idle_ms``).

An entry is ``XACK``ed and ``XDEL``ed only after ``handle`` (which queues its deliveries and its history
row) returned: a dispatcher killed in between leaves it pending, and whoever claims it queues it again —
the queue's members are idempotent, so nothing is lost and nothing is queued twice while it waits.
A corrupt entry (not an event) is logged and acknowledged: it could never be delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from tollway.notifications import keys
from tollway.notifications.events import Event, EventError
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

Handle = Callable[[Sequence[Event]], Awaitable[None]]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def customer_of(prefix: str, stream: str) -> str | None:
    """The customer of an outbox stream key (``{p}ev:{<cust>}``); None for another key."""
    head = f"{prefix}ev:{{"
    if not stream.startswith(head) or not stream.endswith("}"):
        return None
    return stream[len(head) : -1]


class OutboxReader:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        handle: Handle,
        *,
        consumer: str | None = None,
        batch: int = 200,
        scan_s: float = 30.0,
        claim_idle_ms: int = 60_000,
        poll_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._handle = handle
        self.consumer = consumer or consumer_name()
        self._batch = batch
        self._scan_s = scan_s
        self._claim_idle_ms = claim_idle_ms
        self._poll_s = poll_s
        self._grouped: set[str] = set()
        self.events_read = 0

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until ``stop`` (or cancelled): the fast path continuously, the scan every ``scan_s`` (first at start)."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        next_scan = 0.0
        while not stop.is_set():
            if loop.time() >= next_scan:
                await self.scan()
                next_scan = loop.time() + self._scan_s
            read = await self.ready_once()
            if not read:
                await self._idle(stop, max(min(self._poll_s, next_scan - loop.time()), 0.01))

    async def _idle(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait up to ``seconds`` for an announcement's wake token (``BLPOP``: no CPU while no event comes)
        or for ``stop``."""
        woken = asyncio.ensure_future(self._redis.blpop([keys.wake_key(self._prefix)], timeout=seconds))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((woken, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, stopped):
                task.cancel()
            await asyncio.gather(woken, stopped, return_exceptions=True)
        if woken.done() and not woken.cancelled() and (error := woken.exception()) is not None:
            raise error

    async def ready_once(self) -> int:
        """Read the streams of announced customers; the events handled."""
        customers = await self._redis.spop(keys.ready_key(self._prefix), 64)
        total = 0
        for customer in customers or ():
            total += await self.drain(keys.stream_key(self._prefix, str(customer)))
        return total

    async def scan(self) -> int:
        """Every outbox stream: reclaim what dead dispatchers left pending, read what is new."""
        total = 0
        async for stream in self._redis.scan_iter(match=keys.stream_pattern(self._prefix), count=500, _type="stream"):
            if customer_of(self._prefix, stream) is None:
                continue
            total += await self.reclaim(stream)
            total += await self.drain(stream)
        return total

    async def _group(self, stream: str) -> None:
        if stream in self._grouped:
            return
        try:
            await self._redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if len(self._grouped) > 100_000:
            self._grouped.clear()
        self._grouped.add(stream)

    async def drain(self, stream: str) -> int:
        """Read ``stream``'s new entries until none is left; the events handled."""
        await self._group(stream)
        total = 0
        while True:
            try:
                reply: Any = await self._redis.xreadgroup(keys.GROUP, self.consumer, {stream: ">"}, count=self._batch)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._grouped.discard(stream)  # the stream was deleted and made again: group it anew
                await self._group(stream)
                continue
            entries = reply[0][1] if reply else []
            if not entries:
                return total
            total += await self._handle_entries(stream, entries)

    async def reclaim(self, stream: str) -> int:
        """Entries of ``stream`` read by a consumer idle for ``claim_idle_ms`` (a dead dispatcher), handled."""
        await self._group(stream)
        total = 0
        start = "0-0"
        while True:
            reply: Any = await self._redis.xautoclaim(
                stream, keys.GROUP, self.consumer, self._claim_idle_ms, start_id=start, count=self._batch
            )
            start, entries = reply[0], [e for e in reply[1] if e is not None and e[1] is not None]
            if entries:
                total += await self._handle_entries(stream, entries)
            if start in ("0-0", b"0-0"):
                return total

    async def _handle_entries(self, stream: str, entries: Sequence[Any]) -> int:
        events: list[Event] = []
        for _entry_id, fields in entries:
            try:
                events.append(Event.from_stream(fields))
            except EventError as exc:
                log.error("outbox %s: entry %s is not an event, dropped: %s", stream, _entry_id, exc)
        if events:
            await self._handle(events)
        ids = [entry_id for entry_id, _ in entries]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, keys.GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
        self.events_read += len(events)
        return len(events)
