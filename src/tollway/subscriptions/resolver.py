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

While the store cannot be reached (it times out, the check's deadline passes, or the connection fails —
not when it answers "no subscription", nor when the stored one is unreadable), ``resolve`` answers with
the subscription it last read, if ``last_known`` holds one young enough (``TOLLWAY_STALE_MAX_S``).

``MISS`` is the only member of the :class:`CacheMiss` enum, so ``found is MISS`` narrows the type
for mypy (``Subscription | None`` afterwards) and cannot be confused with "no subscription".
"""

from __future__ import annotations

import enum
from typing import Final, Literal, TypeAlias

from tollway.lookup_cache import LastKnown, LookupCache, SingleFlight
from tollway.subscriptions.errors import SubscriptionStoreUnavailable, UnreadableSubscription
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
    def __init__(
        self,
        store: SubscriptionStore,
        cache: SubscriptionCache,
        timeout_s: float = 0.1,
        *,
        last_known: LastKnown[Subscription] | None = None,
    ) -> None:
        """``last_known``: subscriptions served while the store cannot be reached (None: none)."""
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
            last_known=last_known,
            is_outage=_store_unreachable,
        )
        self._last_known = last_known

    @property
    def cache(self) -> SubscriptionCache:
        return self._cache

    def cached(self, customer_id: str) -> CachedSubscription:
        """The cached answer (a subscription, or ``None`` for none), or ``MISS``. No I/O."""
        hit = self._cache.get(customer_id)
        return MISS if hit is None else hit.record

    @property
    def stale_answers(self) -> int:
        """Lookups answered with a last-known subscription because the store could not be reached."""
        return self._lookups.stale_answers

    async def resolve(self, customer_id: str, deadline: float | None = None) -> Subscription | None:
        """The customer's subscription from the store (and now cached), or ``None`` if they have none.

        Raises :class:`SubscriptionStoreUnavailable` when the store fails or does not answer within
        ``timeout_s`` (or by ``deadline``, event-loop time) and no last-known subscription may stand in.
        Concurrent calls for one customer share a single store lookup."""
        return await self._lookups.lookup(customer_id, deadline)

    async def get(self, customer_id: str) -> Subscription | None:
        """``cached`` then, on a miss, ``resolve``."""
        found = self.cached(customer_id)
        if found is MISS:
            return await self.resolve(customer_id)
        return found

    def evict(self, customer_id: str) -> None:
        """Forget a customer's cached answer and last-known subscription (a change was announced)."""
        self._cache.evict(customer_id)
        if self._last_known is not None:
            self._last_known.forget(customer_id)

    def clear(self) -> None:
        """Forget every cached answer (announcements may have been missed). Last-known subscriptions stay:
        they only ever stand in while the store cannot be reached, within their age bound."""
        self._cache.clear()

    async def follow_changes(self) -> None:
        """Run until cancelled: evict customers as their changes are announced (start it as a task)."""
        await self._store.watch_changes(self.evict, self.clear)


def _store_unreachable(exc: Exception) -> bool:
    return isinstance(exc, SubscriptionStoreUnavailable) and not isinstance(exc, UnreadableSubscription)
