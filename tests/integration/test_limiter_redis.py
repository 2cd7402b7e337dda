"""RedisLimiter on a real Valkey: the shared behaviour suite, exactness under concurrency from two
independent clients, NOSCRIPT recovery, a dead or hung Redis, bounded storage."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.support.limiter_suite import DAY, SCENARIOS, T0, Scenario
from tollway.harness.valkey import ValkeyServer
from tollway.ratelimit import LimiterUnavailable, MemoryLimiter, Policy, QuotaPolicy, RedisLimiter, WindowPolicy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.script import SHA

pytestmark = pytest.mark.integration


def hot_client(server: ValkeyServer, timeout: float = 0.5) -> Redis:
    """Like the production hot-path client: short timeouts, no retries."""
    return Redis.from_url(
        server.url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


@asynccontextmanager
async def limiter(server: ValkeyServer, **kwargs: object) -> AsyncIterator[tuple[RedisLimiter, Redis]]:
    """A RedisLimiter that counts windows at the caller's ``now_ms`` (these tests drive time), unless
    ``server_time=True`` is passed."""
    redis = hot_client(server)
    kwargs.setdefault("server_time", False)
    lim = RedisLimiter(redis, **kwargs)  # type: ignore[arg-type]
    try:
        yield lim, redis
    finally:
        await lim.aclose()
        await redis.aclose()


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "direct"])
@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_behaviour_suite(valkey_fresh: ValkeyServer, scenario: Scenario, coalesce: bool) -> None:
    async def main() -> None:
        async with limiter(valkey_fresh, coalesce=coalesce) as (lim, _):
            await scenario(lim)

    asyncio.run(main())


def test_500_concurrent_checks_from_two_clients_admit_exactly_the_limit(valkey_fresh: ValkeyServer) -> None:
    policies: list[Policy] = [WindowPolicy.sliding("burst", 100, 60_000), QuotaPolicy("month", 1000, T0, T0 + 30 * DAY)]

    async def main() -> None:
        async with limiter(valkey_fresh) as (a, redis), limiter(valkey_fresh) as (b, _):
            checks = [(a if i % 2 else b).consume("cust-1", policies, 1, T0 + i % 7) for i in range(500)]
            verdicts = await asyncio.gather(*checks)
            assert sum(v.admitted for v in verdicts) == 100
            refused = [v for v in verdicts if not v.admitted]
            assert all(v.violated == ("burst",) for v in refused)
            window = await redis.hgetall("tw:rl:{cust-1}:burst")
            assert sum(int(n) for field, n in window.items() if field not in ("t", "o")) == 100
            assert window["t"] == "100"  # the running total
            assert await redis.get(f"tw:q:{{cust-1}}:month:{T0}") == "100"
            # Coalescing batches: far fewer round trips than checks.
            for lim in (a, b):
                assert lim.checks == 250
                assert lim.round_trips < lim.checks / 10

    asyncio.run(main())


def test_noscript_after_script_flush_is_recovered(valkey_fresh: ValkeyServer) -> None:
    policy = WindowPolicy.sliding("burst", 10, 1000)

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            assert (await lim.consume("c", [policy], 1, T0)).admitted
            await redis.script_flush()
            assert await redis.script_exists(SHA) == [False]
            verdicts = await asyncio.gather(*(lim.consume("c", [policy], 1, T0) for _ in range(5)))
            assert [v.states[0].used for v in verdicts] == [2, 3, 4, 5, 6]
            assert await redis.script_exists(SHA) == [True]

    asyncio.run(main())


def test_a_stopped_redis_fails_fast_and_recovers_after_restart(valkey_fresh: ValkeyServer) -> None:
    policy = WindowPolicy.sliding("burst", 10, 1000)

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, _):
            assert (await lim.consume("c", [policy], 1, T0)).admitted
            valkey_fresh.stop()
            started = time.monotonic()
            with pytest.raises(LimiterUnavailable):
                async with asyncio.timeout(0.1):
                    await lim.consume("c", [policy], 1, T0)
            assert time.monotonic() - started < 0.1
            results = await asyncio.gather(
                *(lim.consume("c", [policy], 1, T0) for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(r, LimiterUnavailable) for r in results)

            valkey_fresh.start()  # empty, without the script: NOSCRIPT is handled too
            async with asyncio.timeout(1.0):
                verdict = await lim.consume("c", [policy], 1, T0)
            assert verdict.admitted
            assert verdict.states[0].used == 1

    asyncio.run(main())


def test_a_hung_redis_times_out_the_caller_without_breaking_later_checks(valkey_fresh: ValkeyServer) -> None:
    policy = WindowPolicy.sliding("burst", 10, 1000)

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, _):
            assert (await lim.consume("c", [policy], 1, T0)).admitted
            valkey_fresh.pause()
            try:
                waiters = [asyncio.create_task(lim.consume("c", [policy], 1, T0)) for _ in range(3)]
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await waiters[0]
                # The others of the batch get their own answer when the client's socket timeout fires.
                rest = await asyncio.gather(*waiters[1:], return_exceptions=True)
                assert all(isinstance(r, LimiterUnavailable) for r in rest)
            finally:
                valkey_fresh.resume()
            verdict = await lim.consume("c", [policy], 1, T0 + 1)
            assert verdict.admitted

    asyncio.run(main())


def test_window_storage_stays_bounded_and_expires(valkey_fresh: ValkeyServer) -> None:
    policy = WindowPolicy("burst", 1000, 1000, 10)  # g = 100 ms: at most N + 1 = 11 live buckets
    quota = QuotaPolicy("month", 10**6, T0, T0 + 30 * DAY)

    async def main() -> None:
        async with limiter(valkey_fresh, prefix="t:") as (lim, redis):
            now = T0
            for _ in range(300):
                now += 37
                assert (await lim.consume("c", [policy, quota], 1, now)).admitted
                assert await redis.hlen("t:rl:{c}:burst") <= 13  # N + 1 buckets, the running total and its origin
            assert 0 < await redis.pttl("t:rl:{c}:burst") <= 1100
            ttl = await redis.pttl(f"t:q:{{c}}:month:{T0}")
            assert 30 * DAY + DAY - (now - T0) - 5000 < ttl <= 30 * DAY + DAY - (now - T0)
            assert sorted(await redis.keys("*")) == sorted(["t:rl:{c}:burst", f"t:q:{{c}}:month:{T0}"])

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(4))
def test_random_timelines_match_the_model(valkey_fresh: ValkeyServer, seed: int) -> None:
    """Differential check: the Lua script and MemoryLimiter give identical Verdicts on random checks."""
    rng = random.Random(seed)
    policies: list[Policy] = []
    for i in range(rng.randint(1, 3)):
        width = rng.choice([100, 1000, 3000])
        mode = rng.choice(["hard", "hard", "soft", "shadow"])
        policies.append(
            WindowPolicy.sliding(f"w{i}", rng.randint(0, 8), width, hard=mode != "soft", shadow=mode == "shadow")
        )
    if rng.random() < 0.7:
        policies.append(QuotaPolicy("q", rng.randint(0, 80), T0, T0 + DAY, hard=rng.random() < 0.8))

    async def main() -> None:
        model = MemoryLimiter()
        async with limiter(valkey_fresh) as (lim, _):
            now = T0
            for _ in range(150):
                now += rng.choice([0, 0, 7, 40, 120, 999, 3500])
                partition = rng.choice(["a", "b"])
                chosen = [p for p in policies if rng.random() < 0.8] or policies[:1]
                costs = [rng.randint(0, 4) for _ in chosen]
                expected = model.check(partition, chosen, costs, now)
                assert await lim.consume(partition, chosen, costs, now) == expected

    asyncio.run(main())


def test_redis_matches_the_model_on_random_timelines(valkey_fresh: ValkeyServer) -> None:
    """Differential test: random timelines (bursts, idle gaps shorter and longer than a window, costs,
    soft and shadow policies, refunds of leased units to recent buckets) give identical verdicts from
    the Lua script and the pure model. This covers the script's running total: buckets dropped one by
    one, refunds to a tracked or an already dropped bucket, and the reset after a long idle."""
    rng = random.Random(20261125)

    async def main() -> None:
        async with limiter(valkey_fresh, coalesce=False) as (redis_limiter, _):
            for run in range(40):
                model = MemoryLimiter()
                policies: list[Policy] = [
                    WindowPolicy.sliding("fast", rng.randint(1, 8), rng.choice([100, 1000, 2000])),
                    WindowPolicy.sliding(
                        "slow", rng.randint(3, 30), rng.choice([10_000, 60_000]), hard=rng.random() < 0.7
                    ),
                    QuotaPolicy("period", rng.randint(5, 60), T0, T0 + DAY, shadow=rng.random() < 0.2),
                ]
                now = T0
                for _ in range(60):
                    now += rng.choice([0, 1, 7, 20, 150, 999, 1500, 4000, 30_000, 70_000])
                    costs = [rng.randint(0, 3), rng.randint(1, 2), rng.randint(0, 2)]
                    refund = None
                    if rng.random() < 0.3:  # a lease taken a little earlier gives units back
                        taken = now - rng.choice([0, 5, 100, 1500, 20_000])
                        refund = Refund(tuple(rng.randint(0, 3) for _ in policies), taken)
                        if rng.random() < 0.5:  # on its own, else with the check
                            await model.refund(f"p{run}", policies, refund, now)
                            await redis_limiter.refund(f"p{run}", policies, refund, now)
                            refund = None
                    expected = await model.consume(f"p{run}", policies, costs, now, refund)
                    got = await redis_limiter.consume(f"p{run}", policies, costs, now, refund)
                    assert got == expected, (run, now, costs, refund)

    asyncio.run(main())


def wall_ms() -> int:
    """This host's clock, which the Valkey under test (same host) reads for TIME."""
    return time.time_ns() // 1_000_000


def test_windows_are_counted_on_the_servers_clock_and_quotas_on_the_callers(valkey_fresh: ValkeyServer) -> None:
    """With ``server_time`` (the default, what ``tollway serve`` runs), the script takes the window time
    from Redis's TIME, whatever the caller's clock says, and returns it as ``at_ms``; the quota period
    is the caller's (its reset counts from the caller's ``now_ms``)."""
    window = WindowPolicy.sliding("burst", 5, 1000)  # buckets of 20 ms
    quota = QuotaPolicy("month", 100, T0, T0 + 30 * DAY)

    async def main() -> None:
        async with limiter(valkey_fresh, server_time=True) as (lim, redis):
            before = wall_ms()
            verdict = await lim.consume("c", [window, quota], 1, T0 + 500)  # the caller's clock says 2100
            after = wall_ms()
            assert verdict.admitted
            assert before <= verdict.at_ms <= after
            fields = await redis.hgetall("tw:rl:{c}:burst")
            assert fields == {str(verdict.at_ms // 20): "1", "t": "1", "o": str(verdict.at_ms // 20 - 50)}
            assert verdict.states[1].reset_ms == 30 * DAY - 500
            # The caller's clock moving does not move the window: 4 more fit now, whatever it says.
            later = [await lim.consume("c", [window], 1, T0 + 3_600_000 * k) for k in range(5)]
            assert [v.admitted for v in later] == [True] * 4 + [False]
            assert later[-1].violated == ("burst",)

    asyncio.run(main())


def test_two_clients_two_seconds_apart_admit_at_most_the_limit_in_any_real_window(valkey_fresh: ValkeyServer) -> None:
    """Issue 13, item 8, against real Valkey: two limiter clients share a 20-per-10 s window, client A's
    clock 2 s ahead of B's (and of Valkey's). B uses the 20 at once; both then try every 100 ms for 10.6 s.
    Counted on the callers' clocks, A stopped seeing B's units 2 s early and was admitted again ~8.2 s
    later (40 in one 10 s window); counted on Valkey's clock, nothing more fits until B's units leave the
    window, 10 s (and up to one 200 ms bucket) later. Real time of an admission: somewhere between the
    wall clock before and after its call, so 21 admissions in one 10 s window are certain only if the
    first's "before" and the last's "after" are less than 10 s apart — which must never happen."""
    window = WindowPolicy.sliding("per-10s", 20, 10_000)
    skew_a = 2000

    async def main() -> None:
        async with limiter(valkey_fresh, server_time=True) as (a, _), limiter(valkey_fresh, server_time=True) as (b, _):
            admitted: list[tuple[int, int]] = []

            async def check(lim: RedisLimiter, skew: int) -> None:
                before = wall_ms()
                verdict = await lim.consume("shared", [window], 1, before + skew)
                if verdict.admitted:
                    admitted.append((before, wall_ms()))

            await asyncio.sleep((202 - wall_ms() % 200) / 1000)  # start early in a 200 ms bucket (margin)
            start = wall_ms()
            for _ in range(20):
                await check(b, 0)
            assert len(admitted) == 20
            while wall_ms() < start + 10_600:
                await check(a, skew_a)
                await check(b, 0)
                await asyncio.sleep(0.1)
            admitted.sort()
            assert len(admitted) > 20, "the limit is usable again after the window"
            for i in range(len(admitted) - 20):
                group = admitted[i : i + 21]
                span = max(after for _, after in group) - group[0][0]
                assert span >= 10_000, f"21 admitted within {span} ms of real time (the limit is 20 per 10 s)"

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(2))
def test_skewed_clients_match_the_model_at_the_servers_time(valkey_fresh: ValkeyServer, seed: int) -> None:
    """Differential test with skewed clocks: two clients whose clocks are off by random skews (seconds,
    either way) send random checks in real time (small windows, so buckets come and go within the test;
    refunds of units counted at an earlier verdict's time, as leases give them back; a quota on the
    callers' clocks). Every verdict equals the pure model's run at the server time the script reports,
    and that time is Valkey's (this host's) clock, never a caller's."""
    rng = random.Random(seed)
    skews = [rng.choice([-2500, -700, -13, 0, 9, 1200, 3000]) for _ in range(2)]
    base = wall_ms()
    policies: list[Policy] = [
        WindowPolicy.sliding("fast", rng.randint(1, 6), rng.choice([100, 200])),
        WindowPolicy.sliding("slow", rng.randint(3, 20), rng.choice([1000, 2000]), hard=rng.random() < 0.7),
        QuotaPolicy("period", rng.randint(10, 60), base - 3_600_000, base + 3_600_000, shadow=rng.random() < 0.2),
    ]
    server = [0]
    model = MemoryLimiter(server_ms=lambda: server[0])

    async def main() -> None:
        async with (
            limiter(valkey_fresh, server_time=True, coalesce=False) as (a, _),
            limiter(valkey_fresh, server_time=True) as (b, _),
        ):
            clients = [a, b]
            taken: list[int] = []
            for step in range(90):
                await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005, 0.02, 0.06, 0.15]))
                which = rng.randrange(2)
                costs = [rng.randint(0, 3), rng.randint(1, 2), rng.randint(0, 2)]
                refund = None
                if taken and rng.random() < 0.3:
                    refund = Refund(tuple(rng.randint(0, 3) for _ in policies), rng.choice(taken[-5:]))
                before = wall_ms()
                got = await clients[which].consume(f"p{seed}", policies, costs, before + skews[which], refund)
                assert before <= got.at_ms <= wall_ms(), "the window time is Valkey's clock"
                server[0] = got.at_ms
                expected = model.check(f"p{seed}", policies, costs, before + skews[which], refund)
                assert got == expected, (step, skews, costs, refund)
                taken.append(got.at_ms)

    asyncio.run(main())
