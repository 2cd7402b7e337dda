"""An in-memory KeyStore for unit tests of the pure flow (the Redis store has its own suite), and a limiter
that stalls like a paused Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tollway.auth.errors import CredentialStoreUnavailable
from tollway.auth.records import KeyRecord
from tollway.ratelimit import LimiterUnavailable, MemoryLimiter, Policy, Verdict
from tollway.ratelimit.money import Money
from tollway.ratelimit.refunds import Refund


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


class StallingLimiter:
    """A ``Limiter`` over :class:`~tollway.ratelimit.MemoryLimiter` that, while ``stalled``, answers
    nothing: each call waits ``bound_s`` (its own time bound, like the coalescer's per-batch timer) and
    raises ``LimiterUnavailable`` — a paused Redis."""

    def __init__(self, bound_s: float = 0.1) -> None:
        self.memory = MemoryLimiter()
        self.bound_s = bound_s
        self.stalled = False
        self.calls = 0

    async def _stall(self) -> None:
        self.calls += 1
        if self.stalled:
            await asyncio.sleep(self.bound_s)
            raise LimiterUnavailable(f"no answer within {self.bound_s} s")

    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        await self._stall()
        return await self.memory.consume(partition, policies, cost, now_ms, refund, money)

    async def refund(
        self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int, money: Money | None = None
    ) -> None:
        await self._stall()
        await self.memory.refund(partition, policies, refund, now_ms, money)
