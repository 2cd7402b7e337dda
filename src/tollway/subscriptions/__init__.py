"""Subscriptions: which plan a customer is on, how their billing periods are cut, their own limits.

- :mod:`.model` — :class:`Subscription` (pure)
- :mod:`.store` — the :class:`SubscriptionStore` protocol; :mod:`.redis_store` — on Redis
- :mod:`.resolver` — cached, single-flight, time-bounded lookups for the request path
- :mod:`.errors` — typed failures
"""

from tollway.subscriptions.errors import SubscriptionNotFound, SubscriptionStoreUnavailable, UnreadableSubscription
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import MISS, CachedSubscription, CacheMiss, SubscriptionCache, SubscriptionResolver
from tollway.subscriptions.store import SubscriptionStore

__all__ = [
    "MISS",
    "CacheMiss",
    "CachedSubscription",
    "Subscription",
    "SubscriptionCache",
    "SubscriptionNotFound",
    "SubscriptionResolver",
    "SubscriptionStore",
    "SubscriptionStoreUnavailable",
    "UnreadableSubscription",
]
