"""The reference limiter: the exact semantics of ``consume.lua``, in Python, without I/O.

Sliding window of width W over N buckets of width g = W / N. A window counter stores
``bucket index -> units``; at ``now`` the bucket is ``cur = now // g`` and the counted total is the sum of
the buckets with index in [cur - N, cur + N] (the N full buckets, the partial oldest one, and — only
after a clock step back or skew between processes — a few newer ones, counted to stay conservative).
Buckets outside that range are stale: dropped on the next write. A quota is one counter per period.

A check admits iff every enforced policy fits (``total + cost <= limit``); then it adds its cost to
every policy, soft and shadow ones included; otherwise it changes nothing. See
docs/decisions/0003-sliding-window-limits.md for why this never over-admits.

Two clocks, as in the script: window buckets are counted at the limiter's own time (Redis: the server's
``TIME``; here: ``server_ms`` if given, else the caller's ``now_ms``), reported as ``Verdict.at_ms``;
quota periods at the caller's ``now_ms`` (the caller chose the period on that clock).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from tollway.clock import Clock
from tollway.ratelimit.keys import checked_costs, policy_key
from tollway.ratelimit.policies import Policy, QuotaPolicy, WindowPolicy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.verdict import NEVER, Counted, Verdict, build_verdict


class Limiter(Protocol):
    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
    ) -> Verdict:
        """Check and (if admitted) consume ``cost`` on every policy, all or nothing.

        ``cost``: one int for every policy, or one per policy. ``now_ms``: Unix time in ms from the
        caller's injected clock: the time of quota periods; window buckets are counted at the limiter's
        own time (the Redis server's clock), returned as ``Verdict.at_ms``. ``refund``: units given back
        first, in the same atomic step (see :meth:`refund`). Raises ``LimiterUnavailable`` if the
        counters cannot be reached, and ValueError for an invalid check (bad partition, duplicate names,
        negative cost).
        """
        ...

    async def refund(self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int) -> None:
        """Give back ``refund.units`` (one count per policy) consumed at ``refund.taken_ms`` (the limiter's
        time they were counted at, ``Verdict.at_ms``) and not used:
        to the bucket of that time while it is still counted (a bucket that left the window is not
        counted any more, so nothing is owed), or to the quota's period counter. Never below zero.
        Raises ``LimiterUnavailable`` if the counters cannot be reached (the units then stay consumed:
        capacity wasted, never a limit exceeded)."""
        ...


def epoch_ms(clock: Clock) -> int:
    """``now_ms`` for ``consume`` from an injected clock."""
    return clock.now_ms()


def live_range(policy: WindowPolicy, now_ms: int) -> tuple[int, int, int]:
    """(current bucket, lowest counted, highest counted)."""
    cur = now_ms // policy.bucket_ms
    return cur, cur - policy.buckets, cur + policy.buckets


def free_ms(buckets: Mapping[int, int], total: int, need: int, limit: int, policy: WindowPolicy, now_ms: int) -> int:
    """Milliseconds until ``need`` more units fit under ``limit`` given the counted ``buckets`` (summing
    to ``total``): the oldest counted buckets leave the window one after another, bucket b at
    (b + N + 1) * g. 0 if they fit now; NEVER if ``need > limit``."""
    if total + need <= limit:
        return 0
    if need > limit:
        return NEVER
    freed = 0
    leaves_at = now_ms
    for index in sorted(buckets):
        freed += buckets[index]
        leaves_at = (index + policy.buckets + 1) * policy.bucket_ms
        if total - freed + need <= limit:
            break
    return leaves_at - now_ms


def quota_ms(policy: QuotaPolicy, now_ms: int) -> int:
    return max(policy.period_end_ms - now_ms, 0)


class MemoryLimiter:
    """In-process limiter for tests and single-process use. Not thread-safe; no I/O, so each check is
    atomic under asyncio. Never expires counters by itself beyond pruning stale buckets on write.

    ``server_ms``: the shared clock windows are counted on (the model of Redis's ``TIME``, for tests of
    several processes with skewed clocks); None: the caller's ``now_ms``."""

    def __init__(self, prefix: str = "tw:", *, server_ms: Callable[[], int] | None = None) -> None:
        self._prefix = prefix
        self._server_ms = server_ms
        self._windows: dict[str, dict[int, int]] = {}
        self._quotas: dict[str, int] = {}

    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
    ) -> Verdict:
        return self.check(partition, policies, cost, now_ms, refund)

    def check(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
    ) -> Verdict:
        """``consume`` without the coroutine (the model is synchronous)."""
        costs = checked_costs(partition, policies, cost)
        if refund is not None:
            refund.check(policies)
            self.give_back(partition, policies, refund)
        at_ms = now_ms if self._server_ms is None else self._server_ms()
        keys = [policy_key(self._prefix, partition, p) for p in policies]
        totals: list[int] = []
        lives: list[dict[int, int]] = []
        admitted = True
        for policy, key, c in zip(policies, keys, costs, strict=True):
            if isinstance(policy, WindowPolicy):
                _, lo, hi = live_range(policy, at_ms)
                live = {b: n for b, n in self._windows.get(key, {}).items() if lo <= b <= hi}
                total = sum(live.values())
            else:
                live = {}
                total = self._quotas.get(key, 0)
            lives.append(live)
            totals.append(total)
            if policy.enforced and c > 0 and total + c > policy.limit:
                admitted = False
        if admitted:
            for policy, key, c, live in zip(policies, keys, costs, lives, strict=True):
                if c == 0:
                    continue
                if isinstance(policy, WindowPolicy):
                    cur = at_ms // policy.bucket_ms
                    live[cur] = live.get(cur, 0) + c
                    self._windows[key] = dict(live)  # the stale buckets are dropped by the write
                else:
                    self._quotas[key] = self._quotas.get(key, 0) + c
        counted: list[Counted] = []
        for policy, c, total, live in zip(policies, costs, totals, lives, strict=True):
            after = total + c if admitted else total
            if isinstance(policy, WindowPolicy):
                reset = free_ms(live, after, 1, policy.limit, policy, at_ms)
            else:
                reset = quota_ms(policy, now_ms)
            retry = 0
            if not admitted and policy.enforced and c > 0 and total + c > policy.limit:
                if c > policy.limit:
                    retry = NEVER
                elif isinstance(policy, WindowPolicy):
                    retry = free_ms(live, total, c, policy.limit, policy, at_ms)
                else:
                    retry = quota_ms(policy, now_ms)
            counted.append(Counted(total, reset, retry))
        return build_verdict(policies, costs, now_ms, admitted, counted, at_ms)

    async def refund(self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int) -> None:
        refund.check(policies)
        self.give_back(partition, policies, refund)

    def give_back(self, partition: str, policies: Sequence[Policy], refund: Refund) -> None:
        """``refund`` without the coroutine."""
        for policy, count in zip(policies, refund.units, strict=True):
            if count <= 0:
                continue
            key = policy_key(self._prefix, partition, policy)
            if isinstance(policy, WindowPolicy):
                buckets = self._windows.get(key, {})
                index = refund.taken_ms // policy.bucket_ms
                if index in buckets:
                    buckets[index] = max(buckets[index] - count, 0)
            elif key in self._quotas:
                self._quotas[key] = max(self._quotas[key] - count, 0)

    def counted(self, partition: str, policy: Policy, now_ms: int) -> int:
        """The total ``policy`` would count for ``partition`` at ``now_ms`` (tests and debugging)."""
        key = policy_key(self._prefix, partition, policy)
        if isinstance(policy, QuotaPolicy):
            return self._quotas.get(key, 0)
        _, lo, hi = live_range(policy, now_ms)
        return sum(n for b, n in self._windows.get(key, {}).items() if lo <= b <= hi)

    def snapshot(self) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
        """A deep copy of every counter (tests: a refused check must leave it unchanged)."""
        return copy.deepcopy(self._windows), dict(self._quotas)
