"""The narrow interface the authenticator and key management need from a key store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tollway.auth.records import KeyRecord


class KeyStore(Protocol):
    async def fetch(self, digest: str) -> KeyRecord | None:
        """The record stored under a key digest: the hot-path lookup."""
        ...

    async def insert(self, digest: str, record: KeyRecord) -> None:
        """Store a new key; announces the digest so negative cache entries are dropped everywhere."""
        ...

    async def find(self, key_id: str) -> tuple[str, KeyRecord] | None:
        """A key's digest and record by its public id."""
        ...

    async def update(self, digest: str, record: KeyRecord) -> None:
        """Overwrite a key's record and announce the change to every running process."""
        ...

    async def list(self, customer_id: str | None = None) -> list[KeyRecord]:
        """Records (never secrets), optionally of one customer, oldest first."""
        ...

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        """Run until cancelled: call ``on_change(digest)`` for each announced change, and
        ``on_resync()`` whenever changes may have been missed (at (re)subscription)."""
        ...
