"""The answer to one check, built the same way from the counters of any backend.

A backend (the in-memory model or the Lua script) reports, per policy, three numbers: the counted
total *before* this request, the milliseconds until one more unit fits (``reset_ms``, from the state
after the request if it was admitted) and, for a policy that refused, the milliseconds until this
request's cost fits (``retry_ms``). ``NEVER`` (-1) means no amount of waiting helps (cost > limit).
Everything else in the ``Verdict`` is derived here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tollway.ratelimit.money import MoneyState
from tollway.ratelimit.policies import Policy, WindowPolicy

NEVER = -1


class Counted(NamedTuple):
    """One policy's raw result from a backend."""

    total: int
    reset_ms: int
    retry_ms: int = 0


class PolicyState(NamedTuple):
    """One policy after the check (what the RateLimit headers report).

    ``window_s``: the window width (quota: the period length), whole seconds rounded up.
    ``used``: the counted total after this request (before it, if the request was refused).
    ``remaining``: ``limit - used``, floored at 0. ``reset_s``/``reset_ms``: until one more unit fits
    (0 if one fits now); for a quota always until the period ends; for a window whose limit is 0, the
    window width. ``exceeded``: this request did (soft, shadow) or would (refused) take it over its limit.
    """

    name: str
    limit: int
    window_s: int
    remaining: int
    reset_s: int
    exceeded: bool
    used: int
    reset_ms: int


class Verdict(NamedTuple):
    """``violated``: the enforced policies that refused (the refusal reasons, in policy order).
    ``retry_after_s``/``retry_after_ms``: refusal only (else 0): until this request's cost fits in every
    violated policy, at least 1 s. ``unsatisfiable``: violated policies whose limit is below the cost,
    so waiting never helps; their retry counts the window width (quota: the period end).
    ``at_ms``: the limiter's time of the decision, the one the window buckets were counted at (Redis: the
    server's ``TIME``, the clock every process shares; a lease: that time carried forward), in epoch ms.
    ``money``: the money side of a check that had one (``ratelimit.money``), else None. A check refused
    for money alone (``money.refused``; no policy violated) has no retry time (0): waiting does not
    make a balance cover a price; a top-up or the next period does."""

    admitted: bool
    states: tuple[PolicyState, ...]
    violated: tuple[str, ...] = ()
    soft_exceeded: tuple[str, ...] = ()
    shadow_exceeded: tuple[str, ...] = ()
    retry_after_s: int = 0
    retry_after_ms: int = 0
    unsatisfiable: tuple[str, ...] = ()
    at_ms: int = 0
    money: MoneyState | None = None


def _ceil_s(ms: int) -> int:
    return -(-ms // 1000)


def _never_ms(policy: Policy, now_ms: int) -> int:
    if isinstance(policy, WindowPolicy):
        return policy.window_ms
    return max(policy.period_end_ms - now_ms, 0)


def build_verdict(
    policies: Sequence[Policy],
    costs: Sequence[int],
    now_ms: int,
    admitted: bool,
    counted: Sequence[Counted],
    at_ms: int | None = None,
    money: MoneyState | None = None,
) -> Verdict:
    """Derive the full verdict; raises ValueError if the backend's answer is inconsistent (admitted iff no
    enforced policy is violated and ``money`` refused nothing). ``now_ms``: the caller's clock (quota
    periods); ``at_ms``: the windows' (default ``now_ms``)."""
    if len(counted) != len(policies):
        raise ValueError(f"expected {len(policies)} policy results, got {len(counted)}")
    states: list[PolicyState] = []
    violated: list[str] = []
    soft: list[str] = []
    shadow: list[str] = []
    unsatisfiable: list[str] = []
    retry_ms = 0
    for policy, cost, raw in zip(policies, costs, counted, strict=True):
        exceeded = cost > 0 and raw.total + cost > policy.limit
        used = raw.total + cost if admitted else raw.total
        reset_ms = _never_ms(policy, now_ms) if raw.reset_ms == NEVER else raw.reset_ms
        states.append(
            PolicyState(
                name=policy.name,
                limit=policy.limit,
                window_s=policy.window_s,
                remaining=max(policy.limit - used, 0),
                reset_s=_ceil_s(reset_ms),
                exceeded=exceeded,
                used=used,
                reset_ms=reset_ms,
            )
        )
        if not exceeded:
            continue
        if policy.shadow:
            shadow.append(policy.name)
        elif not policy.hard:
            soft.append(policy.name)
        else:
            violated.append(policy.name)
            if raw.retry_ms == NEVER:
                unsatisfiable.append(policy.name)
            retry_ms = max(retry_ms, _never_ms(policy, now_ms) if raw.retry_ms == NEVER else raw.retry_ms)
    refused = money is not None and money.refused is not None
    if admitted == (bool(violated) or refused):
        raise ValueError(f"inconsistent verdict: admitted={admitted} with violated={violated}, money={money}")
    return Verdict(
        admitted=admitted,
        states=tuple(states),
        violated=tuple(violated),
        soft_exceeded=tuple(soft),
        shadow_exceeded=tuple(shadow),
        retry_after_s=0 if admitted or not violated else max(1, _ceil_s(retry_ms)),
        retry_after_ms=0 if admitted else retry_ms,
        unsatisfiable=tuple(unsatisfiable),
        at_ms=now_ms if at_ms is None else at_ms,
        money=money,
    )
