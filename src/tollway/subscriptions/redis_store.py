"""Subscription store on Redis (or Valkey).

Layout (``{p}`` is the configured prefix, ``tw:`` by default)::

    {p}subscription:{<customer>}      hash    the Subscription fields (overrides as compact JSON)
    {p}subscriptions                  set     every customer id with a subscription
    {p}plan-subscriptions:<plan>      set     customer ids on a plan
    {p}subscription-changes           pub/sub channel: customer ids whose subscription changed

The customer id in the record key is a Redis Cluster hash tag (``{...}``): a customer's subscription
and their rate-limit and quota counters (keyed ``...{<customer>}...`` too) live in one slot, so one
script can read and update them together. Customer ids cannot contain braces (see
``tollway.auth.records.check_identifier``).

The indexes live in other slots, so writes are ordered, not transactional: on ``put`` the indexes
first and the record last (a reader never sees a record missing from its indexes; an interrupted write
leaves an index entry that listing skips); on ``delete`` the record first, then the indexes. The
record is overwritten field by field (every field is always written), never deleted and re-created,
so a concurrent ``get`` sees the old or the new subscription, never none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import RedisError

from tollway.change_feed import follow_channel
from tollway.redis_types import RedisClient
from tollway.subscriptions.errors import SubscriptionStoreUnavailable, UnreadableSubscription
from tollway.subscriptions.model import Subscription

log = logging.getLogger(__name__)


class RedisSubscriptionStore:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "tw:",
        *,
        subscriber: RedisClient | None = None,
        resubscribe_delay: float = 0.2,
    ) -> None:
        """``subscriber`` is a client for the change channel; it must not have the short socket
        timeout of the hot-path client, or an idle subscription would time out."""
        self._redis = redis
        self._subscriber = subscriber or redis
        self._prefix = prefix
        self._channel = f"{prefix}subscription-changes"
        self._all = f"{prefix}subscriptions"
        self._resubscribe_delay = resubscribe_delay

    @property
    def channel(self) -> str:
        return self._channel

    def record_key(self, customer_id: str) -> str:
        return f"{self._prefix}subscription:{{{customer_id}}}"

    def _plan_key(self, plan_id: str) -> str:
        return f"{self._prefix}plan-subscriptions:{plan_id}"

    async def get(self, customer_id: str) -> Subscription | None:
        try:
            fields = cast(dict[str, str], await self._redis.hgetall(self.record_key(customer_id)))
        except (RedisError, OSError) as exc:
            raise SubscriptionStoreUnavailable(str(exc) or type(exc).__name__) from exc
        return _decode(customer_id, fields)

    async def put(self, subscription: Subscription) -> None:
        customer_id = subscription.customer_id
        record = self.record_key(customer_id)
        # The raw plan id (not a decoded record), so an unreadable record can still be overwritten.
        old_plan = cast(str | None, await self._redis.hget(record, "plan_id"))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._all, customer_id)
            pipe.sadd(self._plan_key(subscription.plan_id), customer_id)
            pipe.hset(record, mapping=cast(dict[Any, Any], subscription.to_fields()))
            if old_plan and old_plan != subscription.plan_id:
                pipe.srem(self._plan_key(old_plan), customer_id)
            await pipe.execute()
        await self._redis.publish(self._channel, customer_id)  # not pipelined: Redis Cluster refuses that

    async def delete(self, customer_id: str) -> bool:
        record = self.record_key(customer_id)
        old_plan = cast(str | None, await self._redis.hget(record, "plan_id"))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(record)
            pipe.srem(self._all, customer_id)
            if old_plan:
                pipe.srem(self._plan_key(old_plan), customer_id)
            replies = await pipe.execute()
        await self._redis.publish(self._channel, customer_id)  # not pipelined: Redis Cluster refuses that
        return bool(replies[0])

    async def list(self, plan_id: str | None = None) -> list[Subscription]:
        index = self._plan_key(plan_id) if plan_id is not None else self._all
        customer_ids = sorted(cast(set[str], await self._redis.smembers(index)))
        if not customer_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                pipe.hgetall(self.record_key(customer_id))
            replies = cast(list[dict[str, str]], await pipe.execute())
        found = []
        for customer_id, fields in zip(customer_ids, replies, strict=True):
            subscription = _decode(customer_id, fields)
            # Index entries of an interrupted write or a concurrent plan change are skipped.
            if subscription is not None and (plan_id is None or subscription.plan_id == plan_id):
                found.append(subscription)
        return found

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        await follow_channel(
            self._subscriber, self._channel, on_change, on_resync, resubscribe_delay=self._resubscribe_delay
        )


def _decode(customer_id: str, fields: dict[str, str]) -> Subscription | None:
    if not fields:
        return None
    try:
        return Subscription.from_fields(fields)
    except ValueError as exc:
        log.error("subscription of customer %r is unreadable: %s", customer_id, exc)
        raise UnreadableSubscription(
            f"the stored subscription of customer {customer_id!r} is unreadable: {exc}"
        ) from exc
