"""Verified tokens by digest, until they expire: a client reusing a token pays the signature check once.

Keyed by BLAKE2b-128 of the token (never the token itself). An entry lives until the token's ``exp`` (plus
leeway) or ``max_ttl_s``, whichever comes first, measured on the injected monotonic clock; the cache holds
at most ``max_entries`` (least recently used go first). Only verified tokens are cached. Pure.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


def token_digest(token: str) -> bytes:
    """Defined for any text a client can send (``surrogatepass``: even lone surrogates encode)."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TokenCache(Generic[V]):
    __slots__ = ("_entries", "_max_entries", "_max_ttl", "_monotonic")

    def __init__(self, monotonic: Callable[[], float], max_entries: int = 100_000, max_ttl_s: float = 300.0) -> None:
        if max_entries < 1 or max_ttl_s < 0:
            raise ValueError("max_entries must be >= 1 and max_ttl_s >= 0")
        self._monotonic = monotonic
        self._max_entries = max_entries
        self._max_ttl = max_ttl_s
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def get(self, digest: bytes) -> V | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._monotonic() >= entry[0]:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry[1]

    def put(self, digest: bytes, value: V, valid_for_s: float) -> None:
        """Remember ``value`` for ``valid_for_s`` seconds (capped at ``max_ttl_s``; ≤ 0: not at all)."""
        ttl = min(valid_for_s, self._max_ttl)
        if ttl <= 0:
            return
        entries = self._entries
        entries[digest] = (self._monotonic() + ttl, value)
        entries.move_to_end(digest)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
