"""The narrow interface the resolver and subscription management need from a subscription store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tollway.subscriptions.model import Subscription


class SubscriptionStore(Protocol):
    async def get(self, customer_id: str) -> Subscription | None:
        """A customer's subscription, or ``None``: the hot-path lookup (one round trip).
        Raises :class:`~tollway.subscriptions.errors.SubscriptionStoreUnavailable` when the store fails."""
        ...

    async def put(self, subscription: Subscription) -> None:
        """Create or replace a customer's subscription and announce the change to every running process."""
        ...

    async def delete(self, customer_id: str) -> bool:
        """Remove a customer's subscription and announce it; ``False`` if there was none."""
        ...

    async def list(self, plan_id: str | None = None) -> list[Subscription]:
        """Every subscription, or those on one plan, by customer id."""
        ...

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        """Run until cancelled: call ``on_change(customer_id)`` for each announced change, and
        ``on_resync()`` whenever changes may have been missed (at (re)subscription)."""
        ...
