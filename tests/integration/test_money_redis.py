"""Money in the limiter script on a real Valkey: the Lua script against the pure model (``MemoryLimiter``)
on random timelines, and exactness of a balance under concurrent checks from two clients."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tollway.credits.charges import RealTimeCharge, TierMicros
from tollway.credits.grants import NO_EXPIRY, NO_ROLLOVER, GrantState, decode_all, live_balance
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.events import Event, event_id
from tollway.notifications.keys import stream_key
from tollway.periods import BillingSchedule
from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, RedisLimiter, WindowPolicy
from tollway.ratelimit.keys import funding_key
from tollway.ratelimit.money import Money, MoneyAlerts, MoneyState, SpendCap
from tollway.ratelimit.policies import Alerting
from tollway.ratelimit.refunds import Refund

pytestmark = pytest.mark.integration

SECOND = 1000
HOUR = 3_600_000
DAY = 86_400_000
# 2026-10-28 12:00Z: the timelines cross New York's fall-back (Nov 1, 06:00Z) and month boundaries.
START = int(datetime(2026, 10, 28, 12, tzinfo=UTC).timestamp() * 1000)
SCHEDULES = [
    BillingSchedule(datetime(2026, 1, 1, tzinfo=UTC), "America/New_York"),  # calendar: Nov 1 00:00 EDT
    # Anniversary at 01:30 local on the 1st: Nov 1 01:30 happens twice in New York (the first counts).
    BillingSchedule(datetime(2026, 1, 1, 6, 30, tzinfo=UTC), "America/New_York", alignment="anniversary"),
    BillingSchedule(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "Europe/Paris", alignment="anniversary"),
]


@dataclass(frozen=True)
class ChargeSpec:
    """A real-time charge without its period (the timeline's period decides it)."""

    name: str
    model: str
    unit: int = 0
    tiers: tuple[TierMicros, ...] = ()
    size: int = 1
    package: int = 0
    free: int = 0
    round_up: bool = True

    def at(self, start: int, end: int, scale: int) -> RealTimeCharge:
        tiers = tuple(TierMicros(t.up_to, t.unit * scale, t.flat * scale) for t in self.tiers)
        if self.model == "per_unit":
            return RealTimeCharge(self.name, "per_unit", start, end, unit=self.unit * scale)
        if self.model == "graduated":
            return RealTimeCharge(self.name, "graduated", start, end, tiers=tiers)
        return RealTimeCharge(
            self.name,
            "package",
            start,
            end,
            package_size=self.size,
            package=self.package * scale,
            free_units=self.free,
            round_up=self.round_up,
        )


@st.composite
def charge_specs(draw: st.DrawFn, name: str) -> ChargeSpec:
    model = draw(st.sampled_from(["per_unit", "graduated", "package"]))
    if model == "per_unit":
        return ChargeSpec(name, model, unit=draw(st.integers(0, 5_000)))
    if model == "graduated":
        bounds = sorted(draw(st.sets(st.integers(1, 30), min_size=0, max_size=3)))
        ups: list[int | None] = [*bounds, None]
        tiers = tuple(
            TierMicros(up, draw(st.integers(0, 3_000)), draw(st.sampled_from([0, 0, 500, 2_000]))) for up in ups
        )
        return ChargeSpec(name, model, tiers=tiers)
    return ChargeSpec(
        name,
        model,
        size=draw(st.integers(1, 6)),
        package=draw(st.integers(0, 9_000)),
        free=draw(st.integers(0, 8)),
        round_up=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Plan:
    schedule: BillingSchedule
    charges: tuple[ChargeSpec, ...]
    scale: int
    prepaid: bool
    cap: int | None
    hard_cap: bool
    window: WindowPolicy | None
    quota: tuple[int, bool] | None  # limit, hard
    low: tuple[int, ...] = ()  # balance.low thresholds (micro-units, before the scale)
    alerting: bool = False  # the policies have alert levels and the money its events


@dataclass(frozen=True)
class Check:
    dt: int
    costs: tuple[int, int]
    quantities: tuple[int, ...]
    refund: tuple[tuple[int, int], tuple[int, ...], int, str] | None  # policy units, charge units, taken ago, how
    balance: bool  # the plan's balance is checked (a prepaid plan's check without it: postpaid now)
    cap: bool  # the plan's spend cap (or ``cap_now``) is checked
    cap_now: int | None  # a cap changed for this check (lowered or raised by the customer)


@dataclass(frozen=True)
class Grant:
    dt: int
    grant_id: str
    amount: int
    priority: int
    effective_in: int
    expires_in: int | None
    rollover: int | None


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    charges = tuple(draw(charge_specs(name)) for name in ("a", "b")[: draw(st.integers(1, 2))])
    prepaid = draw(st.booleans())
    cap = draw(st.one_of(st.none(), st.integers(0, 200_000)))
    if not prepaid and cap is None:
        cap = draw(st.integers(0, 200_000))
    window = draw(
        st.one_of(
            st.none(),
            st.builds(lambda n, h: WindowPolicy.sliding("w", n, 10_000, hard=h), st.integers(0, 12), st.booleans()),
        )
    )
    quota = draw(st.one_of(st.none(), st.tuples(st.integers(0, 40), st.booleans())))
    return Plan(
        draw(st.sampled_from(SCHEDULES)),
        charges,
        draw(st.sampled_from([1, 1, 1_000, 10_000_000])),
        prepaid,
        cap,
        draw(st.booleans()),
        window,
        quota,
        tuple(sorted(draw(st.sets(st.integers(1, 60_000), max_size=3)))),
        draw(st.booleans()),
    )


def levels_of(limit: int) -> Alerting:
    """Alert levels around a policy's limit (50 %, 100 %, and one past it for soft policies)."""
    chosen = sorted({max(1, (limit + 1) // 2), max(1, limit), limit + 2})
    return Alerting(tuple(chosen), tuple(f"{level}u" for level in chosen), "pro", "read")


DTS = st.one_of(
    st.integers(0, 3 * SECOND), st.integers(0, 6 * HOUR), st.integers(DAY // 2, 9 * DAY), st.sampled_from([0, 1])
)


def steps(plan: Plan) -> st.SearchStrategy[list[Check | Grant]]:
    n = len(plan.charges)
    refunds = st.one_of(
        st.none(),
        st.tuples(
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
            st.tuples(*[st.integers(0, 12) for _ in range(n)]),
            st.sampled_from([0, 5, 4_000, 20_000]),
            st.sampled_from(["inline", "alone"]),
        ),
    )
    checks = st.builds(
        Check,
        DTS,
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(*[st.one_of(st.integers(0, 4), st.integers(0, 25)) for _ in range(n)]),
        refunds,
        st.integers(0, 7).map(bool),
        st.integers(0, 7).map(bool),
        st.one_of(st.none(), st.none(), st.integers(0, 200_000)),
    )
    grants = st.builds(
        Grant,
        DTS,
        st.sampled_from(["g1", "g2", "g3", "B", "a.b", "g-10", "returned"]),
        st.one_of(st.integers(1, 60_000), st.integers(1, 10**9)),
        st.integers(0, 2),
        st.sampled_from([-DAY, 0, 0, 2 * SECOND, 3 * DAY]),
        st.one_of(
            st.none(),
            st.sampled_from([1, 3 * SECOND, 4 * HOUR, 5 * DAY, 40 * DAY]),
            st.sampled_from([-3, -7]),  # at an absolute time (-k: START + k days): ties of expiry
        ),
        st.one_of(st.none(), st.just(0), st.integers(1, 2_000), st.integers(1, 30_000)),
    )
    return st.lists(st.one_of(checks, checks, grants), max_size=40)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[Plan, list[Check | Grant], int]:
    plan = draw(plans())
    return plan, draw(steps(plan)), START + draw(st.integers(0, 5 * DAY))


PARTITIONS = itertools.count()


@asynccontextmanager
async def limiter(server: ValkeyServer, *, coalesce: bool = False) -> AsyncIterator[tuple[RedisLimiter, Redis]]:
    redis = Redis.from_url(server.url, decode_responses=True)
    lim = RedisLimiter(redis, coalesce=coalesce, server_time=False)
    try:
        yield lim, redis
    finally:
        await lim.aclose()
        await redis.aclose()


def period_of(schedule: BillingSchedule, now_ms: int) -> tuple[int, int]:
    period = schedule.period_containing(datetime.fromtimestamp(now_ms / 1000, UTC))
    return int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timelines())
def test_the_money_script_matches_the_model_on_random_timelines(
    valkey_fresh: ValkeyServer, case: tuple[Plan, list[Check | Grant], int]
) -> None:
    """Differential test: random timelines of checks with policies and money (per-unit, graduated with flat
    fees, packages rounding up and down with free units; a balance, a soft or hard spend cap, or both),
    refunds of leased units and charge units (with a check or alone), grants put at any time (priorities,
    future and past effective dates, expiries, rollover rules) and period boundaries of a customer in a
    timezone (a DST change inside) give identical verdicts, MoneyState included, from the Lua script and
    the model; and the grants and counters left in Valkey are the model's. With alerts (policy levels,
    balance thresholds), the script's outbox holds exactly the model's events: threshold crossings,
    re-crossings after refunds and in new periods, balance low and exhausted per funding epoch, spend caps
    reached (ids, types, times, bodies)."""
    plan, timeline, start = case
    partition = f"m{next(PARTITIONS)}"
    model = MemoryLimiter()

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            now = start
            seen: set[int] = set()
            for step in timeline:
                now += step.dt
                if isinstance(step, Grant):
                    effective = now + step.effective_in
                    grant = GrantState(
                        step.grant_id,
                        step.amount * plan.scale if step.amount <= 60_000 else step.amount,
                        step.priority,
                        effective,
                        NO_EXPIRY
                        if step.expires_in is None
                        else START - step.expires_in * DAY
                        if step.expires_in < 0
                        else effective + step.expires_in,
                        NO_ROLLOVER if step.rollover is None else step.rollover * plan.scale,
                        effective,
                    )
                    model.put_grant(partition, grant)
                    await redis.hset(f"tw:cr:{{{partition}}}", grant.grant_id, grant.encode())
                    await redis.incr(funding_key("tw:", partition))  # as credits.store does with a grant
                    continue
                ps, pe = period_of(plan.schedule, now)
                seen.add(ps)
                charges = tuple(spec.at(ps, pe, plan.scale) for spec in plan.charges)
                limit = plan.cap if step.cap_now is None else step.cap_now
                cap = SpendCap(limit * plan.scale, ps, pe, plan.hard_cap) if step.cap and limit is not None else None
                alerts = MoneyAlerts("USD", tuple(t * plan.scale for t in plan.low)) if plan.alerting else None
                # Now and then a lease's balance floor (the next balance.low threshold): refused below it.
                floor = plan.low[0] * plan.scale if plan.alerting and plan.low and step.dt % 3 == 0 else 0
                money = Money(
                    charges,
                    step.quantities,
                    ps if plan.prepaid and step.balance else None,
                    cap,
                    alerts=alerts,
                    floor=floor,
                )
                policies: list[Policy] = []
                costs: list[int] = []
                if plan.window is not None:
                    window = plan.window
                    if plan.alerting:
                        window = replace(window, alerting=levels_of(window.limit))
                    policies.append(window)
                    costs.append(step.costs[0])
                if plan.quota is not None:
                    q_alerts = levels_of(plan.quota[0]) if plan.alerting else None
                    policies.append(QuotaPolicy("q", plan.quota[0], ps, pe, hard=plan.quota[1], alerting=q_alerts))
                    costs.append(step.costs[1])
                refund = None
                if step.refund is not None:
                    units, charge_units, ago, how = step.refund
                    refund = Refund(tuple(units[: len(policies)]), now - ago, charge_units)
                    if how == "alone":
                        await model.refund(partition, policies, refund, now, money)
                        await lim.refund(partition, policies, refund, now, money)
                        refund = None
                expected = model.check(partition, policies, costs, now, refund, money)
                got = await lim.consume(partition, policies, costs, now, refund, money)
                assert got == expected, (now, step)
                assert got.money is not None
                if got.admitted and cap is not None and cap.hard and got.money.price > 0:
                    # (a price of 0 always fits, even once what was spent is past the cap: money_refusal)
                    assert got.money.spent is not None
                    assert got.money.spent + got.money.price <= cap.cap
                if got.money.balance is not None and got.admitted:
                    assert got.money.price <= got.money.balance
            stored = decode_all(await redis.hgetall(f"tw:cr:{{{partition}}}"))
            assert sorted(stored, key=lambda g: g.grant_id) == model.grants(partition)
            entries = await redis.xrange(stream_key("tw:", partition))
            events = [Event.from_stream(fields) for _, fields in entries]
            assert events == model.events(partition)
            for kind in sorted({e.type for e in events}):
                event(f"emitted {kind}")
            for ps in seen:
                for spec in plan.charges:
                    key = f"tw:cq:{{{partition}}}:{spec.name}:{ps}"
                    assert int(await redis.get(key) or 0) == model.charge_quantity(partition, spec.name, ps)
                    if await redis.exists(key):
                        assert await redis.pttl(key) > DAY
                key = f"tw:sp:{{{partition}}}:{ps}"
                assert int(await redis.get(key) or 0) == model.spent(partition, ps)
                if await redis.exists(key):
                    assert await redis.pttl(key) > DAY

    asyncio.run(main())


T0 = 4_102_444_800_000
P1 = T0 + 31 * DAY


def test_concurrent_checks_from_two_clients_burn_exactly_the_balance(valkey_fresh: ValkeyServer) -> None:
    """400 concurrent checks (two clients, coalesced) against a balance that covers exactly 50 requests of
    a graduated price crossing a tier: exactly 50 admitted, the balance burned to exactly 0, the counter
    and the spend are the model's total."""
    charge = RealTimeCharge(
        "calls", "graduated", T0, P1, tiers=(TierMicros(20, 30_000), TierMicros(None, 10_000, 5_000))
    )
    money = Money((charge,), (1,), T0, SpendCap(10**12, T0, P1))
    window = WindowPolicy.sliding("burst", 1000, 60_000)
    balance = charge.total(50)

    async def main() -> None:
        async with limiter(valkey_fresh, coalesce=True) as (a, redis), limiter(valkey_fresh, coalesce=True) as (b, _):
            await redis.hset("tw:cr:{c}", "g1", GrantState("g1", balance - 300_000, priority=1).encode())
            await redis.hset("tw:cr:{c}", "g0", GrantState("g0", 300_000, expires_ms=P1).encode())
            verdicts = await asyncio.gather(
                *((a if i % 2 else b).consume("c", [window], 1, T0 + i % 5, money=money) for i in range(400))
            )
            admitted = [v for v in verdicts if v.admitted]
            assert len(admitted) == 50
            assert sum(v.money.price for v in admitted if v.money) == balance
            refused = [v.money for v in verdicts if not v.admitted]
            assert all(m is not None and m.refused == "insufficient-credits" and m.balance == 0 for m in refused)
            grants = decode_all(await redis.hgetall("tw:cr:{c}"))
            assert sorted((g.grant_id, g.remaining) for g in grants) == [("g0", 0), ("g1", 0)]
            assert await redis.get(f"tw:cq:{{c}}:calls:{T0}") == "50"
            assert await redis.get(f"tw:sp:{{c}}:{T0}") == str(balance)
            assert (await redis.hgetall("tw:rl:{c}:burst"))["t"] == "50"

    asyncio.run(main())


def test_amounts_near_the_largest_balance_stay_exact(valkey_fresh: ValkeyServer) -> None:
    """Micro-unit sums up to 2^53 are exact in the script (a float's text would round them)."""
    charge = RealTimeCharge("big", "per_unit", T0, P1, unit=999_999_999_999_999 // 7)
    money = Money((charge,), (3,), T0, SpendCap(10**15 + 1, T0, P1))
    model = MemoryLimiter()

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            grant = GrantState("max", 10**15 - 1, expires_ms=P1, rollover_max=10**15 - 3, rolled_ms=T0 - 1)
            model.put_grant("c", grant)
            await redis.hset("tw:cr:{c}", "max", grant.encode())
            for k in range(4):
                expected = model.check("c", [], 0, T0 + k, money=money)
                assert await lim.consume("c", [], 0, T0 + k, money=money) == expected
            assert expected.money == MoneyState(
                charge.unit * 3,
                10**15 - 3 - 6 * charge.unit,
                6 * charge.unit,
                (6,),
                "insufficient-credits",
                cap=10**15 + 1,
            )
            assert decode_all(await redis.hgetall("tw:cr:{c}")) == model.grants("c")
            assert await redis.get(f"tw:sp:{{c}}:{T0}") == str(6 * charge.unit)

    asyncio.run(main())


def test_scripted_edges_match_the_model(valkey_fresh: ValkeyServer) -> None:
    """Edges a random timeline rarely reaches, through the script and the model: a rollover applies once per
    period even after a refund lifts the grant above its cap; a refund when every grant has expired goes to
    the one expiring last (ties by grant id, in byte order: "0future" < "B" < "a"); a grant that is never
    live is neither burned nor (while another ties) a refund target; a price of 0 fits a cap of 0."""
    charge = RealTimeCharge("calls", "per_unit", T0, P1, unit=1_000)
    nxt = RealTimeCharge("calls", "per_unit", P1, P1 + 30 * DAY, unit=1_000)
    model = MemoryLimiter()
    grants = [
        GrantState("roll", 5_000, effective_ms=T0, expires_ms=P1 + DAY, rollover_max=1_200, rolled_ms=T0),
        GrantState("B", 1_000, priority=1, expires_ms=P1 + 2 * DAY),
        GrantState("a", 1_000, priority=1, expires_ms=P1 + 2 * DAY),
        GrantState("0future", 50_000, effective_ms=P1 + 40 * DAY, expires_ms=P1 + 2 * DAY),
    ]

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):

            async def both(now: int, money: Money, refund: Refund | None = None) -> None:
                expected = model.check("c", [], 0, now, refund, money)
                assert await lim.consume("c", [], 0, now, refund, money) == expected
                stored = decode_all(await redis.hgetall("tw:cr:{c}"))
                assert sorted(stored, key=lambda g: g.grant_id) == model.grants("c")

            def left() -> list[tuple[str, int]]:
                return [(g.grant_id, g.remaining) for g in model.grants("c")]

            for grant in grants:
                model.put_grant("c", grant)
                await redis.hset("tw:cr:{c}", grant.grant_id, grant.encode())
            await both(T0 + 1, Money((charge,), (2,), T0))
            assert left() == [("0future", 50_000), ("B", 1_000), ("a", 1_000), ("roll", 3_000)]
            await both(P1 + 1, Money((nxt,), (2,), P1))  # rolled to 1,200; 2,000 burned: 1,200 + 800 of "B"
            assert left() == [("0future", 50_000), ("B", 200), ("a", 1_000), ("roll", 0)]
            await both(P1 + 2, Money((nxt,), (0,), P1), Refund((), P1, (2,)))  # all back to "roll"
            await both(P1 + 3, Money((nxt,), (0,), P1), Refund((), P1, (0,)))
            assert left() == [("0future", 50_000), ("B", 200), ("a", 1_000), ("roll", 2_000)]
            await both(P1 + 4, Money((nxt,), (1,), P1))  # not capped at 1,200 a second time
            assert left() == [("0future", 50_000), ("B", 200), ("a", 1_000), ("roll", 1_000)]
            await both(P1 + 5, Money((nxt,), (2,), P1))
            assert left() == [("0future", 50_000), ("B", 0), ("a", 200), ("roll", 0)]
            await both(P1 + 3 * DAY, Money((nxt,), (0,), P1), Refund((), P1, (2,)))  # all expired: to "a"
            await both(P1 + 3 * DAY, Money((nxt,), (1,), P1, SpendCap(0, P1, P1 + 30 * DAY)))
            await both(P1 + 3 * DAY, Money((nxt,), (0,), P1, SpendCap(0, P1, P1 + 30 * DAY)))
            assert left() == [("0future", 50_000), ("B", 0), ("a", 2_200), ("roll", 0)]

    asyncio.run(main())


@dataclass(frozen=True)
class Reserve:
    """A check whose last charge's quantity is a reserve, keyed by a new row id."""

    check: Check


@dataclass(frozen=True)
class Settle:
    """Settle the ``which``-th reservation made so far (modulo their number; again: a duplicate) with
    ``actual`` quantities (None: released, 0 of each)."""

    dt: int
    which: int
    actual: int | None


@st.composite
def reservation_timelines(draw: st.DrawFn) -> tuple[Plan, list[Check | Grant | Reserve | Settle], int, int]:
    plan = draw(plans())
    if draw(st.integers(0, 3)):
        plan = replace(plan, prepaid=True)
    if draw(st.integers(0, 3)):
        plan = replace(plan, alerting=True)
    base = draw(steps(plan))[:15]
    checks = [s for s in base if isinstance(s, Check)]
    if not checks:
        checks = [Check(0, (0, 0), (1,) * len(plan.charges), None, True, False, None)]
    extra = draw(
        st.lists(
            st.one_of(
                st.builds(Reserve, st.sampled_from(checks)),
                st.builds(Reserve, st.sampled_from(checks)),
                st.builds(
                    Settle,
                    DTS,
                    st.integers(0, 50),
                    st.one_of(st.none(), st.integers(0, 4), st.integers(0, 60)),
                ),
            ),
            max_size=30,
        )
    )
    timeline: list[Check | Grant | Reserve | Settle] = [*base]
    for item in extra:
        timeline.insert(draw(st.integers(0, len(timeline))), item)
    grant = Grant(0, "g0", draw(st.sampled_from([300, 5_000, 60_000])), 1, 0, None, None)
    overrun = draw(st.sampled_from([0, 0, 7, 5_000, 10**9]))
    return plan, [grant, *timeline], START + draw(st.integers(0, 5 * DAY)), overrun


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reservation_timelines())
def test_reservations_in_the_script_match_the_model_on_random_timelines(
    valkey_fresh: ValkeyServer, case: tuple[Plan, list[Check | Grant | Reserve | Settle], int, int]
) -> None:
    """Differential test of reservations: the random timelines above with checks that reserve (their last
    charge's quantity is a reserve, keyed by a row id), settlements with actual quantities below, equal to
    and above the reserve (an overrun bounded by the plan's allowance, the rest forgiven, a negative
    balance as the debt record), duplicate settlements (answered from the marker, nothing changes),
    releases (0 of each) after days, and settlements of unknown row ids: identical verdicts and
    settlements from the scripts and the model, and identical grants, counters, spend and reservations
    left in Valkey. With money alerts, the script's outbox holds exactly the model's events, and after
    every settlement whose overrun burned took the balance below a ``balance.low`` threshold, to 0 or
    below, or the spend past the cap, the outbox holds that event (its id in the funding epoch; a
    settlement, its admission or an earlier one may have appended it)."""
    plan, timeline, start, overrun = case
    partition = f"r{next(PARTITIONS)}"
    model = MemoryLimiter()

    async def main() -> None:
        async with limiter(valkey_fresh) as (lim, redis):
            now = start
            seen: set[int] = set()
            rows: list[str] = []
            reserved: dict[str, tuple[bool, SpendCap | None]] = {}  # row -> (prepaid, cap) of its check
            low = tuple(t * plan.scale for t in plan.low)
            alerts = MoneyAlerts("USD", low) if plan.alerting else None

            async def outbox() -> list[Event]:
                entries = await redis.xrange(stream_key("tw:", partition))
                return [Event.from_stream(fields) for _, fields in entries]

            for step in timeline:
                if isinstance(step, Settle):
                    now += step.dt
                    row = rows[step.which % len(rows)] if rows else "unknown-row"
                    actual = (0,) if step.actual is None else (step.actual,)
                    prepaid, cap = reserved.get(row, (False, None))
                    before = live_balance(model.grants(partition), now)
                    spent = model.spent(partition, cap.period_start_ms) if cap is not None else 0
                    expected = model.settle_now(partition, row, actual, now)
                    got = await lim.settle(partition, row, actual, now)
                    assert got == expected, (now, step)
                    event(
                        f"settle: {got.status}{', overrun' if got.burned else ''}{', forgiven' if got.forgiven else ''}"
                    )
                    if alerts is None or got.status != "settled" or got.burned <= 0:
                        continue
                    # One reserved charge: an overrun gives nothing back, so these are the amounts it burned from.
                    assert got.back == 0
                    epoch = int(await redis.get(funding_key("tw:", partition)) or 0)
                    owed: list[str] = []
                    if prepaid:
                        after = before - got.burned
                        owed += [event_id("balance.low", partition, t, epoch) for t in low if before >= t > after]
                        if after <= 0 < before:
                            owed.append(event_id("balance.exhausted", partition, epoch))
                    if cap is not None and spent + got.burned > cap.cap:
                        owed.append(event_id("spend_cap.reached", partition, cap.period_start_ms, cap.cap))
                    ids = {e.id for e in await outbox()}
                    assert set(owed) <= ids, (now, step, owed)
                    if owed:
                        event("settle: an overrun crossed a money alert")
                    continue
                if isinstance(step, Grant):
                    now += step.dt
                    effective = now + step.effective_in
                    grant = GrantState(
                        step.grant_id,
                        step.amount * plan.scale if step.amount <= 60_000 else step.amount,
                        step.priority,
                        effective,
                        NO_EXPIRY if step.expires_in is None or step.expires_in < 0 else effective + step.expires_in,
                        NO_ROLLOVER if step.rollover is None else step.rollover * plan.scale,
                        effective,
                    )
                    model.put_grant(partition, grant)
                    await redis.hset(f"tw:cr:{{{partition}}}", grant.grant_id, grant.encode())
                    await redis.incr(funding_key("tw:", partition))  # as credits.store does with a grant
                    continue
                reserve = isinstance(step, Reserve)
                check = step.check if isinstance(step, Reserve) else step
                now += check.dt
                ps, pe = period_of(plan.schedule, now)
                seen.add(ps)
                charges = tuple(spec.at(ps, pe, plan.scale) for spec in plan.charges)
                cap = SpendCap(plan.cap * plan.scale, ps, pe, plan.hard_cap) if check.cap and plan.cap else None
                balance = ps if plan.prepaid and check.balance else None
                money = Money(charges, check.quantities, balance, cap, alerts=alerts)
                if reserve:
                    marks = tuple(i == len(charges) - 1 for i in range(len(charges)))
                    row = f"row-{len(rows)}"
                    money = Money(charges, check.quantities, balance, cap, marks, overrun, row, alerts)
                policies: list[Policy] = []
                costs: list[int] = []
                if plan.window is not None:
                    policies.append(plan.window)
                    costs.append(check.costs[0])
                expected_verdict = model.check(partition, policies, costs, now, None, money)
                got_verdict = await lim.consume(partition, policies, costs, now, None, money)
                assert got_verdict == expected_verdict, (now, step)
                if reserve and got_verdict.admitted:
                    rows.append(money.row_id)
                    reserved[money.row_id] = (balance is not None, cap)
                if reserve:
                    event(f"reserve: admitted {got_verdict.admitted}")
            stored = decode_all(await redis.hgetall(f"tw:cr:{{{partition}}}"))
            assert sorted(stored, key=lambda g: g.grant_id) == model.grants(partition)
            if any(g.grant_id == "debt" and g.remaining < 0 for g in stored):
                event("a debt")
            assert await lim.reservations(partition) == model.reservations(partition)
            events = await outbox()
            assert events == model.events(partition)
            for kind in sorted({e.type for e in events}):
                event(f"emitted {kind}")
            for ps in seen:
                for spec in plan.charges:
                    key = f"tw:cq:{{{partition}}}:{spec.name}:{ps}"
                    assert int(await redis.get(key) or 0) == model.charge_quantity(partition, spec.name, ps)
                key = f"tw:sp:{{{partition}}}:{ps}"
                assert int(await redis.get(key) or 0) == model.spent(partition, ps)

    asyncio.run(main())
