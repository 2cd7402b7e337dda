"""In-process cache of store lookups (API key records by digest, subscriptions by customer) with a
short TTL.

Positive and negative answers are cached (the latter possibly for less time, so a record created a
moment after a failed lookup is found quickly even if the change announcement is missed). They are kept
apart, each bounded on its own (the oldest entries go first): names anyone can make up (well-formed API
keys carry a public checksum) fill only the negative part, so a flood of them cannot push a real record
out. Changes are announced over Redis pub/sub and evict the entry at once; the TTL is the bound when an
announcement is lost.

While the store cannot be reached (it times out or the connection fails — not when it answers that it
has nothing), :class:`SingleFlight` can answer with the last record the store returned for a name,
kept apart in a :class:`LastKnown` up to a bounded age (``TOLLWAY_STALE_MAX_S``).
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


class LastKnown(Generic[V]):
    """The last record the store returned for each name (never "nothing"), and when: what a lookup may
    answer while the store cannot be reached, if it is at most ``max_age_s`` old (0: never). Bounded;
    the least recently refreshed entries go first. Only the miss path touches it."""

    __slots__ = ("_entries", "_max_age", "_max_entries", "_monotonic")

    def __init__(self, monotonic: Callable[[], float], max_age_s: float, max_entries: int = 100_000) -> None:
        if max_age_s < 0 or max_entries < 1:
            raise ValueError("max_age_s must be >= 0 and max_entries >= 1")
        self._monotonic = monotonic
        self._max_age = max_age_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, V]] = {}

    @property
    def max_age_s(self) -> float:
        return self._max_age

    def put(self, name: str, record: V) -> None:
        if self._max_age <= 0:
            return
        entries = self._entries
        if entries.pop(name, None) is None and len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        entries[name] = (self._monotonic(), record)

    def get(self, name: str) -> V | None:
        """The last record of ``name`` if it is at most ``max_age_s`` old, else ``None``."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if self._monotonic() - entry[0] > self._max_age:
            del self._entries[name]
            return None
        return entry[1]

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)

    def __len__(self) -> int:
        return len(self._entries)


def _any_failure(exc: Exception) -> bool:
    return True


class SingleFlight(Generic[V]):
    """Store lookups behind a :class:`LookupCache`: one store call per name however many requests wait
    for it, bounded by ``timeout_s`` (past it, ``unavailable()`` is raised), the answer cached.

    With ``last_known``, every record the store returns is kept there too (a "nothing" answer forgets
    it), and a lookup that fails because the store cannot be reached — it times out, the caller's
    deadline passes, or it raises an error ``is_outage`` accepts — answers with that record while it is
    young enough (counted in ``stale_answers``) instead of raising, and caches it again for one TTL (so an
    outage costs the store one lookup per name per TTL, as normal operation does)."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[V | None]],
        cache: LookupCache[V],
        timeout_s: float,
        unavailable: Callable[[], Exception],
        *,
        last_known: LastKnown[V] | None = None,
        is_outage: Callable[[Exception], bool] = _any_failure,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._fetch = fetch
        self._cache = cache
        self._timeout = timeout_s
        self._unavailable = unavailable
        self._last_known = last_known
        self._is_outage = is_outage
        self._inflight: dict[str, asyncio.Task[V | None]] = {}
        self.stale_answers = 0
        """Lookups answered with a last-known record because the store could not be reached."""

    async def lookup(self, name: str, deadline: float | None = None) -> V | None:
        """The store's answer for ``name`` (now cached). ``deadline`` (event-loop time): give up waiting
        then, as if the store had timed out (the shared lookup goes on for the other waiters)."""
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.ensure_future(self._bounded(name))
            self._inflight[name] = task
            task.add_done_callback(lambda t: self._settle(name, t))
        try:
            if deadline is None:
                return await asyncio.shield(task)
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError as exc:  # this caller's deadline (the store's own bound raises unavailable())
            error = self._unavailable()
            error.__cause__ = exc
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            error = exc
        stale = self._last_known.get(name) if self._last_known is not None else None
        if stale is None:
            raise error
        self.stale_answers += 1
        # Cached again for one TTL: while the store is away, one lookup per name per TTL, as when it is up.
        self._cache.put(name, stale)
        return stale

    async def _bounded(self, name: str) -> V | None:
        try:
            async with asyncio.timeout(self._timeout):
                found = await self._fetch(name)
        except TimeoutError as exc:
            raise self._unavailable() from exc
        except Exception as exc:
            if self._last_known is not None and not self._is_outage(exc):
                self._last_known.forget(name)  # the store answered, with something unusable
            raise
        self._cache.put(name, found)
        if self._last_known is not None:
            if found is None:
                self._last_known.forget(name)  # the store says there is nothing: never serve the old one
            else:
                self._last_known.put(name, found)
        return found

    def _settle(self, name: str, task: asyncio.Task[V | None]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error with no waiter left is not reported as lost
