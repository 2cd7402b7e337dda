"""Lease records in ``consume.lua`` (``ratelimit.money``, kind 9) on real Valkey: the behaviour suite of
tests/unit/ratelimit/test_money_lease_records.py, whose model is ``MemoryLimiter``. Answers lost before
or after the script ran never cost a prepaid customer money once the owed refunds are sent, a refund sent
twice is applied once, and every record is closed."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis

from tests.integration.test_money_redis import limiter
from tests.support.lossy_limiter import LossyLimiter, run_lossy, settle_all
from tests.unit.ratelimit.test_money_lease_records import POLICIES, lossy_timelines
from tests.unit.ratelimit.test_money_leases import PREPAID, PRICE, T0
from tollway.credits.grants import GrantState, decode_all
from tollway.harness.valkey import ValkeyServer
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.money import Money
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.verdict import Verdict

pytestmark = pytest.mark.integration

FUNDS = 10_000 * PRICE


async def burned(redis: Redis, customer: str) -> int:
    return FUNDS - sum(g.remaining for g in decode_all(await redis.hgetall(f"tw:cr:{{{customer}}}")))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lossy_timelines())
def test_lost_answers_never_cost_a_prepaid_customer_money(
    valkey_fresh: ValkeyServer, timeline: tuple[int, list, list[str]]
) -> None:
    processes, requests, fates = timeline

    async def main() -> None:
        async with limiter(valkey_fresh) as (redis_limiter, redis):
            customer = "c"
            await redis.delete(*[k async for k in redis.scan_iter("tw:*")] or ["-"])
            await redis.hset(f"tw:cr:{{{customer}}}", "g1", GrantState("g1", FUNDS).encode())
            script = iter(fates)
            lossy = LossyLimiter(redis_limiter, script)
            limiters = [LeasingLimiter(lossy, max_lease_ms=100) for _ in range(processes)]
            admitted = await run_lossy(limiters, requests, POLICIES, PREPAID)
            for _ in script:
                pass
            await settle_all(limiters, requests[-1].at_ms + 1000)
            assert await burned(redis, customer) == admitted * PRICE, "charged exactly the admitted requests"
            assert await redis.get(f"tw:cq:{{{customer}}}:calls:{T0}") in (None, str(admitted))
            assert await redis.hlen(f"tw:ls:{{{customer}}}") == 0, "every lease record was closed"

    asyncio.run(main())


def test_a_refund_sent_twice_is_applied_once_and_a_take_never_counted_gives_nothing(
    valkey_fresh: ValkeyServer,
) -> None:
    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            await redis.hset("tw:cr:{c}", "g1", GrantState("g1", FUNDS).encode())
            leased = Money(PREPAID.charges, (4,), balance_period_start_ms=T0, lease="p1.1")
            verdict: Verdict = await lim.consume("c", POLICIES, (4, 4), T0, None, leased)
            assert verdict.admitted
            assert await redis.hkeys("tw:ls:{c}") == ["p1.1"]
            back = Refund((3, 3), T0, (3,), lease="p1.1")
            for _ in range(3):
                await lim.refund("c", POLICIES, back, T0 + 1, PREPAID)
            assert await burned(redis, "c") == PRICE
            assert await redis.get(f"tw:cq:{{c}}:calls:{T0}") == "1"
            assert await redis.hlen("tw:ls:{c}") == 0
            # A take that was never counted (its record is not there): closing it gives nothing back.
            await lim.refund("c", POLICIES, Refund((1, 1), T0, (1,), lease="p1.2"), T0 + 2, PREPAID)
            assert await burned(redis, "c") == PRICE
            assert await redis.get(f"tw:cq:{{c}}:calls:{T0}") == "1"
            # The policies' units follow the same rule: the month quota still counts the one request.
            month = await redis.get(f"tw:q:{{c}}:month:{T0}")
            assert month == "1"

    asyncio.run(main())
