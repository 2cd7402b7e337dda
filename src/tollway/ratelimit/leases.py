"""Capacity leases: a busy customer's units taken from Redis a few requests at a time, then handed out in
process with no round trip, without ever admitting more than a limit allows.

A lease is an ordinary check (``consume.lua``, all policies at once, all or nothing) whose cost is ``n``
requests' worth instead of one. The process then admits up to ``n`` requests of the same check from it,
synchronously, until the lease *expires*. Three rules keep every guarantee of ADR 3 intact:

* **Counted where used.** A lease expires no later than the end of the bucket it was taken in (for
  every window policy of the check) and the end of the quota's period: a unit handed out from it is
  used in the very bucket (and period) it was counted in, exactly as if it had been checked alone. So
  "never more than L in any window of width W" holds as it is, with no extra error term.
  The bucket is the limiter's (Redis's clock, ``Verdict.at_ms``), not this process's: a lease taken at
  this process's ``now_ms`` and counted by Redis at ``at_ms`` ends at ``now_ms + (bucket end - at_ms)``
  of this process's clock. Redis read ``at_ms`` after ``now_ms`` was read here, so that is never later
  than the bucket's end on Redis's clock, whatever the skew between the two clocks: a process whose
  clock is ahead or behind never hands out units in a bucket Redis considers closed.
* **Far from every limit only.** A lease holds at most 1/16 of any limit, and is taken only when, after
  it, every policy of the check (enforced, soft and shadow) keeps at least half its limit remaining, as
  of the last answer from Redis; another process's use since then can only make the lease refused, and
  then the request is checked alone. Near a limit every request is checked alone, so refusals, soft
  overage and shadow reports are exact for the requests of one check. Units an idle lease holds count
  as used for other checks of the same counters (another process, or another feature sharing a limit)
  until the lease ends: at most 1/16 of the limit per lease, for at most one lease period — capacity
  briefly withheld, never a limit exceeded.
* **Alert levels are crossed alone.** A lease stops one unit short of the next alert level of every
  policy of its check, as of the last answer (``room``), and is taken with that level as the policy's
  limit (``lease_policies``), so the script refuses it if another process counted since: the request
  that reaches a level is always checked alone, in the script, which appends the crossing's event
  (docs/decisions/0007-exactly-once-threshold-events.md).
* **Unused units go back.** When a lease ends, its unused units are given back to the bucket and period
  they came from: with the next check of the same counters, in the same atomic script call (so one
  process sees exactly what a lease-free limiter would), or by the background sweep when no request
  comes. If Redis cannot be reached they stay consumed: capacity wasted, never a limit exceeded.

The size of a lease follows demand: the requests this process saw for the check in the last lease
period, scaled to the lease's lifetime, with half as much again (``HEADROOM``), at least 2, at most
``max_size``; one request at a time gets no lease. The headroom is measured, not guessed: every lease
ends at the next bucket boundary of its shortest window (20 ms for a per-second limit), and the requests
that arrive while the next one is being taken wait for it; a lease sized to the bare demand ran out
before the boundary often enough that row D took 1,140–1,330 leases in 8 s instead of 726–848 with the
headroom, and served about a fifth fewer requests per second. The units it holds beyond what is used go
back with the next check or the sweep, as ever. The RateLimit numbers of a
request admitted from a lease are computed from the lease (the total before it plus what this process
handed out since): exact with one process; with several, the others' use since the lease is not in
``remaining`` until this process asks Redis again — at most one lease period later.

Pure: no I/O, times are the caller's ``now_ms`` (injected clock), except a lease's ``at_ms`` (the
limiter's time it was counted at: the bucket its refund goes back to).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from tollway.notifications.thresholds import units_below_next
from tollway.ratelimit.money import Money, MoneyState
from tollway.ratelimit.policies import Policy, WindowPolicy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.verdict import PolicyState, Verdict

DEFAULT_MAX_LEASE_MS: Final = 100
DEFAULT_MAX_SIZE: Final = 1000
DEFAULT_MAX_ENTRIES: Final = 10_000
LEASE_SHARE: Final = 16
HEADROOM_NUM: Final = 3
HEADROOM_DEN: Final = 2
"""A lease covers 3/2 of the demand expected over its lifetime (see the module docstring)."""
"""A lease holds at most 1/16 of any limit of its check."""


def lease_expiry(policies: Sequence[Policy], now_ms: int, max_lease_ms: int, at_ms: int | None = None) -> int:
    """When a lease taken at ``now_ms`` (this process's clock) ends, on this process's clock:
    ``max_lease_ms`` later, or earlier at the end of the quota's period (a period of this clock) or of the
    current bucket of any window policy. ``at_ms``: the limiter's time the lease was counted at, read
    after ``now_ms`` (default ``now_ms``: one clock); the bucket is the one of ``at_ms`` and ends
    ``bucket end - at_ms`` after ``now_ms``."""
    end = now_ms + max_lease_ms
    at = now_ms if at_ms is None else at_ms
    for policy in policies:
        if isinstance(policy, WindowPolicy):
            end = min(end, now_ms + (at // policy.bucket_ms + 1) * policy.bucket_ms - at)
        else:
            end = min(end, policy.period_end_ms)
    return end


def room(policies: Sequence[Policy], costs: Sequence[int], last: Verdict, money: Money | None = None) -> int:
    """How many requests a lease may cover given the last answer ``last`` for this check: the largest
    ``n`` such that every policy keeps at least half its limit after ``n`` more requests, and no lease
    holds more than a sixteenth of any limit (so limits below 32 are never leased, and what one idle
    lease can keep from other checks of the same counters is small). A policy with alert levels
    (``Policy.alerting``) stops the lease short of its next level (``thresholds.units_below_next`` of the
    count last seen), so the request that crosses it is checked alone, in the script, where the crossing
    becomes its event.

    With ``money``, the lease also carves ``n`` requests' price: only when every charge is priced per unit
    (one price per request, whatever the period's quantity; tiered and package prices are checked request
    by request), at most a sixteenth of the last balance seen, and, under a spend cap, the same rule as a
    limit (half the cap left after it, at most a sixteenth of the cap), and never past the next
    ``balance.low`` threshold (``MoneyAlerts.low``) of the last balance seen."""
    most = DEFAULT_MAX_SIZE * 1000
    for policy, cost, state in zip(policies, costs, last.states, strict=True):
        if cost <= 0:
            continue
        spare = min(state.remaining - -(-policy.limit // 2), policy.limit // LEASE_SHARE)
        alerting = policy.alerting
        if alerting is not None:  # stop short of the next alert level: its crossing is checked alone
            below = units_below_next(state.used, alerting.levels)
            if below is not None:
                spare = min(spare, below)
        if spare <= 0:
            return 0
        most = min(most, spare // cost)
    if money is not None:
        price = flat_price(money)
        told = last.money
        if price is None or told is None:
            return 0
        if price > 0:
            balance = told.balance_after
            if balance is not None:
                most = min(most, balance // LEASE_SHARE // price)
                alerts = money.alerts
                if alerts is not None and alerts.low:  # stop above the next balance.low threshold
                    passed = [t for t in alerts.low if t <= balance]
                    if passed:
                        most = min(most, (balance - passed[-1]) // price)
            if money.spend_cap is not None and told.spent is not None:
                cap = money.spend_cap.cap
                spent = told.spent + (0 if told.refused else told.price)
                spare = min(cap - spent - -(-cap // 2), cap // LEASE_SHARE)
                most = min(most, max(spare, 0) // price)
    return most


def lease_policies(policies: tuple[Policy, ...], last: Verdict | None) -> tuple[Policy, ...]:
    """The policies a lease is *taken* with: each policy with alert levels enforced, for this one call,
    at one unit below its next level as of ``last`` (the last answer). ``room`` sized the lease to stop
    short of that level on the count last seen; another process may have counted since, so the script
    itself refuses a lease that would reach the level (the request is then checked alone, as for any
    lease refused). A lease therefore never crosses a level: the request that does is checked alone, in
    the script, which appends its event. Policies without alerts are returned as they are (the same
    tuple when none has alerts)."""
    if last is None or not any(p.alerting is not None for p in policies):
        return policies
    out: list[Policy] = []
    for policy, state in zip(policies, last.states, strict=True):
        alerting = policy.alerting
        below = None if alerting is None else units_below_next(state.used, alerting.levels)
        if below is None:
            out.append(policy)
        else:
            out.append(replace(policy, limit=min(policy.limit, state.used + below), hard=True, shadow=False))
    return tuple(out)


def lease_money(money: Money, size: int, last: Verdict | None) -> Money:
    """The money of a lease of ``size`` requests, taken with a balance floor: the next ``balance.low``
    threshold at or below the balance last seen (``room`` sized the lease to stay above it; the floor makes
    the script refuse it if another process burned since, and the request is then checked alone)."""
    alerts = money.alerts
    told = None if last is None else last.money
    balance = None if told is None else told.balance_after
    floor = 0
    if alerts is not None and alerts.low and balance is not None:
        passed = [t for t in alerts.low if t <= balance]
        floor = passed[-1] if passed else 0
    return money.scaled(size, floor)


def flat_price(money: Money) -> int | None:
    """The price of every request of a check whose charges are all per unit (micro-units); None when the
    price depends on the period's quantity (tiers, packages)."""
    price = 0
    for charge, quantity in zip(money.charges, money.quantities, strict=True):
        if charge.model != "per_unit":
            return None
        price += charge.unit * quantity
    return price


@dataclass(slots=True)
class Lease:
    """``size`` requests of one check (``partition``, ``policies``, ``costs``), consumed at ``taken_ms``
    (this process's clock, as ``expires_ms``) and counted by the limiter at ``at_ms`` (its clock; None:
    ``taken_ms``); ``totals``: each policy's counted total before the lease; ``used``: requests handed
    out so far."""

    partition: str
    policies: tuple[Policy, ...]
    costs: tuple[int, ...]
    taken_ms: int
    expires_ms: int
    size: int
    totals: tuple[int, ...]
    used: int = 0
    at_ms: int | None = None
    money: Money | None = None
    """The check's money for one request (None: none); the lease burned ``size`` requests' price."""
    money_before: MoneyState | None = None
    """The lease's own money answer: balance, spend and quantities before it."""
    record: str = ""
    """The id of the lease's record in Redis (``Money.lease``; a lease with money has one): its refund
    closes it, so the refund is applied once however often it is sent."""

    _shift: int = field(init=False, repr=False, compare=False)
    """``at_ms - taken_ms``: from this process's clock to the limiter's."""

    _shape: tuple[tuple[str, int, int, int, int, int], ...] = field(init=False, repr=False, compare=False)
    """Per policy: name, limit, window_s, cost, total before the lease, and the quota's period end (-1 for
    a window policy): what :meth:`take` needs, looked up once."""

    _price: int = field(init=False, repr=False, compare=False)
    """One request's price (micro-units; 0 without money)."""

    _money0: tuple[int | None, int | None, tuple[tuple[int, int], ...], int | None] = field(
        init=False, repr=False, compare=False
    )
    """From ``money_before``, looked up once: balance, spend, each charge's (quantity before the lease,
    quantity per request) and the cap."""

    def __post_init__(self) -> None:
        self._shift = 0 if self.at_ms is None else self.at_ms - self.taken_ms
        self._price = 0 if self.money is None else flat_price(self.money) or 0
        before = self.money_before
        if self.money is not None and before is not None:
            quantities = tuple(zip(before.quantities_before, self.money.quantities, strict=True))
            self._money0 = (before.balance, before.spent, quantities, before.cap)
        else:
            self._money0 = (None, None, (), None)
        self._shape = tuple(
            (
                policy.name,
                policy.limit,
                policy.window_s,
                cost,
                total,
                -1 if isinstance(policy, WindowPolicy) else policy.period_end_ms,
            )
            for policy, cost, total in zip(self.policies, self.costs, self.totals, strict=True)
        )

    def take(self, now_ms: int) -> Verdict | None:
        """The verdict of one more request from this lease, or None when it is used up or expired (or
        the clock stepped back before it). What ``build_verdict`` derives for an admitted request that
        exceeds nothing (a lease leaves half of every limit), built directly: this is the hot path."""
        n = self.used + 1
        if n > self.size or not self.taken_ms <= now_ms < self.expires_ms:
            return None
        self.used = n
        states = []
        for name, limit, window_s, cost, total, period_end_ms in self._shape:
            used = total + n * cost
            if period_end_ms < 0:  # a window: one more unit fits, so it resets now
                states.append(PolicyState(name, limit, window_s, limit - used, 0, False, used, 0))
            else:
                reset_ms = period_end_ms - now_ms if period_end_ms > now_ms else 0
                states.append(
                    PolicyState(name, limit, window_s, limit - used, -(-reset_ms // 1000), False, used, reset_ms)
                )
        money = self.money
        if money is None:
            return Verdict(True, tuple(states), (), (), (), 0, 0, (), now_ms + self._shift)
        return Verdict(True, tuple(states), (), (), (), 0, 0, (), now_ms + self._shift, self._money_of(money, n))

    def _money_of(self, money: Money, n: int) -> MoneyState:
        """The money of the ``n``-th request from this lease: one request's price, the balance and spend
        as the lease left them before it."""
        assert self.money_before is not None, "a lease with money has its money answer"
        balance, spent, quantities, cap = self._money0
        price = self._price
        earlier = (n - 1) * price
        if len(quantities) == 1:  # one charge (the usual case): no generator
            ((q, per),) = quantities
            before: tuple[int, ...] = (q + (n - 1) * per,)
        else:
            before = tuple(q + (n - 1) * per for q, per in quantities)
        return MoneyState(
            price,
            None if balance is None else balance - earlier,
            None if spent is None else spent + earlier,
            before,
            None,
            False,  # a lease leaves half of a cap: none of its requests goes past it
            cap,
        )

    def refund(self) -> Refund:
        """The units consumed for requests the lease did not hand out, per policy, owed to the limiter's
        bucket they were counted in; with money, the charges' units too (their price goes back with them)."""
        left = self.size - self.used
        charge_units = () if self.money is None else tuple(left * q for q in self.money.quantities)
        return Refund(tuple(left * cost for cost in self.costs), self.taken_ms + self._shift, charge_units, self.record)

    @property
    def owes(self) -> bool:
        """Whether the lease, once ended, must be given back: units left, or a record to close."""
        return self.used < self.size or bool(self.record)


@dataclass(slots=True)
class _Entry:
    lease: Lease | None = None
    last: Verdict | None = None  # the last answer from Redis for this check
    demand: int = 0  # requests for this check in the current demand period
    previous_demand: int = 0  # ... and in the one before
    period_start_ms: int = 0


@dataclass
class LeaseBook:
    """This process's leases, one per check key (any hashable naming the customer and the exact policies
    and costs), and what sizes them. Bounded: past ``max_entries`` keys, the idle ones are forgotten
    (their leases come back from :meth:`expired`)."""

    max_lease_ms: int = DEFAULT_MAX_LEASE_MS
    max_size: int = DEFAULT_MAX_SIZE
    max_entries: int = DEFAULT_MAX_ENTRIES
    _entries: dict[Hashable, _Entry] = field(default_factory=dict)
    _evicted: list[tuple[Hashable, Lease]] = field(default_factory=list)
    leases_taken: int = 0
    requests_from_leases: int = 0

    def take(self, key: Hashable, now_ms: int, *, demand: bool = True) -> Verdict | None:
        """A request of check ``key`` at ``now_ms``: its verdict from the lease, or None (ask Redis).
        Counts as demand for the check unless ``demand`` is false (a second try for the same request)."""
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self._evict_idle(now_ms)
            entry = self._entries[key] = _Entry(period_start_ms=now_ms)
        if demand:
            if 0 <= now_ms - entry.period_start_ms < self.max_lease_ms:  # the common case, inline
                entry.demand += 1
            else:
                self._count(entry, now_ms)
        lease = entry.lease
        if lease is None:
            return None
        if not demand and now_ms < lease.taken_ms:
            # A second try comes after a wait (for this very lease, often): the request is answered now,
            # not when it arrived. Refusing the lease as "from the future" would send it to Redis beside
            # a lease with units still in hand, and the numbers the two hand out would overlap.
            now_ms = lease.taken_ms
        verdict = lease.take(now_ms)
        if verdict is not None:
            self.requests_from_leases += 1
        return verdict

    def size_for(
        self,
        key: Hashable,
        policies: Sequence[Policy],
        costs: Sequence[int],
        lifetime_ms: int,
        money: Money | None = None,
    ) -> int:
        """How many requests the next check of ``key`` should take: 1 (no lease) or a lease size ≥ 2 —
        the demand of the last lease period scaled to the lease's ``lifetime_ms``, within ``room``."""
        entry = self._entries.get(key)
        if entry is None or entry.last is None or self.max_lease_ms <= 0 or lifetime_ms <= 0:
            return 1
        demand = max(entry.demand, entry.previous_demand)
        if demand < 2:
            return 1
        wanted = min(-(-demand * lifetime_ms * HEADROOM_NUM // (self.max_lease_ms * HEADROOM_DEN)) + 1, self.max_size)
        size = min(wanted, room(policies, costs, entry.last, money))
        return size if size >= 2 else 1

    def last(self, key: Hashable) -> Verdict | None:
        """Redis's latest answer for ``key`` (None: none yet)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.last

    def observe(self, key: Hashable, verdict: Verdict) -> None:
        """Remember Redis's latest answer for ``key`` (what the next lease is sized against)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.last = verdict

    def release(self, key: Hashable) -> Refund | None:
        """End the current lease of ``key`` (used up or expired: its next check is going to Redis); what it
        owes back, to send with that check."""
        entry = self._entries.get(key)
        if entry is None or entry.lease is None:
            return None
        lease, entry.lease = entry.lease, None
        return lease.refund() if lease.owes else None

    def store(self, key: Hashable, lease: Lease) -> None:
        """Make ``lease`` the current one of ``key`` (after :meth:`release`)."""
        entry = self._entries.setdefault(key, _Entry(period_start_ms=lease.taken_ms))
        entry.lease = lease
        self.leases_taken += 1

    def hold(self, key: Hashable, lease: Lease) -> None:
        """Keep ``lease`` (used up: a recorded check of one) as the current one of ``key`` until it is
        closed, by the check's next call or the sweep; not counted as a lease taken."""
        self._entries.setdefault(key, _Entry(period_start_ms=lease.taken_ms)).lease = lease

    def expired(self, now_ms: int) -> list[tuple[Hashable, Lease]]:
        """Remove and return the leases that have ended owing something (units left, or a record to
        close), with their check keys, and the leases of forgotten keys."""
        ended, self._evicted = self._evicted, []
        for key, entry in self._entries.items():
            lease = entry.lease
            if lease is not None and (
                now_ms >= lease.expires_ms or lease.used >= lease.size or now_ms < lease.taken_ms
            ):
                entry.lease = None
                if lease.owes:
                    ended.append((key, lease))
        return ended

    def drain(self) -> list[tuple[Hashable, Lease]]:
        """Remove and return every lease owing something, with its check key (shutting down)."""
        ended, self._evicted = self._evicted, []
        for key, entry in self._entries.items():
            if entry.lease is not None and entry.lease.owes:
                ended.append((key, entry.lease))
            entry.lease = None
        return ended

    def _count(self, entry: _Entry, now_ms: int) -> None:
        elapsed = now_ms - entry.period_start_ms
        if elapsed >= self.max_lease_ms or elapsed < 0:
            entry.previous_demand = entry.demand if elapsed < 2 * self.max_lease_ms and elapsed >= 0 else 0
            entry.demand = 0
            entry.period_start_ms = now_ms
        entry.demand += 1

    def _evict_idle(self, now_ms: int) -> None:
        idle = [
            key
            for key, entry in self._entries.items()
            if now_ms - entry.period_start_ms >= 2 * self.max_lease_ms or now_ms < entry.period_start_ms
        ]
        for key in idle or list(self._entries)[: len(self._entries) // 2]:
            lease = self._entries.pop(key).lease
            if lease is not None and lease.owes:
                self._evicted.append((key, lease))
