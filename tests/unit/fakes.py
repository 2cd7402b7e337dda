"""An in-memory KeyStore for unit tests of the pure flow (the Redis store has its own suite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tollway.auth.errors import CredentialStoreUnavailable
from tollway.auth.records import KeyRecord


class MemoryKeyStore:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.fetches = 0
        self.delay = 0.0
        self.down = False
        self.changes: list[str] = []

    async def fetch(self, digest: str) -> KeyRecord | None:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise CredentialStoreUnavailable("down")
        return self.records.get(digest)

    async def insert(self, digest: str, record: KeyRecord) -> None:
        self.records[digest] = record
        self.changes.append(digest)

    async def find(self, key_id: str) -> tuple[str, KeyRecord] | None:
        for digest, record in self.records.items():
            if record.key_id == key_id:
                return digest, record
        return None

    async def update(self, digest: str, record: KeyRecord) -> None:
        self.records[digest] = record
        self.changes.append(digest)

    async def list(self, customer_id: str | None = None) -> list[KeyRecord]:
        return sorted(
            (r for r in self.records.values() if customer_id is None or r.customer_id == customer_id),
            key=lambda r: (r.created_at, r.key_id),
        )

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        await asyncio.Event().wait()
