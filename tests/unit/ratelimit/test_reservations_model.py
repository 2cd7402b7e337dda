"""Reservations on the pure model (``MemoryLimiter``): a reserve priced and burned at admission with a
record keyed by the usage row id, settled exactly once (returns, overruns within the plan's allowance,
the debt record, forgiven overruns, releases). The worked example of docs/credits.md#reservations.

The Lua scripts are held to the same semantics by tests/integration/test_money_redis.py.
"""

from __future__ import annotations

import pytest

from tollway.credits.charges import RealTimeCharge
from tollway.credits.grants import GrantState
from tollway.notifications.events import Event, event_id
from tollway.ratelimit import MemoryLimiter
from tollway.ratelimit.money import Money, MoneyAlerts, SpendCap
from tollway.ratelimit.reservations import DEBT_GRANT, DEBT_PRIORITY, Reservation, Settlement

T0 = 4_102_444_800_000  # 2100-01-01
DAY = 86_400_000
P1 = T0 + 31 * DAY
CALLS = RealTimeCharge("calls", "per_unit", T0, P1, unit=1_000)
TOKENS = RealTimeCharge("tokens", "per_unit", T0, P1, unit=10)  # 10 micro-units a token


def reserving(row_id: str, overrun: int = 20_000, reserve: int = 4_000) -> Money:
    """One call (admission-known) plus a reserve of ``reserve`` tokens."""
    return Money((CALLS, TOKENS), (1, reserve), T0, None, (False, True), overrun, row_id)


def balance(lim: MemoryLimiter) -> int:
    return sum(g.remaining for g in lim.grants("c"))


def test_the_worked_example_reserve_settle_overrun_debt_top_up_release() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g1", 100_000, effective_ms=T0))
    now = T0 + DAY
    # Admission: 1 call (1_000) + 4_000 tokens reserved (40_000), one record keyed by the row id.
    first = lim.check("c", [], 0, now, None, reserving("row-1"))
    assert first.admitted
    assert first.money is not None
    assert (first.money.price, first.money.balance_after) == (41_000, 59_000)
    record = Reservation.decode("row-1", lim.reservations("c")["row-1"])
    assert (record.price, record.overrun, record.created_ms, record.admitted_price) == (40_000, 20_000, now, 41_000)
    assert [(c.charge.name, c.quantity, c.price) for c in record.charges] == [("tokens", 4_000, 40_000)]
    # The response used 1_500 tokens: 2_500 go back with their price; the request cost 1_000 + 15_000.
    settled = lim.settle_now("c", "row-1", (1_500,), now + 1)
    assert settled == Settlement("row-1", "settled", 15_000, 25_000, 0, 0, now + 1, 16_000)
    assert balance(lim) == 84_000
    assert lim.charge_quantity("c", "tokens", T0) == 1_500
    # Exactly once: a second settle (another process, a retried entry, the sweeper) changes nothing and
    # learns the same outcome.
    again = lim.settle_now("c", "row-1", (9_999,), now + 2)
    assert again == Settlement("row-1", "already", 15_000, 25_000, 0, 0, now + 1, 16_000)
    assert balance(lim) == 84_000
    assert lim.settle_now("c", "nope", (1,), now).status == "unknown"
    # An overrun: reserve 4_000 (40_000; 43_000 left), use 11_000: 7_000 more tokens = 70_000, within
    # 43_000 + the allowance 20_000? No: 63_000 are burned (the balance to -20_000), 7_000 forgiven.
    assert lim.check("c", [], 0, now, None, reserving("row-2")).admitted
    over = lim.settle_now("c", "row-2", (11_000,), now + 3)
    assert over == Settlement("row-2", "settled", 40_000 + 63_000, 0, 63_000, 7_000, now + 3, 104_000)
    assert {g.grant_id: g.remaining for g in lim.grants("c")} == {"g1": 0, DEBT_GRANT: -20_000}
    assert lim.grants("c")[0] == GrantState(DEBT_GRANT, -20_000, DEBT_PRIORITY)
    assert lim.charge_quantity("c", "tokens", T0) == 1_500 + 11_000  # the quantity is what was used
    # A negative balance refuses every priced request (402) until topped up.
    refused = lim.check("c", [], 0, now, None, reserving("row-3"))
    assert not refused.admitted
    assert refused.money is not None
    assert refused.money.refused == "insufficient-credits"
    assert "row-3" not in lim.reservations("c")
    lim.put_grant("c", GrantState("top-up", 70_000, effective_ms=T0))
    assert lim.check("c", [], 0, now, None, reserving("row-3")).admitted  # a balance of 50_000; 41_000 burned
    # Released (nothing used): the whole reserve goes back, to the debt first (first in burn order).
    released = lim.settle_now("c", "row-3", (0,), now + 4)
    assert released == Settlement("row-3", "settled", 0, 40_000, 0, 0, now + 4, 1_000)
    assert {g.grant_id: g.remaining for g in lim.grants("c")} == {"g1": 0, DEBT_GRANT: 20_000, "top-up": 29_000}


def test_without_an_allowance_an_overrun_stops_at_zero() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g1", 45_000, effective_ms=T0))
    assert lim.check("c", [], 0, T0, None, reserving("r", overrun=0)).admitted  # 4_000 left
    out = lim.settle_now("c", "r", (5_000,), T0)  # 1_000 tokens more = 10_000: 4_000 burned, 6_000 forgiven
    assert (out.price, out.burned, out.forgiven) == (44_000, 4_000, 6_000)
    assert balance(lim) == 0
    assert DEBT_GRANT not in {g.grant_id for g in lim.grants("c")}


def test_a_reservation_needs_a_row_id_and_a_row_id_reserves_once() -> None:
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g1", 1_000_000, effective_ms=T0))
    with pytest.raises(ValueError, match="row id"):
        lim.check("c", [], 0, T0, None, reserving(""))
    assert lim.check("c", [], 0, T0, None, reserving("r")).admitted
    with pytest.raises(ValueError, match="exists"):
        lim.check("c", [], 0, T0, None, reserving("r"))
    with pytest.raises(ValueError, match="1 reserved charges"):
        lim.settle_now("c", "r", (1, 2), T0)


def test_an_overrun_past_the_spend_cap_is_announced_once_and_a_give_back_announces_nothing() -> None:
    """A settlement's overrun is a burn like a check's price: past a hard cap (an overrun is never
    refused) it announces ``spend_cap.reached`` (``spent`` after the returns, ``price`` the overrun
    burned), once per cap period; a balance it does not take below a threshold announces nothing; a
    give-back announces nothing; a replayed settlement nothing more."""
    lim = MemoryLimiter()
    lim.put_grant("c", GrantState("g1", 100_000, effective_ms=T0))
    cap = SpendCap(50_000, T0, P1, hard=True)
    alerts = MoneyAlerts("USD", (30_000,))
    money = Money((CALLS, TOKENS), (1, 4_000), T0, cap, (False, True), 20_000, "row-1", alerts)
    assert lim.check("c", [], 0, T0 + 1, None, money).admitted  # spent 41_000, balance 59_000
    assert lim.events("c") == []
    assert lim.settle_now("c", "row-1", (5_000,), T0 + 2).burned == 10_000  # spent 51_000, balance 49_000
    expected = Event(
        event_id("spend_cap.reached", "c", T0, 50_000),
        "spend_cap.reached",
        T0 + 2,
        "c",
        {
            "currency": "USD",
            "cap": "0.05",
            "spent": "0.041",
            "price": "0.01",
            "soft": False,
            "period_start": "2100-01-01T00:00:00Z",
            "period_end": "2100-02-01T00:00:00Z",
        },
    )
    assert lim.events("c") == [expected]
    assert lim.settle_now("c", "row-1", (9_000,), T0 + 3).status == "already"
    assert not lim.check("c", [], 0, T0 + 3, None, money.for_row("row-2")).admitted  # the hard cap refuses
    assert lim.events("c") == [expected]  # the same id: announced once
    # A give-back (another reservation, released) crosses nothing.
    lim.put_grant("c", GrantState("g2", 100_000, effective_ms=T0))
    wide = Money((CALLS, TOKENS), (1, 4_000), T0, None, (False, True), 20_000, "row-3", alerts)
    assert lim.check("c", [], 0, T0 + 4, None, wide).admitted
    before = lim.events("c")
    assert lim.settle_now("c", "row-3", (0,), T0 + 5).back == 40_000
    assert lim.events("c") == before
