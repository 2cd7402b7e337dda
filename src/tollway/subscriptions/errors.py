"""Typed subscription failures. They carry no HTTP or gRPC status: the edge maps them."""

from __future__ import annotations


class SubscriptionStoreUnavailable(Exception):
    """The subscription store could not answer in time (or at all). Not the caller's fault: 503."""

    reason = "subscription-store-unavailable"


class UnreadableSubscription(SubscriptionStoreUnavailable):
    """A stored subscription could not be decoded (written by a newer version, or edited by hand).

    A kind of unavailability, so the edge fails closed (503) rather than treating the customer as having
    no subscription; ``reason`` tells the two apart in logs and metrics."""

    reason = "unreadable-subscription"


class SubscriptionNotFound(LookupError):
    """A management operation named a customer that has no subscription."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"customer {customer_id!r} has no subscription")
        self.customer_id = customer_id
