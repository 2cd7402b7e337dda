"""One behaviour suite for every limiter backend: the in-memory model, RedisLimiter on Valkey and
RedisLimiter on a 3-master Valkey Cluster must give the same full Verdicts for the same scripted checks.

Each scenario takes a fresh, empty ``Limiter`` and drives time explicitly (``now_ms``): the Redis backends
run with ``server_time=False``, so the windows are counted at ``now_ms`` as in the model (the server's
clock is tested by the differential tests in tests/integration/test_limiter_redis.py). Times are in
2100 so that counters' relative TTLs never matter during a test.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tollway.ratelimit import Limiter, Policy, PolicyState, QuotaPolicy, Verdict, WindowPolicy
from tollway.ratelimit.refunds import Refund

Scenario = Callable[[Limiter], Coroutine[Any, Any, None]]
SCENARIOS: dict[str, Scenario] = {}

T0 = 4_102_444_800_000  # 2100-01-01T00:00:00Z: a multiple of every bucket width used here
DAY = 86_400_000
P1 = T0 + 30 * DAY
P2 = T0 + 60 * DAY

BURST = WindowPolicy("burst", 3, 1000, 10)  # 3 per second, buckets of 100 ms
MONTH = QuotaPolicy("month", 5, T0, P1)


def same(actual: Verdict, expected: Verdict) -> None:
    """Assert equal Verdicts, showing both (this module is not rewritten by pytest). ``at_ms`` is
    compared by the scenario ``decided_at_the_time_windows_are_counted_at`` only."""
    if actual._replace(at_ms=expected.at_ms) != expected:
        raise AssertionError(f"\n  got      {actual}\n  expected {expected}")


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def st(name: str, limit: int, window_s: int, used: int, reset_ms: int, exceeded: bool = False) -> PolicyState:
    return PolicyState(name, limit, window_s, max(limit - used, 0), -(-reset_ms // 1000), exceeded, used, reset_ms)


def ok(*states: PolicyState, soft: tuple[str, ...] = (), shadow: tuple[str, ...] = ()) -> Verdict:
    return Verdict(True, states, (), soft, shadow, 0, 0, ())


def refused(
    *states: PolicyState,
    violated: tuple[str, ...],
    retry_ms: int,
    soft: tuple[str, ...] = (),
    shadow: tuple[str, ...] = (),
    unsatisfiable: tuple[str, ...] = (),
) -> Verdict:
    return Verdict(False, states, violated, soft, shadow, max(1, -(-retry_ms // 1000)), retry_ms, unsatisfiable)


@scenario
async def sliding_window_counts_buckets(lim: Limiter) -> None:
    # One request per bucket, then the limit is reached.
    same(await lim.consume("c1", [BURST], 1, T0 + 50), ok(st("burst", 3, 1, 1, 0)))
    same(await lim.consume("c1", [BURST], 1, T0 + 150), ok(st("burst", 3, 1, 2, 0)))
    # The oldest counted bucket (T0..T0+99) leaves the window at T0 + 1100: reset 850 ms.
    same(await lim.consume("c1", [BURST], 1, T0 + 250), ok(st("burst", 3, 1, 3, 850)))
    same(
        await lim.consume("c1", [BURST], 1, T0 + 300),
        refused(st("burst", 3, 1, 3, 800, exceeded=True), violated=("burst",), retry_ms=800),
    )
    # Two units need the two oldest buckets gone: T0 + 1200.
    same(
        await lim.consume("c1", [BURST], 2, T0 + 300),
        refused(st("burst", 3, 1, 3, 800, exceeded=True), violated=("burst",), retry_ms=900),
    )
    # A perfect sliding log would admit at T0 + 1051; the buckets admit one bucket width later (the bound).
    same(
        await lim.consume("c1", [BURST], 1, T0 + 1099),
        refused(st("burst", 3, 1, 3, 1, exceeded=True), violated=("burst",), retry_ms=1),
    )
    same(await lim.consume("c1", [BURST], 1, T0 + 1100), ok(st("burst", 3, 1, 3, 100)))


@scenario
async def capacity_returns_after_window_plus_bucket(lim: Limiter) -> None:
    same(await lim.consume("c1", [BURST], 3, T0 + 50), ok(st("burst", 3, 1, 3, 1050)))
    same(
        await lim.consume("c1", [BURST], 3, T0 + 1050),
        refused(st("burst", 3, 1, 3, 50, exceeded=True), violated=("burst",), retry_ms=50),
    )
    same(await lim.consume("c1", [BURST], 3, T0 + 1150), ok(st("burst", 3, 1, 3, 1050)))


@scenario
async def cost_above_limit_never_fits(lim: Limiter) -> None:
    same(
        await lim.consume("c1", [BURST], 5, T0),
        refused(st("burst", 3, 1, 0, 0, exceeded=True), violated=("burst",), retry_ms=1000, unsatisfiable=("burst",)),
    )
    same(
        await lim.consume("c1", [MONTH], 6, T0 + 500),
        refused(
            st("month", 5, 2_592_000, 0, 30 * DAY - 500, exceeded=True),
            violated=("month",),
            retry_ms=30 * DAY - 500,
            unsatisfiable=("month",),
        ),
    )
    # Nothing was consumed.
    same(
        await lim.consume("c1", [BURST, MONTH], 3, T0 + 600),
        ok(st("burst", 3, 1, 3, 1100), st("month", 5, 2_592_000, 3, 30 * DAY - 600)),
    )


@scenario
async def all_or_nothing(lim: Limiter) -> None:
    soft = WindowPolicy("soft-minute", 1, 60_000, 60, hard=False)
    policies: list[Policy] = [BURST, MONTH, soft]
    month_s = 2_592_000
    same(
        await lim.consume("c1", policies, 1, T0),
        ok(st("burst", 3, 1, 1, 0), st("month", 5, month_s, 1, 30 * DAY), st("soft-minute", 1, 60, 1, 61_000)),
    )
    same(
        await lim.consume("c1", policies, 1, T0 + 10),
        ok(
            st("burst", 3, 1, 2, 0),
            st("month", 5, month_s, 2, 30 * DAY - 10),
            st("soft-minute", 1, 60, 2, 60_990, exceeded=True),
            soft=("soft-minute",),
        ),
    )
    same(
        await lim.consume("c1", policies, 1, T0 + 20),
        ok(
            st("burst", 3, 1, 3, 1080),
            st("month", 5, month_s, 3, 30 * DAY - 20),
            st("soft-minute", 1, 60, 3, 60_980, exceeded=True),
            soft=("soft-minute",),
        ),
    )
    # The burst limit refuses: the quota and the soft window are not touched.
    same(
        await lim.consume("c1", policies, 1, T0 + 30),
        refused(
            st("burst", 3, 1, 3, 1070, exceeded=True),
            st("month", 5, month_s, 3, 30 * DAY - 30),
            st("soft-minute", 1, 60, 3, 60_970, exceeded=True),
            violated=("burst",),
            retry_ms=1070,
            soft=("soft-minute",),
        ),
    )
    same(
        await lim.consume("c1", policies, 1, T0 + 1100),
        ok(
            st("burst", 3, 1, 1, 0),
            st("month", 5, month_s, 4, 30 * DAY - 1100),
            st("soft-minute", 1, 60, 4, 60_900, exceeded=True),
            soft=("soft-minute",),
        ),
    )
    # Now the quota refuses (4 + 2 > 5) and the burst window, which had room, is not touched either.
    same(
        await lim.consume("c1", policies, 2, T0 + 1200),
        refused(
            st("burst", 3, 1, 1, 0),
            st("month", 5, month_s, 4, 30 * DAY - 1200, exceeded=True),
            st("soft-minute", 1, 60, 4, 60_800, exceeded=True),
            violated=("month",),
            retry_ms=30 * DAY - 1200,
            soft=("soft-minute",),
        ),
    )
    same(
        await lim.consume("c1", policies, 1, T0 + 1300),
        ok(
            st("burst", 3, 1, 2, 0),
            st("month", 5, month_s, 5, 30 * DAY - 1300),
            st("soft-minute", 1, 60, 5, 60_700, exceeded=True),
            soft=("soft-minute",),
        ),
    )


@scenario
async def soft_and_shadow_count_but_never_refuse(lim: Limiter) -> None:
    policies: list[Policy] = [
        WindowPolicy("soft", 1, 1000, 10, hard=False),
        WindowPolicy("shadow", 1, 1000, 10, shadow=True),
        QuotaPolicy("q-shadow", 1, T0, P1, shadow=True),
    ]
    same(
        await lim.consume("c1", policies, 1, T0),
        ok(st("soft", 1, 1, 1, 1100), st("shadow", 1, 1, 1, 1100), st("q-shadow", 1, 2_592_000, 1, 30 * DAY)),
    )
    for used in (2, 3):
        same(
            await lim.consume("c1", policies, 1, T0),
            ok(
                st("soft", 1, 1, used, 1100, exceeded=True),
                st("shadow", 1, 1, used, 1100, exceeded=True),
                st("q-shadow", 1, 2_592_000, used, 30 * DAY, exceeded=True),
                soft=("soft",),
                shadow=("shadow", "q-shadow"),
            ),
        )


@scenario
async def per_policy_costs(lim: Limiter) -> None:
    requests = WindowPolicy("requests", 10, 60_000, 60)
    tokens = QuotaPolicy("tokens", 1000, T0, P1)
    same(
        await lim.consume("c1", [requests, tokens], (1, 400), T0),
        ok(st("requests", 10, 60, 1, 0), st("tokens", 1000, 2_592_000, 400, 30 * DAY)),
    )
    same(
        await lim.consume("c1", [requests, tokens], (1, 400), T0 + 1),
        ok(st("requests", 10, 60, 2, 0), st("tokens", 1000, 2_592_000, 800, 30 * DAY - 1)),
    )
    same(
        await lim.consume("c1", [requests, tokens], (1, 400), T0 + 2),
        refused(
            st("requests", 10, 60, 2, 0),
            st("tokens", 1000, 2_592_000, 800, 30 * DAY - 2, exceeded=True),
            violated=("tokens",),
            retry_ms=30 * DAY - 2,
        ),
    )
    # A zero cost is reported, never consumed, and cannot refuse.
    same(
        await lim.consume("c1", [requests, tokens], (0, 200), T0 + 3),
        ok(st("requests", 10, 60, 2, 0), st("tokens", 1000, 2_592_000, 1000, 30 * DAY - 3)),
    )
    same(
        await lim.consume("c1", [requests, tokens], (1, 0), T0 + 4),
        ok(st("requests", 10, 60, 3, 0), st("tokens", 1000, 2_592_000, 1000, 30 * DAY - 4)),
    )


@scenario
async def limit_zero(lim: Limiter) -> None:
    none = WindowPolicy("none", 0, 1000, 10)
    same(
        await lim.consume("c1", [none], 1, T0),
        refused(st("none", 0, 1, 0, 1000, exceeded=True), violated=("none",), retry_ms=1000, unsatisfiable=("none",)),
    )
    same(await lim.consume("c1", [none], 0, T0), ok(st("none", 0, 1, 0, 1000)))


@scenario
async def quota_periods(lim: Limiter) -> None:
    same(await lim.consume("c1", [MONTH], 5, T0 + 10), ok(st("month", 5, 2_592_000, 5, 30 * DAY - 10)))
    same(
        await lim.consume("c1", [MONTH], 1, P1 - 1),
        refused(st("month", 5, 2_592_000, 5, 1, exceeded=True), violated=("month",), retry_ms=1),
    )
    next_month = QuotaPolicy("month", 5, P1, P2)
    same(await lim.consume("c1", [next_month], 1, P1), ok(st("month", 5, 2_592_000, 1, 30 * DAY)))


@scenario
async def partitions_are_independent(lim: Limiter) -> None:
    assert (await lim.consume("cust-a", [BURST], 3, T0)).admitted
    assert not (await lim.consume("cust-a", [BURST], 1, T0)).admitted
    same(await lim.consume("cust-b", [BURST], 1, T0), ok(st("burst", 3, 1, 1, 0)))


@scenario
async def stale_buckets_do_not_count(lim: Limiter) -> None:
    # A long idle gap: everything earlier is out of the window (and pruned by the next write).
    for i in range(3):
        assert (await lim.consume("c1", [BURST], 1, T0 + 100 * i)).admitted
    same(await lim.consume("c1", [BURST], 1, T0 + 10 * 60_000), ok(st("burst", 3, 1, 1, 0)))
    same(await lim.consume("c1", [BURST], 2, T0 + 10 * 60_000 + 999), ok(st("burst", 3, 1, 3, 101)))


@scenario
async def no_policies_admits(lim: Limiter) -> None:
    same(await lim.consume("c1", [], 1, T0), Verdict(True, ()))


@scenario
async def invalid_checks_are_refused_before_io(lim: Limiter) -> None:
    with pytest.raises(ValueError, match="partition"):
        await lim.consume("c{1}", [BURST], 1, T0)
    with pytest.raises(ValueError, match="unique"):
        await lim.consume("c1", [BURST, BURST], 1, T0)
    with pytest.raises(ValueError, match=">= 0"):
        await lim.consume("c1", [BURST], -1, T0)
    with pytest.raises(ValueError, match="costs for"):
        await lim.consume("c1", [BURST, MONTH], (1,), T0)
    same(await lim.consume("c1", [BURST], 1, T0), ok(st("burst", 3, 1, 1, 0)))


@scenario
async def refunds_return_unused_units_to_their_bucket(lim: Limiter) -> None:
    # A lease of 3 at T0 + 50 (bucket 0) on both policies; one unit is used, two come back.
    same(
        await lim.consume("c1", [BURST, MONTH], 3, T0 + 50),
        ok(st("burst", 3, 1, 3, 1050), st("month", 5, 2_592_000, 3, 30 * DAY - 50)),
    )
    await lim.refund("c1", [BURST, MONTH], Refund((2, 2), T0 + 50), T0 + 60)
    # Bucket 0 keeps 1 unit: it leaves the window at T0 + 1100.
    same(
        await lim.consume("c1", [BURST, MONTH], 2, T0 + 120),
        ok(st("burst", 3, 1, 3, 980), st("month", 5, 2_592_000, 3, 30 * DAY - 120)),
    )
    # Never below zero (bucket 1 holds 2: both come back, not 9), and zero units are no-ops.
    await lim.refund("c1", [BURST, MONTH], Refund((9, 0), T0 + 150), T0 + 160)
    same(
        await lim.consume("c1", [BURST, MONTH], 2, T0 + 200),
        ok(st("burst", 3, 1, 3, 900), st("month", 5, 2_592_000, 5, 30 * DAY - 200)),
    )
    # A bucket that left the window is not counted any more: refunding it changes nothing.
    same(await lim.consume("c1", [BURST], 1, T0 + 2000), ok(st("burst", 3, 1, 1, 0)))
    await lim.refund("c1", [BURST], Refund((1,), T0 + 50), T0 + 2010)
    same(await lim.consume("c1", [BURST], 1, T0 + 2050), ok(st("burst", 3, 1, 2, 0)))
    # A refund to counters that do not exist creates nothing.
    await lim.refund("c2", [BURST, MONTH], Refund((1, 1), T0), T0)
    same(
        await lim.consume("c2", [BURST, MONTH], 1, T0 + 10),
        ok(st("burst", 3, 1, 1, 0), st("month", 5, 2_592_000, 1, 30 * DAY - 10)),
    )
    # With the next check, in the same atomic step: the check counts what is left after the refund.
    same(
        await lim.consume("c2", [BURST, MONTH], 2, T0 + 20, Refund((1, 1), T0 + 10)),
        ok(st("burst", 3, 1, 2, 0), st("month", 5, 2_592_000, 2, 30 * DAY - 20)),
    )
    with pytest.raises(ValueError, match="refunded counts for"):
        await lim.consume("c2", [BURST, MONTH], 1, T0 + 30, Refund((1,), T0))


@scenario
async def decided_at_the_time_windows_are_counted_at(lim: Limiter) -> None:
    # Every backend here counts windows at the caller's now_ms (the model without a server clock, Redis
    # with server_time=False), and says so in at_ms, which leases and refunds rely on.
    verdict = await lim.consume("c1", [BURST, MONTH], 1, T0 + 70)
    same(verdict, ok(st("burst", 3, 1, 1, 0), st("month", 5, 2_592_000, 1, 30 * DAY - 70)))
    assert verdict.at_ms == T0 + 70
    refusal = await lim.consume("c1", [BURST], 5, T0 + 80)
    assert not refusal.admitted
    assert refusal.at_ms == T0 + 80
    assert (await lim.consume("c1", [], 1, T0 + 90)).at_ms == T0 + 90
