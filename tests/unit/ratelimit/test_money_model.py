"""The money part of a limiter check on the pure model (``MemoryLimiter``): prices at the running quantity,
balances burned in burn order, rollovers, refunds of charge units, spend caps, all or nothing.

The Lua script is held to the same semantics by tests/integration/test_money_redis.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.credits.charges import RealTimeCharge, TierMicros
from tollway.credits.grants import NO_EXPIRY, REFUND_GRANT, GrantState
from tollway.ratelimit import MemoryLimiter, QuotaPolicy, WindowPolicy
from tollway.ratelimit.money import Money, MoneyState, SpendCap
from tollway.ratelimit.refunds import Refund

T0 = 4_102_444_800_000  # 2100-01-01
DAY = 86_400_000
P1 = T0 + 31 * DAY
P2 = P1 + 28 * DAY

PER_CALL = RealTimeCharge("calls", "per_unit", T0, P1, unit=1_000)  # 0.001 per call
TIERED = RealTimeCharge(
    "tokens",
    "graduated",
    T0,
    P1,
    tiers=(TierMicros(10, 100, 0), TierMicros(20, 50, 7_000), TierMicros(None, 10, 0)),
)
PACKAGE = RealTimeCharge("pages", "package", T0, P1, package_size=5, package=2_000, free_units=3)


def prepaid(*quantities: int, charges: tuple[RealTimeCharge, ...] = (PER_CALL,), start: int = T0) -> Money:
    return Money(charges, quantities, balance_period_start_ms=start)


def test_a_price_the_balance_cannot_cover_is_refused_and_changes_nothing() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g1", 2_500, effective_ms=T0))
    burst = WindowPolicy.sliding("burst", 10, 1000)
    verdicts = [lim.check("c", [burst], 1, T0 + i, money=prepaid(1)) for i in range(3)]
    assert [v.admitted for v in verdicts] == [True, True, False]
    before = lim.snapshot(), lim.money_snapshot()
    refused = lim.check("c", [burst], 1, T0 + 3, money=prepaid(1))
    assert (lim.snapshot(), lim.money_snapshot()) == before
    assert not refused.admitted
    assert refused.violated == ()
    assert refused.retry_after_s == 0
    assert refused.states[0].used == 2
    assert refused.money == MoneyState(1_000, 500, None, (2,), "insufficient-credits")
    assert refused.money.balance_after == 500
    assert lim.charge_quantity("c", "calls", T0) == 2
    assert [g.remaining for g in lim.grants("c")] == [500]


def test_a_policy_violation_is_reported_before_money() -> None:
    lim = MemoryLimiter()
    quota = QuotaPolicy("month", 1, T0, P1)
    assert lim.check("c", [quota], 1, T0, money=prepaid(1)).money == MoneyState(
        1_000, 0, None, (0,), "insufficient-credits"
    )
    lim.put_grant("c", GrantState("g", 10_000))
    assert lim.check("c", [quota], 1, T0, money=prepaid(1)).admitted
    verdict = lim.check("c", [quota], 1, T0, money=Money((PER_CALL,), (20,), T0))  # over quota and balance
    assert verdict.violated == ("month",)
    assert verdict.money == MoneyState(20_000, 9_000, None, (1,))
    assert verdict.retry_after_s > 0


def test_money_without_policies_is_checked() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", 1_000))
    assert lim.check("c", [], 0, T0, money=prepaid(1)).admitted
    assert not lim.check("c", [], 0, T0, money=prepaid(1)).admitted
    assert lim.check("c", [], 0, T0, money=prepaid(0)).admitted  # a price of 0 always fits


def test_burn_order_is_priority_then_earliest_expiry_and_expired_grants_do_not_burn() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("late", 3_000, priority=1, expires_ms=T0 + 50 * DAY))
    lim.put_grant("c", GrantState("none", 3_000, priority=1))
    lim.put_grant("c", GrantState("soon", 3_000, priority=1, expires_ms=T0 + 20 * DAY))
    lim.put_grant("c", GrantState("first", 1_000, priority=0))
    lim.put_grant("c", GrantState("gone", 9_000, priority=0, expires_ms=T0 + 1))
    lim.put_grant("c", GrantState("later", 9_000, priority=0, effective_ms=T0 + DAY))
    verdict = lim.check("c", [], 0, T0 + 5, money=prepaid(5))
    assert verdict.money == MoneyState(5_000, 10_000, None, (0,))
    left = {g.grant_id: g.remaining for g in lim.grants("c")}
    assert left == {"first": 0, "soon": 0, "late": 2_000, "none": 3_000, "gone": 9_000, "later": 9_000}
    # An expired grant is never burned, even when the live ones cannot cover the price.
    verdict = lim.check("c", [], 0, T0 + 5, money=prepaid(6))
    assert verdict.money is not None
    assert verdict.money.refused == "insufficient-credits"
    assert {g.grant_id: g.remaining for g in lim.grants("c")} == left


def test_rollover_caps_a_grant_at_a_period_boundary_exactly_once() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("monthly", 10_000, effective_ms=T0, rollover_max=3_000, rolled_ms=T0))
    lim.put_grant("c", GrantState("none", 1_000, effective_ms=T0, rollover_max=0, rolled_ms=T0))
    lim.put_grant("c", GrantState("keep", 1_000, effective_ms=T0))
    assert lim.check("c", [], 0, T0 + 1, money=prepaid(2)).admitted  # burns 2,000 of "keep" then "monthly"
    assert {g.grant_id: g.remaining for g in lim.grants("c")} == {"monthly": 9_000, "none": 1_000, "keep": 0}
    later = Money((PER_CALL,), (1,), P1)
    verdict = lim.check("c", [], 0, P1 + 5, money=later)
    assert verdict.money is not None
    assert verdict.money.balance == 3_000
    rolled = {g.grant_id: g for g in lim.grants("c")}
    assert rolled["monthly"] == GrantState("monthly", 2_000, 0, T0, NO_EXPIRY, 3_000, P1, 6_000)
    assert rolled["none"] == GrantState("none", 0, 0, T0, NO_EXPIRY, 0, P1, 1_000)
    # Once: later checks of the same period do not cap again.
    for k in range(2):
        assert lim.check("c", [], 0, P1 + 10 + k, money=later).admitted
    assert {g.grant_id: g.remaining for g in lim.grants("c")} == {"monthly": 0, "none": 0, "keep": 0}
    # The next boundary caps what is left (nothing here), and a grant effective after it is untouched.
    lim.put_grant("c", GrantState("topup", 5_000, effective_ms=P2 + 1, rollover_max=0, rolled_ms=P2 + 1))
    assert lim.check("c", [], 0, P2 + 2, money=Money((PER_CALL,), (1,), P2)).admitted
    assert {g.grant_id: g.remaining for g in lim.grants("c")}["topup"] == 4_000


def test_a_rollover_is_kept_even_when_the_check_is_refused() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", 10_000, effective_ms=T0, rollover_max=500, rolled_ms=T0))
    verdict = lim.check("c", [], 0, P1, money=Money((PER_CALL,), (1,), P1))
    assert verdict.money is not None
    assert verdict.money.refused == "insufficient-credits"
    assert lim.grants("c") == [GrantState("g", 500, 0, T0, NO_EXPIRY, 500, P1, 9_500)]


def test_a_burst_across_a_tier_boundary_pays_each_sides_price() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", 10**9))
    money = prepaid(8, charges=(TIERED,))
    assert lim.check("c", [], 0, T0, money=money).money == MoneyState(800, 10**9, None, (0,))
    # 8 -> 23: 2 at 100, the second tier's flat fee and 10 at 50, the third tier's 3 at 10.
    verdict = lim.check("c", [], 0, T0, money=prepaid(15, charges=(TIERED,)))
    assert verdict.money is not None
    assert verdict.money.price == 200 + 7_000 + 500 + 30
    assert lim.charge_quantity("c", "tokens", T0) == 23
    assert lim.grants("c")[0].remaining == 10**9 - 800 - 7_730 == 10**9 - TIERED.total(23)


def test_packages_burn_when_a_package_is_started() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", 10**6))
    prices = []
    for _ in range(10):
        verdict = lim.check("c", [], 0, T0, money=prepaid(1, charges=(PACKAGE,)))
        assert verdict.money is not None
        prices.append(verdict.money.price)
    assert prices == [0, 0, 0, 2_000, 0, 0, 0, 0, 2_000, 0]


def test_refunded_charge_units_give_back_the_top_positions_price() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", 100_000, expires_ms=T0 + DAY))
    cap = SpendCap(50_000, T0, P1)
    money = Money((TIERED,), (25,), T0, cap)
    assert lim.check("c", [], 0, T0, money=money).admitted  # a lease of 25
    assert lim.spent("c", T0) == TIERED.total(25)
    # 10 unused: the price of positions 16..25 (5 at 10, 5 at 50) comes back.
    lim.check("c", [], 0, T0, Refund((), T0, (10,)), money=Money((TIERED,), (0,), T0, cap))
    assert lim.charge_quantity("c", "tokens", T0) == 15
    assert lim.grants("c")[0].remaining == 100_000 - TIERED.total(15)
    assert lim.spent("c", T0) == TIERED.total(15)
    # Never below zero; after the grant expired, the refund goes to it still (the one that expires last).
    asyncio_refund(lim, Refund((), T0, (40,)), T0 + 2 * DAY, Money((TIERED,), (3,), T0, cap))
    assert lim.charge_quantity("c", "tokens", T0) == 0
    assert lim.grants("c")[0].remaining == 100_000
    assert lim.spent("c", T0) == 0


def test_a_refund_to_a_customer_without_grants_makes_the_refund_grant() -> None:
    lim = MemoryLimiter()
    postpaid = Money((PER_CALL,), (3,), spend_cap=SpendCap(10**6, T0, P1))
    assert lim.check("c", [], 0, T0, money=postpaid).admitted
    lim.check("c", [], 0, T0, Refund((), T0, (2,)), money=Money((PER_CALL,), (0,), T0))
    assert lim.grants("c") == [GrantState(REFUND_GRANT, 2_000)]
    assert lim.spent("c", T0) == 3_000  # the check had no cap: the spend counter is not touched


def test_spend_caps_hard_and_soft() -> None:
    lim = MemoryLimiter()
    hard = Money((PER_CALL,), (4,), spend_cap=SpendCap(10_000, T0, P1))
    verdicts = [lim.check("c", [], 0, T0, money=hard) for _ in range(3)]
    assert [v.admitted for v in verdicts] == [True, True, False]
    assert verdicts[2].money == MoneyState(4_000, None, 8_000, (8,), "spend-cap-reached", cap=10_000)
    assert lim.check("c", [], 0, T0, money=Money((PER_CALL,), (2,), spend_cap=SpendCap(10_000, T0, P1))).admitted
    soft = Money((PER_CALL,), (1,), spend_cap=SpendCap(10_000, T0, P1, hard=False))
    verdict = lim.check("c", [], 0, T0, money=soft)
    assert verdict.admitted
    assert verdict.money == MoneyState(1_000, None, 10_000, (10,), over_cap=True, cap=10_000)
    # The balance is checked first; a lowered cap still admits a price of 0.
    both = Money((PER_CALL,), (1,), T0, SpendCap(0, T0, P1))
    assert lim.check("c", [], 0, T0, money=both).money == MoneyState(
        1_000, 0, 11_000, (11,), "insufficient-credits", cap=0
    )
    assert lim.check("c", [], 0, T0, money=Money((PER_CALL,), (0,), T0, SpendCap(0, T0, P1))).admitted


def asyncio_refund(lim: MemoryLimiter, refund: Refund, now_ms: int, money: Money) -> None:
    import asyncio

    asyncio.run(lim.refund("c", [], refund, now_ms, money))


CHARGES = [
    PER_CALL,
    TIERED,
    PACKAGE,
    RealTimeCharge("pkgdown", "package", T0, P1, package_size=3, package=900, free_units=2, round_up=False),
]


@st.composite
def actions(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["check", "check", "refund", "refund-inline"]), st.integers(0, 3), st.integers(0, 12)
            ),
            max_size=40,
        )
    )


@settings(max_examples=200, deadline=None)
@given(actions(), st.integers(0, 60_000), st.booleans())
def test_the_money_burned_for_a_charge_is_the_total_of_its_counter(
    steps: list[tuple[str, int, int]], balance: int, with_cap: bool
) -> None:
    """Invariant: after any sequence of checks and refunds, what the grants lost and the spend counter
    holds is exactly Σ ``charge.total(counter)``, and every admitted check's price fitted."""
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g", balance))
    cap = SpendCap(40_000, T0, P1) if with_cap else None
    for i, (kind, which, n) in enumerate(steps):
        charges = (CHARGES[which],)
        now = T0 + i
        if kind == "check":
            verdict = lim.check("c", [], 0, now, money=Money(charges, (n,), T0, cap))
            assert verdict.money is not None
            if verdict.admitted and cap is not None:
                assert verdict.money.spent is not None
                assert verdict.money.spent + verdict.money.price <= cap.cap
        elif kind == "refund":
            asyncio_refund(lim, Refund((), now, (n,)), now, Money(charges, (5,), T0, cap))
        else:
            lim.check("c", [], 0, now, Refund((), now, (n,)), money=Money(charges, (0,), T0, cap))
    burned = sum(c.total(lim.charge_quantity("c", c.name, T0)) for c in CHARGES)
    assert sum(g.remaining for g in lim.grants("c")) == balance - burned
    assert all(g.remaining >= 0 for g in lim.grants("c"))
    if cap is not None:
        assert lim.spent("c", T0) == burned
