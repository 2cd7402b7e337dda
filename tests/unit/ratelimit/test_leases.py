"""Capacity leases (``tollway.ratelimit.leases`` and ``leasing``) against the pure model.

* One process: the verdicts with leases equal the verdicts without, request for request (the lease's
  unused units go back with the next check), while most requests are answered in process.
* Several processes sharing the counters: never more admitted than a limit in any window of its width,
  nor than a quota in its period (hypothesis), whatever the arrivals, sweeps and lease sizes, and
  whatever the skew between the processes' clocks (windows are counted on the shared limiter's clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, Verdict, WindowPolicy
from tollway.ratelimit.leases import Lease, LeaseBook, lease_expiry, lease_policies, room
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.model import Limiter
from tollway.ratelimit.policies import Alerting
from tollway.ratelimit.refunds import Refund

T0 = 4_102_444_800_000  # 2100-01-01T00:00:00Z
DAY = 86_400_000
PER_SECOND = WindowPolicy.sliding("per-second", 400, 1000)  # buckets of 20 ms
PER_MINUTE = WindowPolicy.sliding("per-minute", 6000, 60_000)  # buckets of 1 s
MONTH = QuotaPolicy("month", 20_000, T0, T0 + 30 * DAY)
POLICIES: tuple[Policy, ...] = (PER_SECOND, PER_MINUTE, MONTH)


def test_a_lease_hands_out_its_units_then_ends() -> None:
    lease = Lease("c", POLICIES, (1, 1, 2), T0 + 5, T0 + 20, 3, (10, 20, 30))
    verdicts = [lease.take(T0 + 5 + i) for i in range(4)]
    assert [v.states[0].used for v in verdicts if v] == [11, 12, 13]
    assert [v.states[2].used for v in verdicts if v] == [32, 34, 36]
    assert verdicts[3] is None, "used up"
    first = verdicts[0]
    assert first is not None
    assert first.admitted
    assert [s.reset_ms for s in first.states] == [0, 0, 30 * DAY - 5]
    assert [s.remaining for s in first.states] == [389, 5979, 19_968]
    late = Lease("c", POLICIES, (1, 1, 1), T0, T0 + 20, 5, (0, 0, 0))
    assert late.take(T0 + 20) is None, "expired at the end of its bucket"
    assert late.take(T0 - 1) is None, "a clock stepped back does not use it"
    assert late.refund() == Refund((5, 5, 5), T0)


def test_a_lease_ends_with_its_bucket_and_period() -> None:
    assert lease_expiry(POLICIES, T0 + 5, 100) == T0 + 20  # the 20 ms bucket of the per-second window
    assert lease_expiry((PER_MINUTE,), T0 + 5, 100) == T0 + 105  # the lease period comes first
    assert lease_expiry((PER_MINUTE, MONTH), T0 + 30 * DAY - 10, 100) == T0 + 30 * DAY  # the period's end


def test_room_keeps_half_of_every_limit_and_at_most_a_sixteenth_per_lease() -> None:
    fresh = MemoryLimiter().check("c", POLICIES, 1, T0)
    assert room(POLICIES, (1, 1, 1), fresh) == 400 // 16
    assert room(POLICIES, (1, 1, 100), fresh) == 20_000 // 16 // 100
    busy = MemoryLimiter()
    busy.check("c", POLICIES, 190, T0)
    assert room(POLICIES, (1, 1, 1), busy.check("c", POLICIES, 1, T0)) == 400 - 191 - 200
    busy.check("c", POLICIES, 20, T0)
    assert room(POLICIES, (1, 1, 1), busy.check("c", POLICIES, 1, T0)) == 0
    small = WindowPolicy.sliding("small", 31, 1000)
    assert room((small,), (1,), MemoryLimiter().check("c", (small,), 1, T0)) < 2, "below 32: never leased"


def test_lease_sizes_follow_demand() -> None:
    book = LeaseBook(max_lease_ms=100)
    key = "k"
    assert book.take(key, T0) is None
    assert book.size_for(key, POLICIES, (1, 1, 1), 100) == 1, "no answer from Redis yet"
    book.observe(key, MemoryLimiter().check("c", POLICIES, 1, T0))
    assert book.size_for(key, POLICIES, (1, 1, 1), 100) == 1, "one request at a time: no lease"
    for i in range(9):
        book.take(key, T0 + 1 + i)
    assert book.size_for(key, POLICIES, (1, 1, 1), 100) == 16  # 10 requests in this period, × 1.5, + 1
    assert book.size_for(key, POLICIES, (1, 1, 1), 20) == 4  # scaled to a 20 ms lease
    assert book.size_for(key, POLICIES, (1, 1, 1), 100) == 16
    for i in range(100):
        book.take(key, T0 + 150 + i % 50)
    assert book.size_for(key, POLICIES, (1, 1, 1), 100) == 25, "capped by room: 1/16 of 400"


@dataclass
class Request:
    at_ms: int
    process: int


async def run(
    limiters: Sequence[LeasingLimiter],
    requests: Sequence[Request],
    policies: Sequence[Policy],
    costs: Sequence[int],
    skews: Sequence[int] = (),
    server: list[int] | None = None,
) -> list[tuple[Request, Verdict]]:
    """Each request through its process's leasing limiter (sync path first), sweeping every 50 ms.
    ``request.at_ms`` is the real time; process i's clock reads it plus ``skews[i]`` (default 0), and
    ``server[0]`` (the shared limiter's clock, if given) is set to it."""
    skews = list(skews) or [0] * len(limiters)
    results: list[tuple[Request, Verdict]] = []
    next_sweep = requests[0].at_ms if requests else 0
    for request in requests:
        if server is not None:
            server[0] = request.at_ms
        if request.at_ms >= next_sweep:
            for limiter, skew in zip(limiters, skews, strict=True):
                await limiter.sweep(request.at_ms + skew)
            next_sweep = request.at_ms + 50
        limiter = limiters[request.process]
        now = request.at_ms + skews[request.process]
        verdict = limiter.try_now("check", now)
        if verdict is None:
            verdict = await limiter.consume("check", "c", policies, costs, now)
        results.append((request, verdict))
    return results


def test_one_process_sees_exactly_what_a_lease_free_limiter_sees() -> None:
    """Every verdict equal, request for request, through bursts that reach every limit."""
    times: list[int] = []
    t = T0
    for burst in range(40):
        for _ in range(300 if burst % 3 else 30):
            times.append(t)
            t += 1 if burst % 2 else 3
        t += 400
    requests = [Request(at, 0) for at in times]
    plain = MemoryLimiter()
    leasing = LeasingLimiter(MemoryLimiter(), max_lease_ms=100)
    got = asyncio.run(run([leasing], requests, POLICIES, (1, 1, 1)))
    expected = [plain.check("c", POLICIES, 1, r.at_ms) for r in requests]
    mismatches = [(r.at_ms - T0, v, e) for (r, v), e in zip(got, expected, strict=True) if v != e]
    assert not mismatches, mismatches[:3]
    assert sum(not v.admitted for _, v in got) > 1000, "the limits were reached"
    assert leasing.book.leases_taken > 100


def test_far_from_the_limits_most_requests_are_answered_in_process() -> None:
    requests = [Request(T0 + i, 0) for i in range(0, 20_000, 8)]  # 125 a second: well within 400
    leasing = LeasingLimiter(MemoryLimiter(), max_lease_ms=100)
    results = asyncio.run(run([leasing], requests, (PER_SECOND, MONTH), (1, 1)))
    assert all(v.admitted for _, v in results)
    assert leasing.book.requests_from_leases > 0.6 * len(requests)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[int, list[Request], tuple[Policy, ...], tuple[int, ...]]:
    processes = draw(st.integers(1, 3))
    policies: tuple[Policy, ...] = (
        WindowPolicy.sliding("fast", draw(st.integers(32, 200)), draw(st.sampled_from([100, 200, 1000]))),
        WindowPolicy.sliding("slow", draw(st.integers(32, 600)), 10_000),
        QuotaPolicy("period", draw(st.integers(32, 2000)), T0, T0 + 20_000),
    )
    costs = (1, draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    requests: list[Request] = []
    t = T0
    for _ in range(draw(st.integers(50, 600))):
        t += draw(st.sampled_from([0, 0, 0, 1, 1, 2, 5, 20, 150]))
        requests.append(Request(t, draw(st.integers(0, processes - 1))))
    return processes, requests, policies, costs


def window_max(admitted: Sequence[int], width: int) -> int:
    """The most admissions (weighted by time list duplicates) in any window (a, a + width]."""
    best, start = 0, 0
    for end in range(len(admitted)):
        while admitted[end] - admitted[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


@settings(max_examples=60, deadline=None)
@given(timelines())
def test_several_processes_never_admit_more_than_a_limit(
    timeline: tuple[int, list[Request], tuple[Policy, ...], tuple[int, ...]],
) -> None:
    processes, requests, policies, costs = timeline
    shared: Limiter = MemoryLimiter()
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(processes)]
    results = asyncio.run(run(limiters, requests, policies, costs))
    for policy, cost in zip(policies, costs, strict=True):
        units = sorted(r.at_ms for r, v in results if v.admitted for _ in range(cost))
        if isinstance(policy, WindowPolicy):
            assert window_max(units, policy.window_ms) <= policy.limit, policy
        else:
            assert len(units) <= policy.limit, policy


def assert_within_limits(
    results: Sequence[tuple[Request, Verdict]], policies: Sequence[Policy], costs: Sequence[int]
) -> None:
    """No window policy admitted more than its limit in any window (a, a + W] of real time; no quota more
    than its limit."""
    for policy, cost in zip(policies, costs, strict=True):
        units = sorted(r.at_ms for r, v in results if v.admitted for _ in range(cost))
        if isinstance(policy, WindowPolicy):
            assert window_max(units, policy.window_ms) <= policy.limit, policy
        else:
            assert len(units) <= policy.limit, policy


@settings(max_examples=60, deadline=None)
@given(
    timelines(), st.lists(st.sampled_from([0, 1, -1, 7, -13, 999, -1000, 2000, -2500, 3001]), min_size=3, max_size=3)
)
def test_processes_with_skewed_clocks_never_admit_more_than_a_limit(
    timeline: tuple[int, list[Request], tuple[Policy, ...], tuple[int, ...]], skews: list[int]
) -> None:
    """Issue 13, item 8: each process's clock is off by its own skew (seconds, or a few ms around a bucket
    edge); the shared limiter counts windows on its own clock (Redis's TIME), and leases end with the
    limiter's bucket: whatever the skews, no limit is exceeded in any window of real time."""
    processes, requests, policies, costs = timeline
    server = [T0]
    shared: Limiter = MemoryLimiter(server_ms=lambda: server[0])
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(processes)]
    results = asyncio.run(run(limiters, requests, policies, costs, skews[:processes], server))
    assert_within_limits(results, policies, costs)


def test_two_processes_two_seconds_apart_admit_at_most_the_limit_in_any_real_window() -> None:
    """The issue's case on the model: 20 per 10 s shared by two processes, one clock 2 s ahead, a steady
    stream from both for 30 s. Counted on the processes' own clocks, the one ahead stops seeing the
    other's units 2 s early (30 in one 10 s window here; 37 in the issue's run); on the shared clock, 20."""
    window = WindowPolicy.sliding("per-10s", 20, 10_000)
    requests = [Request(T0 + i * 50, i % 2) for i in range(600)]
    server = [T0]
    shared = MemoryLimiter(server_ms=lambda: server[0])
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(2)]
    results = asyncio.run(run(limiters, requests, (window,), (1,), (0, 2000), server))
    assert_within_limits(results, (window,), (1,))
    assert sum(v.admitted for _, v in results) >= 3 * 20 * 10 // 11, "the limit is still used"
    assert all(v.at_ms == r.at_ms for r, v in results), "decided at the shared clock's time"


def test_a_lease_ends_with_the_limiters_bucket_whatever_this_processs_clock() -> None:
    """A process 2,010 ms ahead takes a lease that the limiter counts at T0 + 15, in its 20 ms bucket
    [T0, T0 + 20): the lease must end when that bucket ends (real T0 + 20, this process's T0 + 2030), not
    at the end of this process's own bucket (its T0 + 2040, real T0 + 30); its unused units go back to the
    limiter's bucket, and its verdicts carry the limiter's time."""
    skew = 2010
    server = [T0 + 5]
    shared = MemoryLimiter(server_ms=lambda: server[0])
    leasing = LeasingLimiter(shared, max_lease_ms=100)
    policies = (PER_SECOND,)

    async def main() -> None:
        assert (await leasing.consume("k", "c", policies, (1,), T0 + 5 + skew)).admitted  # alone: no demand yet
        assert leasing.clock_offset_ms == -skew
        for _ in range(60):  # demand
            assert leasing.try_now("k", T0 + 6 + skew) is None
        server[0] = T0 + 15
        now = T0 + 15 + skew
        first = await leasing.consume("k", "c", policies, (1,), now)
        assert leasing.book.leases_taken == 1
        assert first.at_ms == T0 + 15
        assert shared.counted("c", PER_SECOND, T0 + 20) == 1 + 6, "a lease of 6 (60 a period, for 5 ms, × 1.5)"
        inside = leasing.try_now("k", now + 4)  # real T0 + 19
        assert inside is not None
        assert inside.at_ms == T0 + 19
        assert leasing.try_now("k", now + 5) is None, "the limiter's bucket has ended: real T0 + 20"
        assert await leasing.sweep(now + 5) == 1
        assert shared.counted("c", PER_SECOND, T0 + 20) == 1 + 2, "4 unused units back to the limiter's bucket"

    asyncio.run(main())


def test_lease_expiry_converts_the_limiters_bucket_to_this_processs_clock() -> None:
    assert lease_expiry(POLICIES, T0 + 2025, 100, T0 + 15) == T0 + 2030  # bucket [T0, T0 + 20) on the limiter
    assert lease_expiry(POLICIES, T0 + 25, 100, T0 + 2015) == T0 + 30  # a process 1,990 ms behind
    assert lease_expiry((PER_MINUTE,), T0 + 2025, 100, T0 + 15) == T0 + 2125  # the lease period comes first
    assert lease_expiry((PER_MINUTE, MONTH), T0 + 30 * DAY - 10, 100, T0) == T0 + 30 * DAY  # period: own clock
    lease = Lease("c", POLICIES, (1, 1, 1), T0 + 2025, T0 + 2030, 3, (0, 0, 0), at_ms=T0 + 15)
    taken = lease.take(T0 + 2026)
    assert taken is not None
    assert taken.at_ms == T0 + 16
    assert lease.refund() == Refund((2, 2, 2), T0 + 15)


def _alerting(*levels: int) -> Alerting:
    return Alerting(levels, tuple(str(level) for level in levels), "pro", "read")


ALERT_WINDOW = WindowPolicy.sliding("per-second", 400, 1000, alerting=_alerting(50, 100, 200, 300))
ALERT_QUOTA = QuotaPolicy("month", 20_000, T0, T0 + 30 * DAY, alerting=_alerting(10, 100, 500, 1000, 5000))
ALERT_POLICIES: tuple[Policy, ...] = (ALERT_WINDOW, ALERT_QUOTA)


def test_a_lease_is_taken_with_its_next_levels_as_limits() -> None:
    minute = WindowPolicy.sliding("per-minute", 6000, 60_000)
    last = MemoryLimiter().check("c", (*ALERT_POLICIES, minute), 1, T0)  # used 1 of each
    window, quota, plain = lease_policies((*ALERT_POLICIES, minute), last)
    assert (window.limit, window.enforced) == (49, True)
    assert (quota.limit, quota.enforced) == (9, True)
    assert plain is minute
    assert lease_policies(POLICIES, last) is POLICIES
    assert lease_policies(ALERT_POLICIES, None) is ALERT_POLICIES
    soft = QuotaPolicy("soft", 100, T0, T0 + DAY, hard=False, alerting=_alerting(200))
    (lifted,) = lease_policies((soft,), MemoryLimiter().check("c", (soft,), 150, T0))
    assert (lifted.limit, lifted.enforced) == (100, True), "never above the policy's own limit"


def test_room_stops_a_lease_short_of_the_next_alert_level() -> None:
    fresh = MemoryLimiter().check("c", ALERT_POLICIES, 1, T0)  # used 1 of each
    assert room(ALERT_POLICIES, (1, 1), fresh) == 8  # the quota's level 10: 1 + 8 = 9 < 10
    assert room(POLICIES, (1, 1, 1), MemoryLimiter().check("c", POLICIES, 1, T0)) == 25
    at_level = MemoryLimiter()
    at_level.check("c", ALERT_POLICIES, (48, 20), T0)
    assert room(ALERT_POLICIES, (1, 1), at_level.check("c", ALERT_POLICIES, 1, T0)) == 0, "49: the next is 50"
    past = MemoryLimiter()
    past.check("c", ALERT_POLICIES, (59, 20), T0)
    assert room(ALERT_POLICIES, (1, 1), past.check("c", ALERT_POLICIES, 1, T0)) == 25, "60: 1/16 of 400 first"
    below = MemoryLimiter()
    below.check("c", ALERT_POLICIES, (10, 98), T0)
    assert room(ALERT_POLICIES, (1, 1), below.check("c", ALERT_POLICIES, 1, T0)) == 0, "99: the next is 100"
    assert room(ALERT_POLICIES, (1, 2), fresh) == 4  # 8 units below 10, at 2 a request


def test_with_leases_every_crossing_is_seen_once_at_the_request_that_makes_it() -> None:
    """One process with leases: each level's event appears at the very request whose count reaches it
    (checked alone in the limiter, never inside a lease taken earlier), once; the verdicts are the
    lease-free ones, and most requests are still answered from leases."""
    times = [T0 + i for i in range(0, 12_000, 6)]
    model = MemoryLimiter()
    leasing = LeasingLimiter(model, max_lease_ms=100)
    plain = MemoryLimiter()

    async def main() -> None:
        seen = 0
        for at in times:
            verdict = leasing.try_now("check", at)
            if verdict is None:
                verdict = await leasing.consume("check", "c", ALERT_POLICIES, (1, 1), at)
            assert verdict == plain.check("c", ALERT_POLICIES, 1, at)
            events = model.events("c")
            for event in events[seen:]:
                i = 0 if event.type == "limit.threshold_crossed" else 1
                level = event.data["threshold"]
                assert verdict.states[i].used == event.data["used"] == level, (at, event)
                assert event.ts_ms == verdict.at_ms
            seen = len(events)

    asyncio.run(main())
    events = model.events("c")
    quota_levels = [e.data["threshold"] for e in events if e.type == "quota.threshold_crossed"]
    assert quota_levels == [10, 100, 500, 1000]  # 2,000 requests: 5,000 is not reached
    assert len({e.id for e in events}) == len(events)
    assert {e.data["threshold"] for e in events if e.type == "limit.threshold_crossed"} == {50, 100}  # ~167 a second
    assert leasing.book.requests_from_leases > 0.3 * len(times)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.lists(st.sampled_from([0, 0, 1, 1, 2, 5, 20]), min_size=100, max_size=1500))
def test_several_leasing_processes_report_each_crossing_exactly_once(processes: int, gaps: list[int]) -> None:
    """Processes with leases sharing the counters: every level the quota's count reached has exactly one
    event, none it did not reach, each at the request that reached it, whatever the interleaving."""
    shared = MemoryLimiter()
    limiters = [LeasingLimiter(shared, max_lease_ms=100) for _ in range(processes)]
    requests: list[Request] = []
    t = T0
    for k, gap in enumerate(gaps):
        t += gap
        requests.append(Request(t, k % processes))
    results = asyncio.run(run(limiters, requests, ALERT_POLICIES, (1, 1)))
    for limiter in limiters:
        asyncio.run(limiter.drain(t + 1))
    counted = shared.counted("c", ALERT_QUOTA, t + 1)
    reached = max(v.states[1].used for _, v in results)
    events = [e for e in shared.events("c") if e.type == "quota.threshold_crossed"]
    assert [e.data["threshold"] for e in events] == [lv for lv in ALERT_QUOTA.alerting.levels if lv <= reached]
    assert counted <= reached
    assert len({e.id for e in shared.events("c")}) == len(shared.events("c"))
    # Each crossed by a request checked alone (cost 1: the count after it is the level), never by a lease,
    # even when another process's stale view sized that lease.
    assert all(e.data["used"] == e.data["threshold"] for e in shared.events("c"))


def test_a_request_that_waited_for_a_lease_is_answered_from_it_even_if_it_arrived_before() -> None:
    """A request that arrived (``now_ms``) before another took the lease it then waited for is answered
    from that lease on its second try (``demand=False``), at the lease's time: sent to Redis instead, it
    would be counted beside the lease's units still in hand, and the numbers the two hand out overlap.
    A first try at a time before the lease (a clock that stepped back) still gets nothing from it."""
    book = LeaseBook(max_lease_ms=100)
    lease = Lease("c", POLICIES, (1, 1, 1), T0 + 10, T0 + 20, 3, (5, 5, 5))
    book.store("k", lease)
    assert book.take("k", T0 + 7) is None, "a first try from before the lease"
    waited = book.take("k", T0 + 7, demand=False)
    assert waited is not None
    assert [s.used for s in waited.states] == [6, 6, 6]
    assert lease.used == 1


class _HeldLimiter:
    """A limiter whose next call is held back until released: a request whose Redis call is overtaken by
    later ones (sent on another connection, which Redis may serve first)."""

    def __init__(self, inner: MemoryLimiter) -> None:
        self.inner = inner
        self.hold_next = False
        self.release = asyncio.Event()

    async def consume(self, *args: Any, **kwargs: Any) -> Verdict:
        if self.hold_next:
            self.hold_next = False
            await self.release.wait()
        return await self.inner.consume(*args, **kwargs)

    async def refund(self, *args: Any, **kwargs: Any) -> None:
        await self.inner.refund(*args, **kwargs)


def test_a_request_in_flight_alone_is_counted_before_a_lease_taken_after_it() -> None:
    """A request sent alone, then a lease taken while that request's call is still in flight: the lease
    waits for it. Had the lease been counted first, the request would sit above the lease's units, and
    once the lease gives its unused units back, the next lease would hand out the request's place again."""
    policies: tuple[Policy, ...] = (QuotaPolicy("month", 1_000_000, T0, T0 + 30 * DAY),)
    held = _HeldLimiter(MemoryLimiter())
    leasing = LeasingLimiter(held, max_lease_ms=100)  # type: ignore[arg-type]
    used: list[int] = []

    async def one(at_ms: int) -> None:
        verdict = leasing.try_now("k", at_ms) or await leasing.consume("k", "c", policies, (1,), at_ms)
        assert verdict.admitted
        used.append(verdict.states[0].used)

    async def scenario() -> None:
        await one(T0 - 1000)  # the limiter's first answer (what leases are sized against), long before
        held.hold_next = True
        alone = asyncio.create_task(one(T0 + 1))  # demand is still low: sent alone, and held back
        await asyncio.sleep(0)
        for _ in range(8):  # demand grows: the next check takes a lease
            assert leasing.try_now("k", T0 + 2) is None
        leased = asyncio.create_task(one(T0 + 3))
        await asyncio.sleep(0.01)
        held.release.set()
        await asyncio.gather(alone, leased)
        assert leasing.book.leases_taken == 1, "the held request went alone, the next one took a lease"
        await leasing.sweep(T0 + 500)  # the lease ended: its unused units go back
        for i in range(30):
            await one(T0 + 600 + i)

    asyncio.run(scenario())
    assert sorted(used) == list(range(1, len(used) + 1)), sorted(used)


def test_a_request_giving_back_a_leases_units_is_counted_before_the_next_requests() -> None:
    """A lease ended with units left; the next request goes alone and gives them back with its own call.
    A request after it waits for that call: counted before the units went back, it would hold a place
    the counts then hand out again."""
    policies: tuple[Policy, ...] = (QuotaPolicy("month", 1_000_000, T0, T0 + 30 * DAY),)
    held = _HeldLimiter(MemoryLimiter())
    leasing = LeasingLimiter(held, max_lease_ms=100)  # type: ignore[arg-type]
    used: list[int] = []

    async def one(at_ms: int) -> None:
        verdict = leasing.try_now("k", at_ms) or await leasing.consume("k", "c", policies, (1,), at_ms)
        assert verdict.admitted
        used.append(verdict.states[0].used)

    async def scenario() -> None:
        for i in range(20):  # demand: a lease is taken and left with units when it ends
            await one(T0 + i)
        assert leasing.book.leases_taken >= 1
        later = T0 + 10_000  # the lease has ended, demand is low again: requests go alone
        held.hold_next = True
        giving_back = asyncio.create_task(one(later))  # carries the lease's unused units, held back
        await asyncio.sleep(0)
        after = asyncio.create_task(one(later + 1))
        await asyncio.sleep(0.01)
        held.release.set()
        await asyncio.gather(giving_back, after)
        for i in range(30):
            await one(later + 2 + i)

    asyncio.run(scenario())
    assert sorted(used) == list(range(1, len(used) + 1)), sorted(used)
