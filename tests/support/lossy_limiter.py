"""A limiter whose answers get lost: the behaviour suite of money leases under timeouts
(tests/unit/ratelimit/test_money_lease_records.py on the model, tests/integration/… on Valkey).

Each call of a capacity lease (a take or a refund) has its fate drawn from a script: ``"ok"``,
``"unsent"`` (the call never reaches the store, as when a timeout fires before the batch is written) or
``"lost"`` (the call runs, its answer is lost, as when a timeout fires after Redis ran the script). Both
raise :class:`LimiterUnavailable`, as the real limiter does: the caller cannot tell them apart.

A single check (no lease) always answers: its lost answer is not covered yet (docs/credits.md, failure
analysis: a request refused with 503 whose price Redis burned)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from tests.unit.ratelimit.test_leases import Request
from tollway.ratelimit import LimiterUnavailable, Policy, Verdict
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.money import Money
from tollway.ratelimit.refunds import Refund

FATES = ("ok", "unsent", "lost")


class LossyLimiter:
    def __init__(self, inner: Any, fates: Iterator[str]) -> None:
        self._inner = inner
        self._fates = fates
        self.lost = 0

    def _fate(self) -> str:
        return next(self._fates, "ok")

    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        leased = (money is not None and bool(money.lease)) or (refund is not None and bool(refund.lease))
        fate = self._fate() if leased else "ok"
        if fate == "unsent":
            raise LimiterUnavailable("no answer (never sent)")
        verdict: Verdict = await self._inner.consume(partition, policies, cost, now_ms, refund, money)
        if fate == "lost":
            self.lost += 1
            raise LimiterUnavailable("no answer (the script ran)")
        return verdict

    async def refund(
        self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int, money: Money | None = None
    ) -> None:
        fate = self._fate()
        if fate == "unsent":
            raise LimiterUnavailable("no answer (never sent)")
        await self._inner.refund(partition, policies, refund, now_ms, money)
        if fate == "lost":
            self.lost += 1
            raise LimiterUnavailable("no answer (the script ran)")


async def run_lossy(
    limiters: Sequence[LeasingLimiter],
    requests: Sequence[Request],
    policies: Sequence[Policy],
    money: Money,
) -> int:
    """Each request through its process's leasing limiter (sweeping every 50 ms); the number admitted. A
    request whose limiter call failed is refused (the plan fails closed)."""
    admitted = 0
    next_sweep = requests[0].at_ms if requests else 0
    for request in requests:
        if request.at_ms >= next_sweep:
            for limiter in limiters:
                await limiter.sweep(request.at_ms)
            next_sweep = request.at_ms + 50
        limiter = limiters[request.process]
        verdict = limiter.try_now("check", request.at_ms)
        if verdict is None:
            try:
                verdict = await limiter.consume(
                    "check", "c", policies, tuple(1 for _ in policies), request.at_ms, None, money
                )
            except LimiterUnavailable:
                continue
        admitted += verdict.admitted
    return admitted


async def settle_all(limiters: Sequence[LeasingLimiter], now_ms: int) -> None:
    """Drain every process until no refund is owed (the store answers again)."""
    for limiter in limiters:
        await limiter.drain(now_ms)
        for _ in range(1000):
            if not limiter.owed:
                break
            await limiter.sweep(now_ms)
            await asyncio.sleep(0)
        assert not limiter.owed, "every owed refund was sent"
