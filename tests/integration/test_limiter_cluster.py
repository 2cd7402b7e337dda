"""RedisLimiter on a real 3-master Valkey Cluster: the shared behaviour suite, one slot per customer,
customers spread over the masters, and exactness under concurrency from two independent clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.support.limiter_suite import DAY, SCENARIOS, T0, Scenario
from tollway.harness.valkey_cluster import ValkeyCluster
from tollway.ratelimit import Policy, QuotaPolicy, RedisLimiter, WindowPolicy
from tollway.ratelimit.keys import quota_key, window_key

pytestmark = pytest.mark.integration


@asynccontextmanager
async def cluster_limiter(cluster: ValkeyCluster) -> AsyncIterator[tuple[RedisLimiter, RedisCluster, str]]:
    redis = RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
    prefix = f"t{uuid.uuid4().hex[:8]}:"  # the cluster is shared by the session: keep tests apart
    lim = RedisLimiter(redis, prefix=prefix, server_time=False)  # these tests drive time
    try:
        yield lim, redis, prefix
    finally:
        await lim.aclose()
        await redis.aclose()


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_behaviour_suite(valkey_cluster: ValkeyCluster, scenario: Scenario) -> None:
    async def main() -> None:
        async with cluster_limiter(valkey_cluster) as (lim, _, _):
            await scenario(lim)

    asyncio.run(main())


def test_a_customers_keys_share_one_slot_and_customers_spread_over_masters(valkey_cluster: ValkeyCluster) -> None:
    async def main() -> None:
        async with cluster_limiter(valkey_cluster) as (lim, redis, prefix):
            masters = set()
            for i in range(30):
                customer = f"cust-{i}"
                keys = [window_key(prefix, customer, "burst"), quota_key(prefix, customer, "month", T0)]
                slots = {await redis.cluster_keyslot(key) for key in keys}
                assert slots == {await redis.cluster_keyslot(customer)}
                node = redis.get_node_from_key(keys[0])
                assert node is not None
                masters.add(node.name)
                policies: list[Policy] = [
                    WindowPolicy.sliding("burst", 5, 1000),
                    QuotaPolicy("month", 10, T0, T0 + DAY),
                ]
                assert (await lim.consume(customer, policies, 1, T0)).admitted
            assert len(masters) == 3
            assert len(valkey_cluster.startup_nodes) == 3

    asyncio.run(main())


def test_500_concurrent_checks_from_two_clients_admit_exactly_the_limit(valkey_cluster: ValkeyCluster) -> None:
    policies: list[Policy] = [WindowPolicy.sliding("burst", 100, 60_000), QuotaPolicy("month", 1000, T0, T0 + 30 * DAY)]

    async def main() -> None:
        async with cluster_limiter(valkey_cluster) as (a, redis, prefix):
            b = RedisLimiter(
                RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=1),
                prefix=prefix,
                server_time=False,
            )
            other = [f"other-{i}" for i in range(5)]  # other customers in the same batches, on other slots
            checks = [(a if i % 2 else b).consume("cust-1", policies, 1, T0 + i % 7) for i in range(500)]
            checks += [a.consume(c, policies, 1, T0) for c in other]
            verdicts = await asyncio.gather(*checks)
            assert sum(v.admitted for v in verdicts[:500]) == 100
            assert all(v.admitted for v in verdicts[500:])
            window = await redis.hgetall(window_key(prefix, "cust-1", "burst"))
            assert sum(int(n) for field, n in window.items() if field not in ("t", "o")) == 100
            assert window["t"] == "100"  # the running total
            assert await redis.get(quota_key(prefix, "cust-1", "month", T0)) == "100"
            assert a.round_trips < a.checks / 10
            assert b.round_trips < b.checks / 10
            await b.aclose()

    asyncio.run(main())


def test_each_customers_windows_are_counted_on_its_shards_clock(valkey_cluster: ValkeyCluster) -> None:
    """With ``server_time`` (what ``tollway serve`` runs), every script takes the window time from the
    TIME of the shard holding the customer's slot, whatever the callers' clocks: two clients 2 s apart,
    checks of customers on every master in the same pipelines, each customer admitted exactly its limit
    in one bucket, and every verdict decided at the shards' time (this host's clock)."""
    window = WindowPolicy.sliding("burst", 5, 10_000)

    async def main() -> None:
        async with cluster_limiter(valkey_cluster) as (_, redis, prefix):
            clients = [
                RedisLimiter(
                    RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=1), prefix=prefix
                )
                for _ in range(2)
            ]
            customers = [f"cust-{i}" for i in range(12)]
            before = time.time_ns() // 1_000_000
            checks = [
                clients[i % 2].consume(customer, [window], 1, before + (2000 if i % 2 else 0))
                for customer in customers
                for i in range(8)
            ]
            verdicts = await asyncio.gather(*checks)
            after = time.time_ns() // 1_000_000
            for n, customer in enumerate(customers):
                assert sum(v.admitted for v in verdicts[8 * n : 8 * n + 8]) == 5, customer
            assert all(before <= v.at_ms <= after for v in verdicts)
            await redis.initialize()
            masters = {redis.get_node_from_key(window_key(prefix, c, "burst")).name for c in customers}  # type: ignore[union-attr]
            assert len(masters) == 3
            for client in clients:
                await client.aclose()

    asyncio.run(main())


def test_threshold_and_money_events_are_appended_in_the_customers_slot(valkey_cluster: ValkeyCluster) -> None:
    """The outbox stream, the once-markers and the funding epoch carry the customer's hash tag: on a
    cluster the script appends each crossing and money event on the customer's own master."""
    from tollway.credits.charges import RealTimeCharge
    from tollway.credits.grants import GrantState
    from tollway.notifications.events import Event
    from tollway.notifications.keys import once_key, ready_key, stream_key
    from tollway.ratelimit.keys import funding_key, grants_key
    from tollway.ratelimit.money import Money, MoneyAlerts
    from tollway.ratelimit.policies import Alerting

    async def main() -> None:
        async with cluster_limiter(valkey_cluster) as (lim, redis, prefix):
            alerting = Alerting((2, 4), ("50%", "100%"), "pro", "read")
            calls = RealTimeCharge("calls", "per_unit", T0, T0 + DAY, unit=1_000_000)
            for i in range(12):
                customer = f"ev-{i}"
                slot = await redis.cluster_keyslot(customer)
                for key in (
                    stream_key(prefix, customer),
                    once_key(prefix, customer, "evt_x"),
                    funding_key(prefix, customer),
                ):
                    assert await redis.cluster_keyslot(key) == slot
                await redis.hset(grants_key(prefix, customer), "g", GrantState("g", 2_000_000).encode())
                await redis.incr(funding_key(prefix, customer))
                money = Money((calls,), (1,), T0, alerts=MoneyAlerts("USD", (1_000_000,)))
                quota = QuotaPolicy("month", 4, T0, T0 + DAY, alerting=alerting)
                for k in range(3):
                    await lim.consume(customer, [quota], 2, T0 + k, money=money)
                entries = await redis.xrange(stream_key(prefix, customer))
                events = [Event.from_stream(fields) for _, fields in entries]
                assert [e.type for e in events] == [
                    "quota.threshold_crossed",
                    "quota.threshold_crossed",
                    "balance.low",
                    "balance.exhausted",
                ]
            await asyncio.sleep(0.05)
            assert {f"ev-{i}" for i in range(12)} <= await redis.smembers(ready_key(prefix))

    asyncio.run(main())
