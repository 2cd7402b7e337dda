"""A limiter that hands out capacity leases (``leases.py``): the checks of a busy customer are answered in
process from a lease, most of them synchronously; the rest go to the wrapped ``Limiter`` (Redis).

* :meth:`LeasingLimiter.try_now` — the synchronous path: a verdict from the check's lease, or None.
* :meth:`LeasingLimiter.consume` — the async path: one request alone, or a new lease when demand and
  room allow it, with the previous lease's unused units given back in the same atomic script call.
  Concurrent requests of one check wait for a lease already being taken instead of each asking Redis.
* :meth:`LeasingLimiter.sweep` — refunds the leases that ended with units left and no request came to
  take their place (run it in the background every lease period; :meth:`drain` at shutdown).

Money is never lost to a lost answer. A lease that carries money has a record in Redis (``Money.lease``,
``ratelimit.money``), and its refund closes the record, so a refund is applied at most once however
often it is sent. A refund whose call failed (a timeout: it may or may not have run) is kept and sent
again by each sweep until an answer comes; a lease take whose answer was lost (the request was answered
by the outage policy) is closed by the sweep with its whole size: given back if Redis counted it, nothing
if not. Leases without money keep the simpler rule: a failed refund leaves its units consumed (capacity
wasted, never a limit exceeded).

With ``max_lease_ms = 0`` every check goes to the wrapped limiter, as before leases.

Clocks: the wrapped limiter counts windows on its own clock (Redis's) and says when (``Verdict.at_ms``).
Each lease ends by this process's clock at ``now_ms + (bucket end - at_ms)`` (``lease_expiry``), so skew
between this host and Redis never lets a lease outlive its bucket; ``clock_offset_ms``, the last
difference seen between the two clocks, only sizes the next lease.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from tollway.ratelimit.errors import LimiterUnavailable
from tollway.ratelimit.leases import (
    DEFAULT_MAX_LEASE_MS,
    DEFAULT_MAX_SIZE,
    Lease,
    LeaseBook,
    lease_expiry,
    lease_money,
    lease_policies,
)
from tollway.ratelimit.model import Limiter
from tollway.ratelimit.money import Money
from tollway.ratelimit.policies import Policy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.verdict import Verdict

log = logging.getLogger(__name__)

MAX_OWED: Final = 100_000
"""Refunds of money leases kept for another try while Redis cannot be reached (beyond: dropped, logged)."""


@dataclass(frozen=True, slots=True)
class Owed:
    """A refund to send (again) for check ``key``."""

    key: Hashable
    partition: str
    policies: tuple[Policy, ...]
    refund: Refund
    money: Money | None

    @classmethod
    def of(cls, key: Hashable, lease: Lease) -> Owed:
        return cls(key, lease.partition, lease.policies, lease.refund(), lease.money)


class LeasingLimiter:
    def __init__(
        self, limiter: Limiter, *, max_lease_ms: int = DEFAULT_MAX_LEASE_MS, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self._limiter = limiter
        self._book = LeaseBook(max_lease_ms=max_lease_ms, max_size=max_size)
        self._taking: dict[Hashable, asyncio.Future[None]] = {}
        self._alone: dict[Hashable, list[asyncio.Future[None]]] = {}
        """Per check: one future per request in flight to the limiter alone (not with a lease)."""
        self.refunds_failed = 0
        self._owed: list[Owed] = []
        """Refunds of money leases whose call failed: sent again by the next sweep (idempotent)."""
        self._records = itertools.count(1)
        self._process = secrets.token_hex(6)
        """Lease record ids are ``<process>.<n>``: unique across processes and restarts."""
        self.clock_offset_ms = 0
        """The limiter's clock minus this process's, as last seen (``at_ms - now_ms`` of an answer: the
        skew plus the wait for that answer)."""

    @property
    def enabled(self) -> bool:
        return self._book.max_lease_ms > 0

    @property
    def book(self) -> LeaseBook:
        return self._book

    def try_now(self, key: Hashable, now_ms: int) -> Verdict | None:
        """The verdict of check ``key`` from its lease, synchronously; None: call :meth:`consume`."""
        if not self.enabled:
            return None
        return self._book.take(key, now_ms)

    async def consume(
        self,
        key: Hashable,
        partition: str,
        policies: Sequence[Policy],
        costs: Sequence[int],
        now_ms: int,
        deadline: float | None = None,
        money: Money | None = None,
    ) -> Verdict:
        """Check one request of ``key`` (``partition``, ``policies``, ``costs``): from a lease being taken
        by a concurrent request, from a new lease, or alone. Raises what the wrapped limiter raises.

        ``deadline`` (event-loop time): when the request must first wait for a lease being taken or a
        sweep's refund, that wait and the limiter call after it end by then together
        (:class:`LimiterUnavailable` past it), as does a second call after a lease take was refused. A
        request that waits for nothing makes one limiter call, bounded by the limiter itself."""
        if not self.enabled:
            return await self._limiter.consume(partition, policies, costs, now_ms, money=money)
        if deadline is not None and key in self._taking:  # rare: a timer only for a check that must wait
            try:
                async with asyncio.timeout_at(deadline):
                    return await self.consume(key, partition, policies, costs, now_ms, None, money)
            except TimeoutError as exc:
                raise LimiterUnavailable("no answer within the check's deadline") from exc
        # One lease is taken at a time per check: the others wait for it, then take from it.
        while (taking := self._taking.get(key)) is not None:
            await asyncio.shield(taking)
            verdict = self._book.take(key, now_ms, demand=False)
            if verdict is not None:
                return verdict
        verdict = self._book.take(key, now_ms, demand=False)  # a lease stored since try_now?
        if verdict is not None:
            return verdict
        policies = tuple(policies)
        expires = lease_expiry(policies, now_ms, self._book.max_lease_ms, now_ms + self.clock_offset_ms)
        size = self._book.size_for(key, policies, costs, expires - now_ms, money)
        refund = self._book.release(key)
        if size < 2 and refund is None:
            return await self._consume_alone(key, partition, policies, costs, now_ms, money)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._taking[key] = done
        try:
            # The check's calls in flight alone are counted before this one: Redis may run calls sent on
            # other connections in another order, and a request counted above a lease whose unused units
            # later go back would share its place in the counts with a request of the next lease.
            while alone := self._alone.get(key):
                await asyncio.shield(alone[0])
            if size < 2:  # alone, giving back the ended lease's units: the check's next calls wait for it
                # With money it is a lease of one (recorded), so a lost answer gives its price back too.
                single = None if money is None or refund is None else replace(money, lease=self._record_id())
                try:
                    verdict = await self._limiter.consume(partition, policies, costs, now_ms, refund, single or money)
                except BaseException:
                    self._owe_again(key, partition, policies, refund, money)
                    if single is not None:
                        self._owe_lost_take(key, partition, policies, costs, now_ms, 1, money, single.lease)
                    raise
                if single is not None and verdict.admitted:  # used at once; its record closes with the next call
                    one = Lease(
                        partition, policies, tuple(costs), now_ms, now_ms, 1, tuple(0 for _ in costs), used=1,
                        at_ms=verdict.at_ms, money=money, record=single.lease,
                    )  # fmt: skip
                    self._book.hold(key, one)
                self._book.observe(key, verdict)
                self.clock_offset_ms = verdict.at_ms - now_ms
                return verdict
            taken_with = lease_policies(policies, self._book.last(key))
            leased_money = None
            if money is not None:
                leased_money = replace(lease_money(money, size, self._book.last(key)), lease=self._record_id())
            try:
                leased = await self._limiter.consume(
                    partition, taken_with, [c * size for c in costs], now_ms, refund, leased_money
                )
            except BaseException:
                self._owe_again(key, partition, policies, refund, money)
                if leased_money is not None:
                    self._owe_lost_take(key, partition, policies, costs, now_ms, size, money, leased_money.lease)
                raise
            if not leased.admitted:  # another process used the room: this request alone, exactly
                verdict = await _by(deadline, self._limiter.consume(partition, policies, costs, now_ms, None, money))
                self._book.observe(key, verdict)
                return verdict
            if taken_with is not policies:  # what the policies themselves leave (not the levels it was taken with)
                leased = leased._replace(
                    states=tuple(
                        state._replace(limit=p.limit, remaining=max(p.limit - state.used, 0))
                        for p, state in zip(policies, leased.states, strict=True)
                    )
                )
            self._book.observe(key, leased)
            self.clock_offset_ms = leased.at_ms - now_ms
            expires = lease_expiry(policies, now_ms, self._book.max_lease_ms, leased.at_ms)  # Redis's bucket
            totals = tuple(state.used - c * size for state, c in zip(leased.states, costs, strict=True))
            lease = Lease(
                partition,
                policies,
                tuple(costs),
                now_ms,
                expires,
                size,
                totals,
                at_ms=leased.at_ms,
                money=money,
                money_before=leased.money,
                record=leased_money.lease if leased_money is not None else "",
            )
            self._book.store(key, lease)
            verdict = self._book.take(key, now_ms)
            assert verdict is not None, "a new lease serves the request that took it"
            return verdict
        finally:
            self._taking.pop(key, None)
            done.set_result(None)

    async def _consume_alone(
        self,
        key: Hashable,
        partition: str,
        policies: Sequence[Policy],
        costs: Sequence[int],
        now_ms: int,
        money: Money | None,
    ) -> Verdict:
        """One request to the limiter alone, marked in flight until answered (a lease taken meanwhile
        waits for it)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        in_flight = self._alone.setdefault(key, [])
        in_flight.append(done)
        try:
            verdict = await self._limiter.consume(partition, policies, costs, now_ms, None, money)
        finally:
            in_flight.remove(done)
            if not in_flight and self._alone.get(key) is in_flight:
                del self._alone[key]
            done.set_result(None)
        self._book.observe(key, verdict)
        self.clock_offset_ms = verdict.at_ms - now_ms
        return verdict

    @property
    def owed(self) -> int:
        """Refunds of money leases waiting for another try."""
        return len(self._owed)

    def _record_id(self) -> str:
        return f"{self._process}.{next(self._records)}"

    def _owe(self, owed: Owed) -> None:
        if len(self._owed) >= MAX_OWED:
            log.error("dropped a capacity lease's refund for %s: %d refunds wait already", owed.partition, MAX_OWED)
            return
        self._owed.append(owed)

    def _owe_again(
        self, key: Hashable, partition: str, policies: Sequence[Policy], refund: Refund | None, money: Money | None
    ) -> None:
        """A call carrying ``refund`` failed: a money lease's refund is kept for the next sweep."""
        if refund is not None and refund.lease:
            self._owe(Owed(key, partition, tuple(policies), refund, money))

    def _owe_lost_take(
        self,
        key: Hashable,
        partition: str,
        policies: Sequence[Policy],
        costs: Sequence[int],
        now_ms: int,
        size: int,
        money: Money | None,
        record: str,
    ) -> None:
        """A take of ``size`` requests whose answer was lost (it may have been counted; its request was
        answered without it): owed back whole, applied only if Redis recorded it."""
        lost = Lease(
            partition,
            tuple(policies),
            tuple(costs),
            now_ms,
            now_ms,
            size,
            tuple(0 for _ in costs),
            at_ms=now_ms + self.clock_offset_ms,
            money=money,
            record=record,
        )
        self._owe(Owed.of(key, lost))

    async def sweep(self, now_ms: int) -> int:
        """Refund the leases that ended with units left (and retry the refunds that failed); the number
        refunded."""
        owed, self._owed = self._owed, []
        ended = [Owed.of(key, lease) for key, lease in self._book.expired(now_ms)]
        return await self._refund_all(owed + ended, now_ms)

    async def drain(self, now_ms: int) -> int:
        """Refund every lease's unused units (shutting down), and the refunds still owed."""
        owed, self._owed = self._owed, []
        ended = [Owed.of(key, lease) for key, lease in self._book.drain()]
        return await self._refund_all(owed + ended, now_ms)

    async def _refund_all(self, refunds: Sequence[Owed], now_ms: int) -> int:
        """Refund each lease while its check is marked as being taken: a request of that check waits for
        the refund to land, so the next lease counts from the counters with these units given back (one
        process never sees a unit twice in its ``remaining``)."""
        refunded = 0
        for owed in refunds:
            key = owed.key
            while (taking := self._taking.get(key)) is not None:  # a check of this key is in flight
                await asyncio.shield(taking)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._taking[key] = done
            try:
                while alone := self._alone.get(key):  # counted before the units go back (see consume)
                    await asyncio.shield(alone[0])
                await self._limiter.refund(owed.partition, owed.policies, owed.refund, now_ms, owed.money)
                refunded += 1
            except LimiterUnavailable as exc:
                self.refunds_failed += 1
                if owed.refund.lease:  # money: sent again by the next sweep (its record makes that safe)
                    self._owe(owed)
                    log.warning("could not refund a capacity lease of %s yet: %s", owed.partition, exc)
                else:  # the units stay consumed: capacity wasted, no limit exceeded
                    log.warning("could not refund a capacity lease of %s: %s", owed.partition, exc)
            finally:
                self._taking.pop(key, None)
                done.set_result(None)
        return refunded


async def _by(deadline: float | None, call: Awaitable[Verdict]) -> Verdict:
    """``call``, ended by ``deadline`` (event-loop time; None: by its own bound only)."""
    if deadline is None:
        return await call
    try:
        async with asyncio.timeout_at(deadline):
            return await call
    except TimeoutError as exc:
        raise LimiterUnavailable("no answer within the check's deadline") from exc
