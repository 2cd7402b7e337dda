"""In-process cache of key lookups, keyed by digest (never by the key), with a short TTL.

Positive and negative answers are cached (the latter for less time, so a key created a moment after a
failed lookup starts working quickly even if the change announcement is missed). The cache is bounded;
the oldest entries go first. Revocations and creations are announced over Redis pub/sub and evict the
entry at once; the TTL is the bound when an announcement is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tollway.auth.records import KeyRecord


class CachedLookup(NamedTuple):
    """A remembered store answer: ``record`` is ``None`` when the store had no such key."""

    deadline: float
    record: KeyRecord | None


class KeyCache:
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
        self._entries: dict[str, CachedLookup] = {}

    def get(self, digest: str) -> CachedLookup | None:
        """The remembered answer for ``digest``, or ``None`` when nothing fresh is cached."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._monotonic() >= entry.deadline:
            del self._entries[digest]
            return None
        return entry

    def put(self, digest: str, record: KeyRecord | None) -> None:
        ttl = self._ttl if record is not None else self._negative_ttl
        if ttl <= 0:
            return
        entries = self._entries
        if digest not in entries and len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        entries[digest] = CachedLookup(self._monotonic() + ttl, record)

    def evict(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
