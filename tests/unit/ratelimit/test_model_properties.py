"""Properties of the reference limiter (``MemoryLimiter``), over random timelines.

The Lua script is held to the same semantics by the shared behaviour suite (tests/support/limiter_suite.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.ratelimit import MemoryLimiter, Policy, QuotaPolicy, Verdict, WindowPolicy

WIDTHS = [10, 30, 100, 250, 1000, 3000]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def window_policies(draw: st.DrawFn, name: str) -> WindowPolicy:
    width = draw(st.sampled_from(WIDTHS))
    buckets = draw(st.sampled_from(divisors(width)))
    mode = draw(st.sampled_from(["hard", "hard", "soft", "shadow"]))
    return WindowPolicy(name, draw(st.integers(0, 12)), width, buckets, hard=mode != "soft", shadow=mode == "shadow")


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    count = draw(st.integers(1, 3))
    policies: list[Policy] = [draw(window_policies(f"w{i}")) for i in range(count)]
    if draw(st.booleans()):
        mode = draw(st.sampled_from(["hard", "soft", "shadow"]))
        policies.append(
            QuotaPolicy("q", draw(st.integers(0, 60)), 0, 10**9, hard=mode != "soft", shadow=mode == "shadow")
        )
    return policies


@dataclass
class Step:
    dt: int
    costs: tuple[int, ...]


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[Policy], int, list[Step]]:
    policies = draw(policy_sets())
    start = draw(st.integers(0, 10_000))
    steps = draw(
        st.lists(
            st.builds(
                Step,
                st.one_of(st.just(0), st.integers(0, 40), st.integers(0, 3500)),
                st.tuples(*[st.integers(0, 4) for _ in policies]),
            ),
            max_size=60,
        )
    )
    return policies, start, steps


def admitted_log(
    policies: list[Policy], start: int, steps: list[Step], lim: MemoryLimiter
) -> tuple[list[tuple[int, tuple[int, ...]]], list[tuple[int, tuple[int, ...], Verdict]]]:
    now = start
    admitted: list[tuple[int, tuple[int, ...]]] = []
    checks: list[tuple[int, tuple[int, ...], Verdict]] = []
    for step in steps:
        now += step.dt
        before = lim.snapshot()
        verdict = lim.check("cust", policies, step.costs, now)
        checks.append((now, step.costs, verdict))
        if verdict.admitted:
            admitted.append((now, step.costs))
        else:
            # (2) all or nothing: a refused check leaves every counter exactly as it was.
            assert lim.snapshot() == before
            assert verdict.violated
    return admitted, checks


def log_sum(log: list[tuple[int, tuple[int, ...]]], index: int, low_exclusive: int, high: int) -> int:
    return sum(costs[index] for t, costs in log if low_exclusive < t <= high)


@settings(max_examples=300, deadline=None)
@given(timelines())
def test_never_admits_beyond_an_enforced_limit_in_any_window(case: tuple[list[Policy], int, list[Step]]) -> None:
    policies, start, steps = case
    log, _ = admitted_log(policies, start, steps, MemoryLimiter())
    for i, policy in enumerate(policies):
        if not policy.enforced:
            continue
        if isinstance(policy, WindowPolicy):
            # The heaviest window of width W ends at an admission: check every one of them exactly.
            for t, _ in log:
                assert log_sum(log, i, t - policy.window_ms, t) <= policy.limit
        else:
            assert sum(costs[i] for _, costs in log) <= policy.limit


@settings(max_examples=300, deadline=None)
@given(timelines(), st.integers(0, 5000))
def test_counted_total_is_within_the_conservative_bound(case: tuple[list[Policy], int, list[Step]], later: int) -> None:
    """sliding log over W  <=  counted  <=  sliding log over W + g: every admitted unit is counted while it
    is in the window, and leaves at most one bucket width late. Quotas count every admitted unit."""
    policies, start, steps = case
    lim = MemoryLimiter()
    log, _ = admitted_log(policies, start, steps, lim)
    end = start + sum(s.dt for s in steps) + later
    for i, policy in enumerate(policies):
        counted = lim.counted("cust", policy, end)
        if isinstance(policy, WindowPolicy):
            assert log_sum(log, i, end - policy.window_ms, end) <= counted
            assert counted <= log_sum(log, i, end - policy.window_ms - policy.bucket_ms, end)
        else:
            assert counted == sum(costs[i] for _, costs in log)


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_soft_and_shadow_never_refuse_and_count_every_admitted_request(
    case: tuple[list[Policy], int, list[Step]],
) -> None:
    policies, start, steps = case
    relaxed: list[Policy] = [
        WindowPolicy(p.name, p.limit, p.window_ms, p.buckets, hard=False)
        if isinstance(p, WindowPolicy)
        else QuotaPolicy(p.name, p.limit, p.period_start_ms, p.period_end_ms, shadow=True)
        for p in policies
    ]
    lim = MemoryLimiter()
    log, checks = admitted_log(relaxed, start, steps, lim)
    assert all(v.admitted for _, _, v in checks)
    assert len(log) == len(steps)
    # Counted = everything admitted in the window (nothing dropped because it was over the limit).
    for k, (now, costs, verdict) in enumerate(checks):
        for i, (policy, state) in enumerate(zip(relaxed, verdict.states, strict=True)):
            if isinstance(policy, WindowPolicy):
                assert state.used >= log_sum(log[: k + 1], i, now - policy.window_ms, now)
            else:
                assert state.used == sum(c[i] for _, c in log[: k + 1])
            if state.exceeded:
                names = verdict.soft_exceeded if not policy.shadow else verdict.shadow_exceeded
                assert policy.name in names
            assert state.exceeded == (costs[i] > 0 and state.used > policy.limit)


@settings(max_examples=300, deadline=None)
@given(timelines())
def test_reset_and_retry_are_exact(case: tuple[list[Policy], int, list[Step]]) -> None:
    """``reset_ms``: one more unit fits exactly then and not 1 ms earlier; ``retry_after_ms``: this request fits
    in every violated window exactly then and not 1 ms earlier (nothing else consumed meanwhile)."""
    policies, start, steps = case
    lim = MemoryLimiter()
    now = start
    for step in steps:
        now += step.dt
        verdict = lim.check("cust", policies, step.costs, now)
        for policy, state in zip(policies, verdict.states, strict=True):
            if isinstance(policy, WindowPolicy) and policy.limit > 0 and state.reset_ms > 0:
                assert lim.counted("cust", policy, now + state.reset_ms) + 1 <= policy.limit
                assert lim.counted("cust", policy, now + state.reset_ms - 1) + 1 > policy.limit
        if verdict.admitted:
            continue
        assert verdict.retry_after_s >= 1
        violated = [(p, c) for p, c in zip(policies, step.costs, strict=True) if p.name in verdict.violated]
        if verdict.unsatisfiable:
            assert all(c > p.limit for p, c in violated if p.name in verdict.unsatisfiable)
            continue
        if not all(isinstance(p, WindowPolicy) for p, _ in violated):
            continue
        at = now + verdict.retry_after_ms
        assert all(lim.counted("cust", p, at) + c <= p.limit for p, c in violated)
        assert any(lim.counted("cust", p, at - 1) + c > p.limit for p, c in violated)


@given(st.integers(1, 50), st.sampled_from(WIDTHS), st.integers(0, 10**12))
def test_a_lone_policy_admits_exactly_its_limit_at_one_instant(limit: int, width: int, now: int) -> None:
    lim = MemoryLimiter()
    policy = WindowPolicy.sliding("w", limit, width) if width % 10 == 0 else WindowPolicy("w", limit, width, width)
    admitted = sum(lim.check("cust", [policy], 1, now).admitted for _ in range(limit + 5))
    assert admitted == limit


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_full_capacity_is_back_after_a_window_and_a_bucket_of_idle_time(
    case: tuple[list[Policy], int, list[Step]],
) -> None:
    policies, start, steps = case
    lim = MemoryLimiter()
    admitted_log(policies, start, steps, lim)
    last = start + sum(s.dt for s in steps)
    for policy in policies:
        if isinstance(policy, WindowPolicy):
            at = last + policy.window_ms + policy.bucket_ms
            assert lim.counted("cust", policy, at) == 0
            assert lim.check("cust", [policy], policy.limit, at).admitted
