"""In-process cache of store lookups (API key records by digest, subscriptions by customer) with a
short TTL.

Positive and negative answers are cached (the latter possibly for less time, so a record created a
moment after a failed lookup is found quickly even if the change announcement is missed). The cache is
bounded; the oldest entries go first. Changes are announced over Redis pub/sub and evict the entry at
once; the TTL is the bound when an announcement is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")


class CachedLookup(NamedTuple, Generic[V]):
    """A remembered store answer: ``record`` is ``None`` when the store had nothing under that name."""

    deadline: float
    record: V | None


class LookupCache(Generic[V]):
    __slots__ = ("_entries", "_max_entries", "_monotonic", "_negative_ttl", "_ttl")

    def __init__(
        self,
        monotonic: Callable[[], float],
        ttl: float = 1.0,
        negative_ttl: float = 1.0,
        max_entries: int = 100_000,
    ) -> None:
        if ttl < 0 or negative_ttl < 0 or max_entries < 1:
            raise ValueError("TTLs must be >= 0 and max_entries >= 1")
        self._monotonic = monotonic
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._entries: dict[str, CachedLookup[V]] = {}

    def get(self, name: str) -> CachedLookup[V] | None:
        """The remembered answer for ``name``, or ``None`` when nothing fresh is cached."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if self._monotonic() >= entry.deadline:
            del self._entries[name]
            return None
        return entry

    def put(self, name: str, record: V | None) -> None:
        ttl = self._ttl if record is not None else self._negative_ttl
        if ttl <= 0:
            return
        entries = self._entries
        if name not in entries and len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        entries[name] = CachedLookup(self._monotonic() + ttl, record)

    def evict(self, name: str) -> None:
        self._entries.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
