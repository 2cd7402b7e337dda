"""Threshold crossings detected in ``consume.lua``: one outbox entry per crossed level, in the same atomic
call that counts it, with the id, type, time and body the pure model (``MemoryLimiter``) produces; refunds
that re-cross and new periods; the customer announced in the ready set; the RFC 3339 formatter of the
script checked against Python's."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.support.limiter_suite import DAY, T0
from tollway.credits.charges import RealTimeCharge
from tollway.credits.grants import GrantState
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.events import Event, event_id, threshold_event_id
from tollway.notifications.keys import once_key, ready_key, stream_key
from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, RedisLimiter, WindowPolicy
from tollway.ratelimit.alerts import rfc3339
from tollway.ratelimit.keys import funding_key
from tollway.ratelimit.money import Money, MoneyAlerts, SpendCap
from tollway.ratelimit.policies import Alerting
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.script import SCRIPT

pytestmark = pytest.mark.integration


@asynccontextmanager
async def limiter(server: ValkeyServer, *, coalesce: bool = False) -> AsyncIterator[tuple[RedisLimiter, Redis]]:
    redis = Redis.from_url(server.url, decode_responses=True)
    lim = RedisLimiter(redis, coalesce=coalesce, server_time=False)
    try:
        yield lim, redis
    finally:
        await lim.aclose()
        await redis.aclose()


async def outbox(redis: Redis, customer: str, prefix: str = "tw:") -> list[Event]:
    entries = await redis.xrange(stream_key(prefix, customer))
    return [Event.from_stream(fields) for _, fields in entries]


def alerting(*levels: int, labels: tuple[str, ...] | None = None) -> Alerting:
    return Alerting(levels, labels or tuple(str(level) for level in levels), "pro", "read")


FORMATTER = re.search(r"-- BEGIN rfc3339.*?-- END rfc3339", SCRIPT, re.S)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 253_402_300_799_999), min_size=1, max_size=50))
def test_the_scripts_rfc3339_formatter_is_pythons(valkey_fresh: ValkeyServer, stamps: list[int]) -> None:
    """Every millisecond from 1970 to 9999-12-31: civil-from-days in Lua equals Python's datetime."""
    assert FORMATTER is not None
    probe = (
        FORMATTER.group(0) + "\nlocal out = {}\nfor i = 1, #ARGV do out[i] = rfc3339(tonumber(ARGV[i])) end\nreturn out"
    )
    stamps += [0, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 1_709_164_800_500]  # leap days, 2100

    async def main() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            got = await redis.eval(probe, 0, *stamps)
        finally:
            await redis.aclose()
        assert got == [rfc3339(ms) for ms in stamps]

    asyncio.run(main())


def test_a_quota_pushed_past_its_levels_appends_each_crossing_once(valkey_fresh: ValkeyServer) -> None:
    quota = QuotaPolicy("month", 10, T0, T0 + 30 * DAY, alerting=alerting(5, 8, 10, labels=("50%", "80%", "100%")))
    plain = WindowPolicy.sliding("burst", 100, 1000)

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            now = T0 + 1234
            for k in range(12):
                await lim.consume("c1", [plain, quota], [1, 1 if k != 6 else 2], now + k)
            events = await outbox(redis, "c1")
            assert [(e.type, e.data["threshold"], e.data["used"]) for e in events] == [
                ("quota.threshold_crossed", 5, 5),
                ("quota.threshold_crossed", 8, 8),  # the cost-2 check (6 → 8)
                ("quota.threshold_crossed", 10, 10),
            ]
            first = events[0]
            assert first.id == threshold_event_id("quota.threshold_crossed", "c1", "month", T0, 5)
            assert first.customer_id == "c1"
            assert first.ts_ms == now + 4
            assert dict(first.data) == {
                "plan": "pro",
                "feature": "read",
                "policy": "month",
                "limit": 10,
                "used": 5,
                "threshold": 5,
                "threshold_label": "50%",
                "period_start": "2100-01-01T00:00:00Z",
                "period_end": "2100-01-31T00:00:00Z",
            }
            assert events[1].data["used"] == 8
            assert await redis.smembers(ready_key("tw:")) == {"c1"}
            ttl = await redis.pttl(once_key("tw:", "c1", first.id))
            assert 30 * DAY + DAY - 1234 - 5000 < ttl <= 30 * DAY + DAY - 1234
            # The stream key is the customer's: in the slot of {c1}, like the counters.
            assert stream_key("tw:", "c1").endswith("{c1}")

    asyncio.run(main())


def test_refunds_that_re_cross_and_refusals_append_nothing_more(valkey_fresh: ValkeyServer) -> None:
    quota = QuotaPolicy("month", 10, T0, T0 + DAY, alerting=alerting(5, 10))

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            await lim.consume("c2", [quota], 6, T0)  # crosses 5
            await lim.refund("c2", [quota], Refund((3,), T0), T0 + 1)  # back to 3
            await lim.consume("c2", [quota], 3, T0 + 2)  # crosses 5 again: the same event, not appended
            assert [e.data["threshold"] for e in await outbox(redis, "c2")] == [5]
            refused = await lim.consume("c2", [quota], 5, T0 + 3)  # 6 + 5 > 10: refused, crosses nothing
            assert not refused.admitted
            assert [e.data["threshold"] for e in await outbox(redis, "c2")] == [5]
            await lim.consume("c2", [quota], 4, T0 + 4)
            assert [e.data["threshold"] for e in await outbox(redis, "c2")] == [5, 10]
            # The next period starts fresh: its own ids.
            nxt = QuotaPolicy("month", 10, T0 + DAY, T0 + 2 * DAY, alerting=alerting(5, 10))
            await lim.consume("c2", [nxt], 5, T0 + DAY)
            events = await outbox(redis, "c2")
            assert [e.data["threshold"] for e in events] == [5, 10, 5]
            assert events[2].data["period_start"] == "2100-01-02T00:00:00Z"
            assert len({e.id for e in events}) == 3

    asyncio.run(main())


def test_a_rate_limit_crossing_belongs_to_its_aligned_window(valkey_fresh: ValkeyServer) -> None:
    window = WindowPolicy.sliding("burst", 4, 1000, alerting=alerting(2, 4, labels=("50%", "100%")))

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            for k in range(4):
                await lim.consume("c3", [window], 1, T0 + 100 + k)
            await lim.consume("c3", [window], 2, T0 + 2500)  # the old units left: crossed again, a new window
            events = await outbox(redis, "c3")
            assert [(e.type, e.data["threshold"], e.data["period_start"]) for e in events] == [
                ("limit.threshold_crossed", 2, "2100-01-01T00:00:00Z"),
                ("limit.threshold_crossed", 4, "2100-01-01T00:00:00Z"),
                ("limit.threshold_crossed", 2, "2100-01-01T00:00:02Z"),
            ]
            assert events[2].data["period_end"] == "2100-01-01T00:00:03Z"
            assert events[2].id == threshold_event_id("limit.threshold_crossed", "c3", "burst", T0 + 2000, 2)

    asyncio.run(main())


def test_checks_without_alerts_touch_no_outbox(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            await lim.consume("c4", [QuotaPolicy("month", 3, T0, T0 + DAY)], 3, T0)
            assert sorted(await redis.keys("*")) == [f"tw:q:{{c4}}:month:{T0}"]

    asyncio.run(main())


def _policies(rng: random.Random) -> list[Policy]:
    def levels(limit: int) -> Alerting | None:
        if rng.random() < 0.2:
            return None
        chosen = sorted(set(rng.sample(range(1, limit + 3), k=min(3, limit + 2))))
        return alerting(*chosen)

    fast_limit, slow_limit, quota_limit = rng.randint(2, 8), rng.randint(3, 30), rng.randint(5, 60)
    return [
        WindowPolicy.sliding("fast", fast_limit, rng.choice([100, 1000, 2000]), alerting=levels(fast_limit)),
        WindowPolicy.sliding(
            "slow", slow_limit, rng.choice([10_000, 60_000]), hard=rng.random() < 0.7, alerting=levels(slow_limit)
        ),
        QuotaPolicy("period", quota_limit, T0, T0 + DAY, shadow=rng.random() < 0.2, alerting=levels(quota_limit)),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_the_script_emits_the_models_events_on_random_timelines(valkey_fresh: ValkeyServer, seed: int) -> None:
    """Differential: random timelines of checks with alerting windows and a quota, refunds (alone and
    with a check) that lower counts so levels are re-crossed, idle gaps past windows and quota periods:
    the script's outbox holds exactly the model's events (ids, types, times, customers, bodies), and the
    verdicts are equal."""
    rng = random.Random(seed * 7919 + 15)

    async def main() -> None:
        async with limiter(valkey_fresh, coalesce=bool(seed % 2)) as (lim, redis):
            kinds: set[str] = set()
            for run in range(25):
                model = MemoryLimiter()
                policies = _policies(rng)
                customer = f"d{seed}-{run}"
                now = T0 + rng.randint(0, 5000)
                for _ in range(50):
                    now += rng.choice([0, 1, 7, 20, 150, 999, 1500, 4000, 30_000, 70_000, DAY // 3])
                    period = (now - T0) // DAY
                    current = [
                        p
                        if isinstance(p, WindowPolicy)
                        else QuotaPolicy(
                            p.name,
                            p.limit,
                            T0 + period * DAY,
                            T0 + (period + 1) * DAY,
                            p.hard,
                            p.shadow,
                            p.alerting,
                        )
                        for p in policies
                    ]
                    costs = [rng.randint(0, 3), rng.randint(1, 2), rng.randint(0, 4)]
                    refund = None
                    if rng.random() < 0.3:
                        refund = Refund(tuple(rng.randint(0, 4) for _ in current), now - rng.choice([0, 5, 1500]))
                        if rng.random() < 0.5:
                            await model.refund(customer, current, refund, now)
                            await lim.refund(customer, current, refund, now)
                            refund = None
                    expected = await model.consume(customer, current, costs, now, refund)
                    assert await lim.consume(customer, current, costs, now, refund) == expected
                got = await outbox(redis, customer)
                assert got == model.events(customer), (seed, run)
                if got:
                    assert customer in await redis.smembers(ready_key("tw:"))
                kinds.update(e.type for e in got)
            assert kinds == {"quota.threshold_crossed", "limit.threshold_crossed"}

    asyncio.run(main())


def test_money_events_once_per_funding_and_cap_period(valkey_fresh: ValkeyServer) -> None:
    """balance.low as the balance falls past each threshold, balance.exhausted at 0 and when a price is
    refused, both again after a top-up (a new funding epoch), and spend_cap.reached when a hard cap refuses
    and when a soft cap is passed: script and model alike, each once."""
    calls = RealTimeCharge("calls", "per_unit", T0, T0 + 30 * DAY, unit=1_000_000)  # 1 USD per request
    alerts = MoneyAlerts("USD", (1_000_000, 3_000_000))
    prepaid = Money((calls,), (1,), T0, alerts=alerts)
    model = MemoryLimiter()

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):

            async def grant(grant_id: str, amount: int) -> None:
                state = GrantState(grant_id, amount, effective_ms=T0)
                model.put_grant("m1", state)
                await redis.hset("tw:cr:{m1}", grant_id, state.encode())
                await redis.incr(funding_key("tw:", "m1"))

            async def both(now: int, money: Money) -> None:
                expected = model.check("m1", [], 0, now, money=money)
                assert await lim.consume("m1", [], 0, now, money=money) == expected

            await grant("g1", 4_000_000)
            for k in range(6):  # 4 → 3 → 2 → 1 → 0, then refused twice
                await both(T0 + k, prepaid)
            await grant("g2", 5_000_000)  # a top-up: the thresholds may fire again
            for k in range(6, 10):  # 5 → 4 → 3 → 2 → 1
                await both(T0 + k, prepaid)
            events = await outbox(redis, "m1")
            assert events == model.events("m1")
            assert [(e.type, dict(e.data)) for e in events] == [
                ("balance.low", {"unit": "USD", "balance": "2", "threshold": "3"}),
                ("balance.low", {"unit": "USD", "balance": "0", "threshold": "1"}),
                ("balance.exhausted", {"unit": "USD", "balance": "0", "price": "1"}),
                ("balance.low", {"unit": "USD", "balance": "2", "threshold": "3"}),
            ]
            assert events[0].id == event_id("balance.low", "m1", 3_000_000, 1)
            assert events[3].id == event_id("balance.low", "m1", 3_000_000, 2)
            # Empty after a first grant: the refusal reports the exhaustion of the current funding.
            model.put_grant("m2", GrantState("g", 500_000, effective_ms=T0))
            await redis.hset("tw:cr:{m2}", "g", GrantState("g", 500_000, effective_ms=T0).encode())
            await redis.incr(funding_key("tw:", "m2"))
            for k in range(2):
                expected = model.check("m2", [], 0, T0 + k, money=prepaid)
                assert await lim.consume("m2", [], 0, T0 + k, money=prepaid) == expected
            [refused] = await outbox(redis, "m2")
            assert refused == model.events("m2")[0]
            assert dict(refused.data) == {"unit": "USD", "balance": "0.5", "price": "1"}

            for hard, customer in ((True, "m3"), (False, "m4")):
                cap = SpendCap(2_500_000, T0, T0 + 30 * DAY, hard=hard)
                capped = Money((calls,), (1,), None, cap, alerts=MoneyAlerts("USD"))
                for k in range(5):
                    expected = model.check(customer, [], 0, T0 + k, money=capped)
                    assert await lim.consume(customer, [], 0, T0 + k, money=capped) == expected
                [reached] = await outbox(redis, customer)
                assert [reached] == model.events(customer)
                assert reached.type == "spend_cap.reached"
                assert reached.id == event_id("spend_cap.reached", customer, T0, 2_500_000)
                assert dict(reached.data) == {
                    "currency": "USD",
                    "cap": "2.5",
                    "spent": "2",
                    "price": "1",
                    "soft": not hard,
                    "period_start": "2100-01-01T00:00:00Z",
                    "period_end": "2100-01-31T00:00:00Z",
                }

    asyncio.run(main())
