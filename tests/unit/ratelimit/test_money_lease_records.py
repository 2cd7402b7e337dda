"""Money leases when the limiter's answers get lost (a timeout before the call was sent, or after Redis ran
it): what a prepaid customer is charged is exactly the prices of the requests admitted, once every owed
refund is sent. Lease records (``ratelimit.money``, kind 9) make a refund sent twice count once, and a lease
take whose answer was lost is given back whole (the request was refused).

Before lease records, a lost answer left a lease's money burned: a refund that timed out was dropped, and a
take that timed out kept its whole size (found by CI: a balance 0.10 short after five requests)."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.lossy_limiter import FATES, LossyLimiter, run_lossy, settle_all
from tests.unit.ratelimit.test_leases import Request
from tests.unit.ratelimit.test_money_leases import PREPAID, PRICE, T0, funded
from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, WindowPolicy
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.money import Money, SpendCap
from tollway.ratelimit.refunds import Refund

POLICIES: tuple[Policy, ...] = (
    WindowPolicy.sliding("per-minute", 1_000_000, 60_000),
    QuotaPolicy("month", 10_000_000, T0, T0 + 30 * 86_400_000),
)


def burned(limiter: MemoryLimiter, funds: int) -> int:
    return funds - sum(g.remaining for g in limiter.grants("c"))


@st.composite
def lossy_timelines(draw: st.DrawFn) -> tuple[int, list[Request], list[str]]:
    processes = draw(st.integers(1, 2))
    requests: list[Request] = []
    t = T0
    for _ in range(draw(st.integers(20, 300))):
        t += draw(st.sampled_from([0, 0, 1, 2, 5, 20, 60, 150]))
        requests.append(Request(t, draw(st.integers(0, processes - 1))))
    fates = draw(st.lists(st.sampled_from(FATES), min_size=0, max_size=200))
    return processes, requests, fates


@settings(max_examples=80, deadline=None)
@given(lossy_timelines())
def test_lost_answers_never_cost_a_prepaid_customer_money(timeline: tuple[int, list[Request], list[str]]) -> None:
    processes, requests, fates = timeline
    funds = 10_000 * PRICE
    shared = funded(funds)
    script = iter(fates)
    lossy = LossyLimiter(shared, script)
    limiters = [LeasingLimiter(lossy, max_lease_ms=100) for _ in range(processes)]
    admitted = asyncio.run(run_lossy(limiters, requests, POLICIES, PREPAID))
    for _ in script:  # the store answers again
        pass
    asyncio.run(settle_all(limiters, requests[-1].at_ms + 1000))
    assert burned(shared, funds) == admitted * PRICE, "charged exactly the admitted requests"
    assert shared.charge_quantity("c", "calls", T0) == admitted
    assert shared.leases("c") == set(), "every lease record was closed"


def test_a_lease_take_whose_answer_was_lost_is_given_back_whole() -> None:
    funds = 1000 * PRICE
    shared = funded(funds)
    # The first lease taken (by the second request): its answer is lost after the script ran.
    lossy = LossyLimiter(shared, iter(["lost"]))
    leasing = LeasingLimiter(lossy, max_lease_ms=100)
    admitted = asyncio.run(run_lossy([leasing], [Request(T0, 0)] * 6, POLICIES, PREPAID))
    assert lossy.lost == 1
    assert leasing.owed == 1, "the lost take is owed back"
    asyncio.run(settle_all([leasing], T0 + 1000))
    assert burned(shared, funds) == admitted * PRICE
    assert shared.leases("c") == set()


def test_a_refund_sent_twice_is_applied_once() -> None:
    """The script's rule, on the model: a refund that closes a record no longer there gives nothing."""
    shared = funded(100 * PRICE)
    leased = Money(PREPAID.charges, (4,), balance_period_start_ms=T0, lease="p1.1")
    assert shared.check("c", POLICIES, (4, 4), T0, None, leased).admitted
    back = Refund((3, 3), T0, (3,), lease="p1.1")
    for _ in range(3):
        asyncio.run(shared.refund("c", POLICIES, back, T0 + 1, PREPAID))
    assert burned(shared, 100 * PRICE) == PRICE
    assert shared.charge_quantity("c", "calls", T0) == 1
    assert shared.leases("c") == set()


def test_a_spend_cap_lease_lost_in_flight_leaves_the_spend_exact() -> None:
    capped = Money(PREPAID.charges, (1,), spend_cap=SpendCap(500 * PRICE, T0, T0 + 30 * 86_400_000))
    shared = MemoryLimiter()
    fates = iter(itertools.islice(itertools.cycle(["ok", "ok", "lost", "unsent", "ok"]), 400))
    lossy = LossyLimiter(shared, fates)
    leasing = LeasingLimiter(lossy, max_lease_ms=100)
    requests = [Request(T0 + i // 4, 0) for i in range(800)]
    admitted = asyncio.run(run_lossy([leasing], requests, POLICIES, capped))
    for _ in fates:
        pass
    asyncio.run(settle_all([leasing], requests[-1].at_ms + 1000))
    assert shared.spent("c", T0) == admitted * PRICE
