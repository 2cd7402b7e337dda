"""Capacity leases that carry money (``leases.room``/``Lease`` with ``Money``) against the pure model.

* One process: every verdict equals the lease-free limiter's, request for request, through a balance that
  runs out (the 402 comes at exactly the same request), while most requests are answered in process.
* Several processes sharing the balance: it never goes below zero, and once the leases are swept, what was
  burned equals the prices of the admitted requests exactly (hypothesis over random arrivals).
* Tiered prices are never leased (each request's marginal price depends on the others').
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.ratelimit.test_leases import Request
from tollway.credits.charges import RealTimeCharge, TierMicros
from tollway.credits.grants import GrantState
from tollway.credits.units import format_micros
from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, Verdict, WindowPolicy
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.money import Money, MoneyAlerts, SpendCap

T0 = 4_102_444_800_000  # 2100-01-01T00:00:00Z
DAY = 86_400_000
PERIOD = (T0, T0 + 30 * DAY)
PER_MINUTE = WindowPolicy.sliding("per-minute", 1_000_000, 60_000)
MONTH = QuotaPolicy("month", 10_000_000, *PERIOD)
POLICIES: tuple[Policy, ...] = (PER_MINUTE, MONTH)
PRICE = 250_000  # 0.25 units per request
FLAT = RealTimeCharge("calls", "per_unit", *PERIOD, unit=PRICE)
PREPAID = Money((FLAT,), (1,), balance_period_start_ms=T0)
TIERED = Money(
    (
        RealTimeCharge(
            "calls", "graduated", *PERIOD, tiers=(TierMicros(40, 100_000), TierMicros(None, 50_000, 500_000))
        ),
    ),
    (1,),
    balance_period_start_ms=T0,
)


def funded(micros: int) -> MemoryLimiter:
    limiter = MemoryLimiter()
    limiter.put_grant("c", GrantState("g1", micros))
    return limiter


async def run(
    limiters: Sequence[LeasingLimiter], requests: Sequence[Request], money: Money
) -> list[tuple[Request, Verdict]]:
    """Each request through its process's leasing limiter (sync path first), sweeping every 50 ms."""
    results: list[tuple[Request, Verdict]] = []
    next_sweep = requests[0].at_ms if requests else 0
    for request in requests:
        if request.at_ms >= next_sweep:
            for limiter in limiters:
                await limiter.sweep(request.at_ms)
            next_sweep = request.at_ms + 50
        limiter = limiters[request.process]
        verdict = limiter.try_now("check", request.at_ms)
        if verdict is None:
            verdict = await limiter.consume("check", "c", POLICIES, (1, 1), request.at_ms, None, money)
        results.append((request, verdict))
    return results


def balance(limiter: MemoryLimiter) -> int:
    return sum(g.remaining for g in limiter.grants("c"))


def test_one_process_sees_exactly_what_a_lease_free_limiter_sees() -> None:
    times = [T0 + i // 4 for i in range(3000)]  # 4 requests per ms: leases of many
    requests = [Request(at, 0) for at in times]
    plain = funded(2000 * PRICE)
    shared = funded(2000 * PRICE)
    leasing = LeasingLimiter(shared, max_lease_ms=100)
    got = asyncio.run(run([leasing], requests, PREPAID))
    expected = [plain.check("c", POLICIES, 1, r.at_ms, None, PREPAID) for r in requests]
    mismatches = [(r.at_ms - T0, v, e) for (r, v), e in zip(got, expected, strict=True) if v != e]
    assert not mismatches, mismatches[:2]
    assert sum(v.admitted for _, v in got) == 2000
    assert [v.money.refused for _, v in got if not v.admitted][:1] == ["insufficient-credits"]  # type: ignore[union-attr]
    assert leasing.book.requests_from_leases > 1000, "most requests were answered in process"
    asyncio.run(leasing.drain(times[-1]))
    assert balance(shared) == 0


def test_a_tiered_price_is_never_leased() -> None:
    requests = [Request(T0 + i // 4, 0) for i in range(400)]
    shared = funded(100 * 1_000_000)
    leasing = LeasingLimiter(shared, max_lease_ms=100)
    results = asyncio.run(run([leasing], requests, TIERED))
    assert all(v.admitted for _, v in results)
    assert leasing.book.leases_taken == 0
    # 40 × 0.10 + 0.50 + 360 × 0.05 = 22.50
    assert balance(shared) == 100 * 1_000_000 - 22_500_000


def test_a_lease_keeps_half_of_a_spend_cap() -> None:
    capped = Money((FLAT,), (1,), spend_cap=SpendCap(1000 * PRICE, *PERIOD))
    requests = [Request(T0 + i // 4, 0) for i in range(1500)]
    shared = MemoryLimiter()
    leasing = LeasingLimiter(shared, max_lease_ms=100)
    results = asyncio.run(run([leasing], requests, capped))
    assert sum(v.admitted for _, v in results) == 1000, "exactly the cap"
    refused = [v for _, v in results if not v.admitted]
    assert refused[0].money is not None
    assert refused[0].money.refused == "spend-cap-reached"
    asyncio.run(leasing.drain(requests[-1].at_ms))
    assert shared.spent("c", T0) == 1000 * PRICE


@st.composite
def timelines(draw: st.DrawFn) -> tuple[int, int, list[Request]]:
    processes = draw(st.integers(1, 3))
    funds = draw(st.integers(0, 600))
    requests: list[Request] = []
    t = T0
    for _ in range(draw(st.integers(50, 800))):
        t += draw(st.sampled_from([0, 0, 0, 1, 1, 2, 5, 20, 150]))
        requests.append(Request(t, draw(st.integers(0, processes - 1))))
    return processes, funds, requests


@settings(max_examples=60, deadline=None)
@given(timelines())
def test_several_processes_never_burn_more_than_the_balance(timeline: tuple[int, int, list[Request]]) -> None:
    processes, funds, requests = timeline
    shared = funded(funds * PRICE)
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(processes)]
    results = asyncio.run(run(limiters, requests, PREPAID))
    admitted = sum(v.admitted for _, v in results)
    assert admitted <= funds
    for limiter in limiters:
        asyncio.run(limiter.drain(requests[-1].at_ms))
    assert balance(shared) == (funds - admitted) * PRICE, "burned exactly the admitted requests' prices"
    assert shared.charge_quantity("c", "calls", T0) == admitted
    for _, verdict in results:
        assert verdict.money is not None
        if verdict.admitted:
            assert verdict.money.price == PRICE
            assert (verdict.money.balance_after or 0) >= 0


def test_a_lease_stops_above_the_next_balance_threshold() -> None:
    """One process: each balance.low threshold is crossed by a request checked alone (the balance after it
    is the first one below the threshold), never inside a lease, and once; the verdicts are the lease-free
    ones and leases still answer most requests."""
    alerts = MoneyAlerts("USD", (100 * PRICE + 1, 500 * PRICE + 1, 1000 * PRICE + 1))
    money = Money((FLAT,), (1,), balance_period_start_ms=T0, alerts=alerts)
    requests = [Request(T0 + i // 4, 0) for i in range(2500)]
    plain = funded(2000 * PRICE)
    shared = funded(2000 * PRICE)
    leasing = LeasingLimiter(shared, max_lease_ms=100)

    async def main() -> None:
        seen = 0
        for request in requests:
            verdict = leasing.try_now("check", request.at_ms)
            if verdict is None:
                verdict = await leasing.consume("check", "c", POLICIES, (1, 1), request.at_ms, None, money)
            assert verdict == plain.check("c", POLICIES, 1, request.at_ms, None, money)
            events = shared.events("c")
            for event in events[seen:]:
                if event.type == "balance.low":
                    assert verdict.money is not None
                    assert verdict.money.balance_after is not None
                    after = verdict.money.balance_after
                    assert event.data["balance"] == format_micros(after)
            seen = len(events)

    asyncio.run(main())
    lows = [e for e in shared.events("c") if e.type == "balance.low"]
    assert [e.data["balance"] for e in lows] == [format_micros(t - 1) for t in reversed(alerts.low)]
    assert [e.type for e in shared.events("c")][-1] == "balance.exhausted"
    assert leasing.book.requests_from_leases > 1000


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 3), st.lists(st.sampled_from([0, 0, 1, 2, 5]), min_size=200, max_size=1200))
def test_several_processes_cross_each_balance_threshold_at_the_request_that_makes_it(
    processes: int, gaps: list[int]
) -> None:
    """Leases are taken with the next balance.low threshold as a floor: with several processes and stale
    views, no lease takes the balance past a threshold; each is crossed once, by a request checked alone
    (the balance it reports is the first one below the threshold), and none is missed.

    A threshold may be announced while another process's lease still holds money it later gives back
    (about 2 % of these timelines): the balance then ends above that threshold, but it was below it in
    Redis, which counts a lease's money as burned until the lease ends (decision 7)."""
    alerts = MoneyAlerts("USD", (100 * PRICE + 1, 500 * PRICE + 1, 1000 * PRICE + 1))
    money = Money((FLAT,), (1,), balance_period_start_ms=T0, alerts=alerts)
    shared = funded(1200 * PRICE)
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(processes)]
    requests: list[Request] = []
    t = T0
    for k, gap in enumerate(gaps):
        t += gap
        requests.append(Request(t, k % processes))
    asyncio.run(run(limiters, requests, money))
    held = balance(shared)  # the leases' unused money still counted as burned
    for limiter in limiters:
        asyncio.run(limiter.drain(t + 1))
    lows = [e for e in shared.events("c") if e.type == "balance.low"]
    left = balance(shared)
    crossed = [int(e.data["threshold"].replace(".", "")) for e in lows]
    descending = sorted(alerts.low, reverse=True)
    assert crossed == descending[: len(crossed)], "each once, the highest first"
    assert {x for x in descending if x > left} <= set(crossed), "none missed"
    assert set(crossed) <= {x for x in descending if x > min(left, held)}, "none the balance never went below"
    assert all(e.data["balance"] == format_micros(int(e.data["threshold"].replace(".", "")) - 1) for e in lows)
