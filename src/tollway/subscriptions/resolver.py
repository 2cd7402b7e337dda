"""Customer id → :class:`Subscription` (or ``None``: no subscription), cached, with a bounded lookup.

Two steps, like the authenticator: :meth:`SubscriptionResolver.cached` answers from the in-process
cache with no I/O, and :meth:`SubscriptionResolver.resolve` asks the store once per customer however
many requests wait (single flight), within ``timeout_s``.

``cached`` returns one of three things, told apart with ``is``::

    found = resolver.cached(customer_id)
    if found is MISS:                      # not cached (or expired): look it up
        found = await resolver.resolve(customer_id)
    if found is None:                      # cached or fetched: the customer has no subscription
        ...refuse (no plan grants anything)
    else:                                  # a Subscription
        ...

``MISS`` is the only member of the :class:`CacheMiss` enum, so ``found is MISS`` narrows the type
for mypy (``Subscription | None`` afterwards) and cannot be confused with "no subscription".
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final, Literal, TypeAlias

from tollway.lookup_cache import LookupCache
from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.store import SubscriptionStore

SubscriptionCache: TypeAlias = LookupCache[Subscription]


class CacheMiss(enum.Enum):
    """Nothing fresh cached for the customer: :meth:`SubscriptionResolver.resolve` must be awaited."""

    MISS = "miss"

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = CacheMiss.MISS

CachedSubscription: TypeAlias = Subscription | Literal[CacheMiss.MISS] | None


class SubscriptionResolver:
    def __init__(self, store: SubscriptionStore, cache: SubscriptionCache, timeout_s: float = 0.1) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self._store = store
        self._cache = cache
        self._timeout = timeout_s
        self._inflight: dict[str, asyncio.Task[Subscription | None]] = {}

    @property
    def cache(self) -> SubscriptionCache:
        return self._cache

    def cached(self, customer_id: str) -> CachedSubscription:
        """The cached answer (a subscription, or ``None`` for none), or ``MISS``. No I/O."""
        hit = self._cache.get(customer_id)
        return MISS if hit is None else hit.record

    async def resolve(self, customer_id: str) -> Subscription | None:
        """The customer's subscription from the store (and now cached), or ``None`` if they have none.

        Raises :class:`SubscriptionStoreUnavailable` when the store fails or does not answer within
        ``timeout_s``. Concurrent calls for one customer share a single store lookup."""
        task = self._inflight.get(customer_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(customer_id))
            self._inflight[customer_id] = task
            task.add_done_callback(lambda t: self._settle(customer_id, t))
        return await asyncio.shield(task)

    async def get(self, customer_id: str) -> Subscription | None:
        """``cached`` then, on a miss, ``resolve``."""
        found = self.cached(customer_id)
        if found is MISS:
            return await self.resolve(customer_id)
        return found

    def evict(self, customer_id: str) -> None:
        """Forget a customer's cached answer (a change was announced)."""
        self._cache.evict(customer_id)

    def clear(self) -> None:
        """Forget every cached answer (announcements may have been missed)."""
        self._cache.clear()

    async def follow_changes(self) -> None:
        """Run until cancelled: evict customers as their changes are announced (start it as a task)."""
        await self._store.watch_changes(self.evict, self.clear)

    async def _fetch(self, customer_id: str) -> Subscription | None:
        try:
            async with asyncio.timeout(self._timeout):
                subscription = await self._store.get(customer_id)
        except TimeoutError as exc:
            raise SubscriptionStoreUnavailable("the subscription store did not answer in time") from exc
        self._cache.put(customer_id, subscription)
        return subscription

    def _settle(self, customer_id: str, task: asyncio.Task[Subscription | None]) -> None:
        if self._inflight.get(customer_id) is task:
            del self._inflight[customer_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error with no waiter left is not reported as lost
