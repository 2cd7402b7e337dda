"""An in-memory SubscriptionStore for unit tests (the Redis store has its integration suite)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.subscriptions.model import Subscription


class MemorySubscriptionStore:
    def __init__(self) -> None:
        self.records: dict[str, Subscription] = {}
        self.gets = 0
        self.delay = 0.0
        self.down = False
        self.error: Exception | None = None  # raised by get() when set (e.g. an unreadable record)
        self.changes: list[str] = []

    async def get(self, customer_id: str) -> Subscription | None:
        self.gets += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise SubscriptionStoreUnavailable("down")
        if self.error is not None:
            raise self.error
        return self.records.get(customer_id)

    async def put(self, subscription: Subscription) -> None:
        self.records[subscription.customer_id] = subscription
        self.changes.append(subscription.customer_id)

    async def delete(self, customer_id: str) -> bool:
        self.changes.append(customer_id)
        return self.records.pop(customer_id, None) is not None

    async def list(self, plan_id: str | None = None) -> list[Subscription]:
        return [s for _, s in sorted(self.records.items()) if plan_id is None or s.plan_id == plan_id]

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        await asyncio.Event().wait()
