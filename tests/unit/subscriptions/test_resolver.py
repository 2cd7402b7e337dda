import asyncio
from datetime import UTC, datetime

import pytest

from tollway.clock import ManualClock
from tollway.subscriptions import (
    MISS,
    Subscription,
    SubscriptionCache,
    SubscriptionResolver,
    SubscriptionStoreUnavailable,
)

from .fakes import MemorySubscriptionStore

START = datetime(2026, 1, 1, tzinfo=UTC)


def make(
    store: MemorySubscriptionStore, timeout: float = 0.1, negative_ttl: float = 1.0
) -> tuple[SubscriptionResolver, ManualClock]:
    clock = ManualClock()
    cache = SubscriptionCache(clock.monotonic, ttl=1.0, negative_ttl=negative_ttl)
    return SubscriptionResolver(store, cache, timeout_s=timeout), clock


def test_miss_then_resolve_then_cached_without_io() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        sub = Subscription.new("acme", "pro", START)
        await store.put(sub)
        resolver, clock = make(store)
        assert resolver.cached("acme") is MISS
        assert await resolver.resolve("acme") == sub
        assert resolver.cached("acme") == sub
        assert await resolver.get("acme") == sub
        assert store.gets == 1
        clock.advance(1.0)  # TTL elapsed
        assert resolver.cached("acme") is MISS

    asyncio.run(scenario())


def test_no_subscription_is_cached_as_none_not_as_a_miss() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        resolver, _ = make(store)
        assert await resolver.resolve("ghost") is None
        found = resolver.cached("ghost")
        assert found is None
        assert found is not MISS
        assert store.gets == 1

    asyncio.run(scenario())


def test_concurrent_lookups_of_one_customer_share_one_store_call() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        store.delay = 0.02
        await store.put(Subscription.new("acme", "pro", START))
        await store.put(Subscription.new("beta", "free", START))
        resolver, _ = make(store)
        results = await asyncio.gather(*(resolver.resolve(c) for c in ["acme"] * 50 + ["beta"] * 50))
        assert {r.plan_id for r in results if r} == {"pro", "free"}
        assert store.gets == 2

    asyncio.run(scenario())


def test_a_slow_store_is_unavailable_within_the_timeout_and_nothing_is_cached() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        store.delay = 5
        resolver, _ = make(store, timeout=0.05)
        loop = asyncio.get_running_loop()
        began = loop.time()
        waiters = [resolver.resolve("acme") for _ in range(3)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, SubscriptionStoreUnavailable) for o in outcomes)
        assert loop.time() - began < 0.5
        assert store.gets == 1
        assert resolver.cached("acme") is MISS

    asyncio.run(scenario())


def test_a_failing_store_is_unavailable_and_a_later_call_retries() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        store.down = True
        resolver, _ = make(store)
        with pytest.raises(SubscriptionStoreUnavailable):
            await resolver.resolve("acme")
        store.down = False
        assert await resolver.resolve("acme") is None
        assert store.gets == 2

    asyncio.run(scenario())


def test_announced_changes_evict() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        await store.put(Subscription.new("acme", "pro", START))
        resolver, _ = make(store)
        await resolver.resolve("acme")
        await store.put(Subscription.new("acme", "enterprise", START))
        resolver.evict("acme")
        assert resolver.cached("acme") is MISS
        assert (await resolver.get("acme")).plan_id == "enterprise"  # type: ignore[union-attr]
        resolver.clear()
        assert len(resolver.cache) == 0

    asyncio.run(scenario())


def test_a_waiter_cancelled_does_not_cancel_the_shared_lookup() -> None:
    async def scenario() -> None:
        store = MemorySubscriptionStore()
        store.delay = 0.02
        await store.put(Subscription.new("acme", "pro", START))
        resolver, _ = make(store)
        first = asyncio.ensure_future(resolver.resolve("acme"))
        second = asyncio.ensure_future(resolver.resolve("acme"))
        await asyncio.sleep(0)
        first.cancel()
        assert (await second).plan_id == "pro"  # type: ignore[union-attr]
        assert store.gets == 1

    asyncio.run(scenario())


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        make(MemorySubscriptionStore(), timeout=0)
