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

Money (``ratelimit.money``): a check may carry ``money``, real-time charges priced at the period's running
quantity and checked against the customer's balance (grants) and spend cap in the same all-or-nothing
step. In order: refunds (policy units; charge units, whose price goes back to the balance and off the
spend counter), grant rollovers at the balance's period start (kept even if the check is refused: a
period boundary is a fact, and applying it twice changes nothing), then the check; only an admitted
check adds quantities, burns grants and counts spend.

Threshold events (``ratelimit.alerts``): an admitted check appends one event per alert level it made a
policy's count cross to the customer's outbox (``events``), then its money events (balance low or
exhausted, spend cap reached), once per event id; a reservation's settlement appends the money events its
overrun burned makes (``settle_now``, as ``settle.lua``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from tollway.clock import Clock
from tollway.credits.grants import REFUND_GRANT, GrantState, burn, burn_order, live_balance, refund_target
from tollway.notifications.events import Event
from tollway.notifications.keys import once_key
from tollway.ratelimit.alerts import crossing_events, money_events, settlement_events
from tollway.ratelimit.keys import charge_key, checked_costs, policy_key, spend_key
from tollway.ratelimit.money import Money, MoneyState, decide
from tollway.ratelimit.policies import Policy, QuotaPolicy, WindowPolicy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.reservations import (
    DEBT_GRANT,
    DEBT_PRIORITY,
    Reservation,
    ReservedAlerts,
    ReservedCharge,
    Settlement,
    check_reservation,
    checked_actual,
)
from tollway.ratelimit.verdict import NEVER, Counted, Verdict, build_verdict


class Limiter(Protocol):
    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        """Check and (if admitted) consume ``cost`` on every policy, all or nothing.

        ``cost``: one int for every policy, or one per policy. ``now_ms``: Unix time in ms from the
        caller's injected clock: the time of quota periods; window buckets are counted at the limiter's
        own time (the Redis server's clock), returned as ``Verdict.at_ms``. ``refund``: units given back
        first, in the same atomic step (see :meth:`refund`). ``money``: the request's real-time charges,
        priced and checked against the balance and spend cap in the same step (``Verdict.money``; a check
        may have money and no policies). Raises ``LimiterUnavailable`` if the counters cannot be reached,
        and ValueError for an invalid check (bad partition, duplicate names, negative cost).
        """
        ...

    async def refund(
        self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int, money: Money | None = None
    ) -> None:
        """Give back ``refund.units`` (one count per policy) consumed at ``refund.taken_ms`` (the limiter's
        time they were counted at, ``Verdict.at_ms``) and not used:
        to the bucket of that time while it is still counted (a bucket that left the window is not
        counted any more, so nothing is owed), or to the quota's period counter. Never below zero.
        ``refund.charge_units`` (with ``money``, whose quantities are ignored): units given back to each
        charge's period counter, their price back to the balance and off the spend counter.
        Raises ``LimiterUnavailable`` if the counters cannot be reached (the units then stay consumed:
        capacity wasted, never a limit exceeded)."""
        ...


class Settler(Protocol):
    async def settle(
        self, partition: str, row_id: str, actual: Sequence[int] | Mapping[str, int], now_ms: int
    ) -> Settlement:
        """Settle the reservation keyed by ``row_id`` with the ``actual`` quantities (one per reserved
        charge, in the record's order, or by charge name) exactly once (``ratelimit.reservations``):
        ``status`` ``settled`` by this call, ``already`` (the first settlement's outcome; nothing
        changed), or ``unknown``.
        ValueError for a wrong number of quantities or a negative one; ``LimiterUnavailable`` if the
        store cannot be reached (settled entirely or not at all: call again)."""
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
        self._charges: dict[str, int] = {}
        self._grants: dict[str, dict[str, GrantState]] = {}
        self._spent: dict[str, int] = {}
        self._reservations: dict[str, dict[str, str]] = {}
        self._leases: dict[str, set[str]] = {}
        self._outbox: dict[str, list[Event]] = {}
        self._funding: dict[str, int] = {}
        self._once: set[str] = set()

    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        return self.check(partition, policies, cost, now_ms, refund, money)

    def check(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        """``consume`` without the coroutine (the model is synchronous)."""
        costs = checked_costs(partition, policies, cost)
        if money is not None and money.reserves:
            check_reservation(money)
            if money.row_id in self._reservations.get(partition, {}):
                raise ValueError(f"reservation {money.row_id!r} exists")
        if refund is not None:
            refund.check(policies, money)
            if refund.lease:  # applied only by the call that closes the lease's record (money.py)
                held = self._leases.get(partition, set())
                if refund.lease in held:
                    held.discard(refund.lease)
                else:
                    refund = None
            if refund is not None:
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
        state: MoneyState | None = None
        fit = admitted
        if money is not None:
            state = self._money(partition, money, refund, now_ms, admitted)
            admitted = state.refused is None and admitted
        if admitted:
            for policy, key, c, live, total in zip(policies, keys, costs, lives, totals, strict=True):
                if c == 0:
                    continue
                if policy.alerting is not None:
                    self._crossings(partition, policy, total, total + c, at_ms)
                if isinstance(policy, WindowPolicy):
                    cur = at_ms // policy.bucket_ms
                    live[cur] = live.get(cur, 0) + c
                    self._windows[key] = dict(live)  # the stale buckets are dropped by the write
                else:
                    self._quotas[key] = self._quotas.get(key, 0) + c
        if admitted and money is not None and money.lease:
            self._leases.setdefault(partition, set()).add(money.lease)
        if money is not None and money.alerts is not None and state is not None:
            epoch = self._funding.get(partition, 0)
            for event in money_events(partition, money, state, fit, admitted, epoch, at_ms):
                self._emit(event)
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
        return build_verdict(policies, costs, now_ms, admitted, counted, at_ms, state)

    def _crossings(self, partition: str, policy: Policy, before: int, after: int, at_ms: int) -> None:
        """Append the events of the levels a count going from ``before`` to ``after`` crosses, each once
        (the once-marker, as the script's ``SET NX``; markers do not expire here)."""
        for event, _end, _level in crossing_events(partition, policy, before, after, at_ms):
            self._emit(event)

    def _emit(self, event: Event) -> None:
        marker = once_key(self._prefix, event.customer_id, event.id)
        if marker not in self._once:
            self._once.add(marker)
            self._outbox.setdefault(event.customer_id, []).append(event)

    def events(self, partition: str) -> list[Event]:
        """The customer's outbox as the script appends it (tests: the model's ``XRANGE``)."""
        return list(self._outbox.get(partition, ()))

    def _money(self, partition: str, money: Money, refund: Refund | None, now_ms: int, fit: bool) -> MoneyState:
        """The money part of a check (after the policies were read; ``fit``: they all fit): refunds of
        charge units, rollovers, the price and its check, and (admitted) the writes."""
        grants: dict[str, GrantState] | None = None
        if money.balance_period_start_ms is not None:
            start = money.balance_period_start_ms
            grants = {grant_id: g.rolled_over(start) for grant_id, g in self._grants.get(partition, {}).items()}
        cap = money.spend_cap
        spent_key = None if cap is None else spend_key(self._prefix, partition, cap.period_start_ms)
        keys = [charge_key(self._prefix, partition, c.name, c.period_start_ms) for c in money.charges]
        back = 0
        for i, (charge, key) in enumerate(zip(money.charges, keys, strict=True)):
            units = refund.charge(i) if refund is not None else 0
            have = self._charges.get(key, 0)
            units = min(units, have)
            if units > 0:
                self._charges[key] = have - units
                back += charge.total(have) - charge.total(have - units)
        if back > 0:
            if grants is not None:
                target = refund_target(grants.values(), now_ms)
                if target is None:
                    grants[REFUND_GRANT] = GrantState(REFUND_GRANT, back)
                else:
                    grant = grants[target]
                    grants[target] = replace(grant, remaining=grant.remaining + back)
            if spent_key is not None and self._spent.get(spent_key, 0) > 0:
                self._spent[spent_key] -= min(back, self._spent[spent_key])
        before = tuple(self._charges.get(key, 0) for key in keys)
        price = sum(charge.price(q, n) for charge, q, n in zip(money.charges, before, money.quantities, strict=True))
        balance = None if grants is None else live_balance(grants.values(), now_ms)
        spent = None if spent_key is None else self._spent.get(spent_key, 0)
        state = decide(money, fit, before, price, balance, spent)
        if not fit or state.refused is not None:
            if grants:
                self._grants[partition] = grants  # rollovers and refunds stay
            return state
        for key, q, n in zip(keys, before, money.quantities, strict=True):
            if n > 0:
                self._charges[key] = q + n
        if price > 0:
            if grants is not None:
                taken = burn(grants.values(), price, now_ms)
                assert taken is not None, "an admitted price is covered by the live grants"
                for grant_id, part in taken.items():
                    grant = grants[grant_id]
                    grants[grant_id] = replace(grant, remaining=grant.remaining - part)
            if spent_key is not None:
                self._spent[spent_key] = self._spent.get(spent_key, 0) + price
        if grants:
            self._grants[partition] = grants
        if money.reserves:
            reserved = tuple(
                ReservedCharge(c, n, c.price(q, n))
                for c, q, n, marked in zip(money.charges, before, money.quantities, money.reserved, strict=True)
                if marked
            )
            cap_period = None if cap is None else (cap.period_start_ms, cap.period_end_ms)
            record = Reservation(
                money.row_id,
                now_ms,
                money.overrun,
                money.prepaid,
                cap_period,
                reserved,
                price,
                ReservedAlerts.of(money),
            )
            self._reservations.setdefault(partition, {})[money.row_id] = record.encode()
        return state

    async def settle(
        self, partition: str, row_id: str, actual: Sequence[int] | Mapping[str, int], now_ms: int
    ) -> Settlement:
        return self.settle_now(partition, row_id, actual, now_ms)

    def settle_now(
        self, partition: str, row_id: str, actual: Sequence[int] | Mapping[str, int], now_ms: int
    ) -> Settlement:
        """``settle`` without the coroutine (``ratelimit.reservations`` has the rule)."""
        held = self._reservations.get(partition, {})
        text = held.get(row_id)
        if text is None:
            return Settlement(row_id, "unknown")
        if text.startswith("S"):
            return Settlement.decode(row_id, text)
        record = Reservation.decode(row_id, text)
        actual = checked_actual(record, actual)
        back = over = 0
        for reserved, quantity in zip(record.charges, actual, strict=True):
            charge = reserved.charge
            key = charge_key(self._prefix, partition, charge.name, charge.period_start_ms)
            have = self._charges.get(key, 0)
            d = quantity - reserved.quantity
            if d < 0:
                units = min(-d, have)
                if units > 0:
                    self._charges[key] = have - units
                    back += charge.total(have) - charge.total(have - units)
            elif d > 0:
                over += charge.total(have + d) - charge.total(have)
                self._charges[key] = have + d
        burned = over
        before: int | None = None  # the live balance and the spend after the returns, before the burn
        spent_before: int | None = None
        if record.prepaid and (back > 0 or over > 0):
            grants = dict(self._grants.get(partition, {}))
            if back > 0:
                target = refund_target(grants.values(), now_ms)
                if target is None:
                    grants[REFUND_GRANT] = GrantState(REFUND_GRANT, back)
                else:
                    grants[target] = replace(grants[target], remaining=grants[target].remaining + back)
            if over > 0:
                balance = live_balance(grants.values(), now_ms)
                burned = min(over, max(balance + record.overrun, 0))
                before = balance
                left = burned
                for grant in burn_order(grants.values(), now_ms):
                    if left <= 0:
                        break
                    part = min(grant.remaining, left)
                    if part > 0:
                        grants[grant.grant_id] = replace(grant, remaining=grant.remaining - part)
                        left -= part
                if left > 0:
                    debt = grants.get(DEBT_GRANT) or GrantState(DEBT_GRANT, 0, DEBT_PRIORITY)
                    grants[DEBT_GRANT] = replace(debt, remaining=debt.remaining - left)
            self._grants[partition] = grants
        if record.cap_period is not None and (back > 0 or burned > 0):
            key = spend_key(self._prefix, partition, record.cap_period[0])
            spent = self._spent.get(key, 0)
            net = burned - min(back, spent)
            spent_before = spent - min(back, spent)
            if net:
                self._spent[key] = spent + net
        settled = Settlement(
            row_id,
            "settled",
            record.price - back + burned,
            back,
            burned,
            over - burned,
            now_ms,
            record.admitted_price - back + burned,
        )
        held[row_id] = settled.encode()
        if record.alerts is not None:
            epoch = self._funding.get(partition, 0)
            for event in settlement_events(
                partition, record.alerts, before, spent_before, record.cap_period, burned, epoch, now_ms
            ):
                self._emit(event)
        return settled

    async def held_reservations(self) -> dict[str, dict[str, str]]:
        """Every customer's reservations hash (open records and settlement markers)."""
        return {p: dict(h) for p, h in self._reservations.items() if h}

    async def forget_settled(self, partition: str, row_id: str) -> bool:
        """Delete the settlement marker of ``row_id`` (never an open record); True if one was deleted."""
        held = self._reservations.get(partition, {})
        if held.get(row_id, "").startswith("S"):
            del held[row_id]
            return True
        return False

    def leases(self, partition: str) -> set[str]:
        """The customer's open lease records (``ratelimit.money``, kind 9), as in Redis."""
        return set(self._leases.get(partition, set()))

    def reservations(self, partition: str) -> dict[str, str]:
        """The customer's reservations hash (row id -> open record or settlement marker), as in Redis."""
        return dict(self._reservations.get(partition, {}))

    async def refund(
        self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int, money: Money | None = None
    ) -> None:
        if money is not None and (refund.lease or any(refund.charge_units)):
            self.check(partition, policies, 0, now_ms, refund, money.scaled(0))
            return
        refund.check(policies, money)
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

    def money_snapshot(self) -> tuple[dict[str, int], dict[str, dict[str, GrantState]], dict[str, int]]:
        """A copy of every charge counter, grant and spend counter (keyed as in Redis; grants by partition)."""
        return dict(self._charges), {p: dict(g) for p, g in self._grants.items()}, dict(self._spent)

    def put_grant(self, partition: str, grant: GrantState, *, funding: bool = True) -> None:
        """Store ``grant`` (replacing one with its id), as an HSET of its record does in Redis; ``funding``:
        a grant or top-up, which bumps the customer's funding epoch (``credits.store`` does both at once)."""
        self._grants.setdefault(partition, {})[grant.grant_id] = grant
        if funding:
            self._funding[partition] = self._funding.get(partition, 0) + 1

    def grants(self, partition: str) -> list[GrantState]:
        """The customer's grants, by grant id."""
        return sorted(self._grants.get(partition, {}).values(), key=lambda g: g.grant_id)

    def spent(self, partition: str, period_start_ms: int) -> int:
        """Micro-units of real-time charges counted as spent in the period starting at ``period_start_ms``."""
        return self._spent.get(spend_key(self._prefix, partition, period_start_ms), 0)

    def charge_quantity(self, partition: str, charge_name: str, period_start_ms: int) -> int:
        """The period's counted quantity of a real-time charge."""
        return self._charges.get(charge_key(self._prefix, partition, charge_name, period_start_ms), 0)
