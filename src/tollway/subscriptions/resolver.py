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

import enum
from typing import Final, Literal, TypeAlias

from tollway.lookup_cache import LookupCache, SingleFlight
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
        self._lookups = SingleFlight(
            store.get,
            cache,
            timeout_s,
            lambda: SubscriptionStoreUnavailable("the subscription store did not answer in time"),
        )

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
        return await self._lookups.lookup(customer_id)

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
