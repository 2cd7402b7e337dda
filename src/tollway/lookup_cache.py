"""In-process cache of store lookups (API key records by digest, subscriptions by customer) with a
short TTL.

Positive and negative answers are cached (the latter possibly for less time, so a record created a
moment after a failed lookup is found quickly even if the change announcement is missed). They are kept
apart, each bounded on its own (the oldest entries go first): names anyone can make up (well-formed API
keys carry a public checksum) fill only the negative part, so a flood of them cannot push a real record
out. Changes are announced over Redis pub/sub and evict the entry at once; the TTL is the bound when an
announcement is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")


class CachedLookup(NamedTuple, Generic[V]):
    """A remembered store answer: ``record`` is ``None`` when the store had nothing under that name."""

    deadline: float
    record: V | None


class LookupCache(Generic[V]):
    __slots__ = ("_entries", "_max_entries", "_max_negative", "_monotonic", "_negative_ttl", "_negatives", "_ttl")

    def __init__(
        self,
        monotonic: Callable[[], float],
        ttl: float = 1.0,
        negative_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_negative_entries: int = 10_000,
    ) -> None:
        if ttl < 0 or negative_ttl < 0 or max_entries < 1 or max_negative_entries < 1:
            raise ValueError("TTLs must be >= 0 and max_entries, max_negative_entries >= 1")
        self._monotonic = monotonic
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._max_negative = max_negative_entries
        self._entries: dict[str, CachedLookup[V]] = {}  # records found
        self._negatives: dict[str, CachedLookup[V]] = {}  # names the store had nothing under

    def get(self, name: str) -> CachedLookup[V] | None:
        """The remembered answer for ``name``, or ``None`` when nothing fresh is cached."""
        entries = self._entries
        entry = entries.get(name)
        if entry is None:
            entries = self._negatives
            entry = entries.get(name)
            if entry is None:
                return None
        if self._monotonic() >= entry.deadline:
            del entries[name]
            return None
        return entry

    def put(self, name: str, record: V | None) -> None:
        if record is None:
            self._entries.pop(name, None)
            entries, ttl, bound = self._negatives, self._negative_ttl, self._max_negative
        else:
            self._negatives.pop(name, None)
            entries, ttl, bound = self._entries, self._ttl, self._max_entries
        if ttl <= 0:
            return
        if name not in entries and len(entries) >= bound:
            del entries[next(iter(entries))]
        entries[name] = CachedLookup(self._monotonic() + ttl, record)

    def evict(self, name: str) -> None:
        self._entries.pop(name, None)
        self._negatives.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()
        self._negatives.clear()

    def __len__(self) -> int:
        return len(self._entries) + len(self._negatives)


class SingleFlight(Generic[V]):
    """Store lookups behind a :class:`LookupCache`: one store call per name however many requests wait
    for it, bounded by ``timeout_s`` (past it, ``unavailable()`` is raised), the answer cached."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[V | None]],
        cache: LookupCache[V],
        timeout_s: float,
        unavailable: Callable[[], Exception],
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._fetch = fetch
        self._cache = cache
        self._timeout = timeout_s
        self._unavailable = unavailable
        self._inflight: dict[str, asyncio.Task[V | None]] = {}

    async def lookup(self, name: str) -> V | None:
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.ensure_future(self._bounded(name))
            self._inflight[name] = task
            task.add_done_callback(lambda t: self._settle(name, t))
        return await asyncio.shield(task)

    async def _bounded(self, name: str) -> V | None:
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._fetch(name)
        except TimeoutError as exc:
            raise self._unavailable() from exc
        self._cache.put(name, found)
        return found

    def _settle(self, name: str, task: asyncio.Task[V | None]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error with no waiter left is not reported as lost
