"""The money part of one check: real-time charges priced in the script, the customer's balance (prepaid)
and spend cap (postpaid), checked and consumed in the same atomic ``consume.lua`` call as the limits.

A check with ``money`` admits iff every enforced policy fits *and* the price fits: the request's price is
the sum over ``charges`` of each charge's marginal price (``credits.charges``) for its ``quantities`` at
the period's running quantity (counted in Redis, so every process sees one sequence); with ``balance``,
the live grants must cover the price (burned in burn order, ``credits.grants``); with a hard
``spend_cap``, the period's spend plus the price must stay within the cap. All or nothing: a refused check
changes nothing, limits included.

Redis keys (all with the customer's hash tag, beside the limiter's counters)::

    {p}cq:{<customer>}:<charge>:<period_start_ms>   string  the period's quantity of a real-time charge
    {p}cr:{<customer>}                              hash    grant id -> grant record (credits.grants)
    {p}sp:{<customer>}:<period_start_ms>            string  micro-units spent in the period (real-time charges)
    {p}ls:{<customer>}                              hash    record id -> now_ms: money leases not yet closed

Script arguments, after the policies' (one ARGV each, in this order; each with its key in KEYS)::

    2 <quantity> <period_end_ms> <charge model args>   a real-time charge (credits.charges)
    3 <period_start_ms>                                 the balance: burn the price
    4 <cap_micros> <hard 0|1> <period_end_ms>           the spend cap
    5 <row_id> <overrun> <cap_period_start_ms|-1> <i>,… a reservation of the charges at positions i (1-based)
    9 <take id|-> <close id|->                          a capacity lease's record (key {p}ls:{<customer>})

A charge argument may end with `` r<units>``: units of a capacity lease given back before the check (not
below 0); the counter goes down by them and the price of those *top* positions
(``total(Q) - total(Q - units)``) goes back to the balance (to ``grants.refund_target``) and off the
period's spend counter, so the money burned for a charge in a period is always exactly ``total(Q)`` of
its counter. The reply, per money argument, three numbers like a
policy's: charge: (quantity before, price of this check, 0); balance: (live balance before, burned, 0);
spend cap: (spent before, price, 0); reservation: (1 written | 0 refused, reserved price, 0).

Reservations (``ratelimit.reservations``): with ``Money.reserved``, the check also writes the
reservation record ``{p}rv:{<customer>}`` field ``row_id`` when admitted (a row id already there is an
error: nothing is admitted). Settled later by ``settle.lua`` (``Limiter.settle``).

Lease records (kind 9). A capacity lease that carries money (``leases.py``) is *recorded*: the call
that takes it (``Money.lease``) writes field ``<take id>`` of the hash ``{p}ls:{<customer>}`` (value: the
caller's now_ms; the hash expires a day after the last take), and the call that gives its unused units
back (``Refund.lease``, the close id; zero units for a lease used up) deletes it first and applies the
refund — policy units and charge units alike — only if the field was there. So a refund is applied at
most once however often it is sent: after a reply lost to a timeout (the call may have run) it is sent
again until an answer comes, and a take whose answer was lost is closed with its whole size (given back
if the take was counted, nothing if not). A crashed process's records stay until the hash expires (its
unused units are not given back). The reply for the argument: (1 closed | 0, 1 recorded | 0, 0).

Money in the script (``consume.lua``; ``ratelimit.model`` is the same in Python). The formats above are
unchanged; the script tells money arguments from policies' by their first digit (2-5 vs 0-1), counting
them from the end, so a check without money pays one byte comparison. In order:

1. Refunds: policy units as before; a charge's ``r<units>`` as above. The returned price goes to the
   balance only if the check has one (``balance_period_start_ms``), to ``grants.refund_target`` (the
   grant ``REFUND_GRANT``: priority 0, effective 0, no expiry, no rollover, if the customer has no grant),
   and off the spend counter only if the check has a cap. ``Limiter.refund`` with ``money`` and charge
   units is a check of quantity 0 (so it applies rollovers too).
2. Rollover of every grant at ``balance_period_start_ms`` (``GrantState.rolled_over``) *before* the refund
   picks its grant, written back even when the check is refused: a period boundary is a fact about time,
   not about the request, and applying it again changes nothing. Refunds are kept too. Nothing else a
   refused check read is written.
3. The price (Σ marginal prices at each counter after its refund), the live balance at ``now_ms`` (the
   caller's clock, ARGV[1]) and the period's spend; ``decide`` says whether it fits. Admitted: counters
   += quantities and spend += price (PEXPIRE period end − now + 1 day), grants burned in burn order.
   A check refused only for money has ``Verdict.retry_after_s`` 0 (no policy to wait for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Final, Literal, NamedTuple

from tollway.credits.charges import RealTimeCharge

KIND_CHARGE: Final = 2
KIND_BALANCE: Final = 3
KIND_CAP: Final = 4
KIND_RESERVE: Final = 5
KIND_LEASE: Final = 9
ROW_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
LEASE_ID: Final = re.compile(r"[A-Za-z0-9_.]{1,64}")
"""A reservation's key: the usage row id (``usage.row.new_row_id``)."""

MoneyRefusal = Literal["insufficient-credits", "spend-cap-reached"]


@dataclass(frozen=True, slots=True)
class SpendCap:
    """At most ``cap`` micro-units of real-time charges in the period ``[period_start_ms, period_end_ms)``;
    ``hard`` False: admit past it and report (``MoneyState.over_cap``)."""

    cap: int
    period_start_ms: int
    period_end_ms: int
    hard: bool = True


@dataclass(frozen=True, slots=True)
class MoneyAlerts:
    """The money events a check may emit (``ratelimit.alerts``): ``unit``, the code of the balance unit
    (the currency for a postpaid plan) named in the bodies; ``low``: the ``balance.low`` thresholds in
    micro-units (ascending). ``balance.exhausted`` (prepaid) and ``spend_cap.reached`` (a cap) need no
    declaration."""

    unit: str
    low: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.unit or any(ch.isspace() for ch in self.unit):
            raise ValueError(f"bad balance unit {self.unit!r}")
        if any(t < 1 for t in self.low) or list(self.low) != sorted(set(self.low)):
            raise ValueError(f"balance alerts must be distinct, ascending and above 0: {self.low}")


@dataclass(frozen=True, slots=True)
class Money:
    """``charges`` with the ``quantities`` one request adds to each; ``balance_period_start_ms``: the
    prepaid balance is checked and burned (the start of the customer's current period, for rollovers);
    None: postpaid (no balance). ``spend_cap``: None for none.

    Reservations (see "Reservations" below): ``reserved`` marks the charges whose quantity is a reserve
    (a meter known only after the response; empty: none); ``overrun``: how far (micro-units) a
    settlement may take the balance below 0; ``row_id``: the usage row id the reservation is keyed by
    (set per request with :meth:`for_row`; a check with reserved charges needs one). ``alerts``: the
    money events the check reports (None: none; ``MoneyAlerts``)."""

    charges: tuple[RealTimeCharge, ...]
    quantities: tuple[int, ...]
    balance_period_start_ms: int | None = None
    spend_cap: SpendCap | None = None
    reserved: tuple[bool, ...] = ()
    overrun: int = 0
    row_id: str = ""
    alerts: MoneyAlerts | None = field(default=None, compare=False)
    lease: str = ""
    """A capacity lease's record id (``LEASE_ID``; empty: no record): admitted, the check records it in
    ``{p}ls:{<customer>}``, and the lease's refund is applied only by the call that closes it (see
    "Lease records" above)."""
    floor: int = 0
    """A capacity lease's balance floor (micro-units): refused (insufficient credits) if the price would
    take the live balance below it, so a lease never crosses a ``balance.low`` threshold (0: the price
    must only be covered)."""

    def __post_init__(self) -> None:
        if len(self.charges) != len(self.quantities):
            raise ValueError(f"{len(self.quantities)} quantities for {len(self.charges)} charges")
        if any(q < 0 for q in self.quantities):
            raise ValueError("charge quantities must be >= 0")
        if len({c.name for c in self.charges}) != len(self.charges):
            raise ValueError("duplicate charge names in one check")
        if self.reserved and len(self.reserved) != len(self.charges):
            raise ValueError(f"{len(self.reserved)} reserve marks for {len(self.charges)} charges")
        if self.overrun < 0:
            raise ValueError("overrun must be >= 0")
        if self.row_id and not ROW_ID.fullmatch(self.row_id):
            raise ValueError(f"bad reservation row id {self.row_id!r}")
        if self.lease and not LEASE_ID.fullmatch(self.lease):
            raise ValueError(f"bad lease record id {self.lease!r}")

    @property
    def reserves(self) -> bool:
        """Some charge's quantity is a reserve (the check records a reservation; never leased)."""
        return any(self.reserved)

    def for_row(self, row_id: str) -> Money:
        """This money with its reservation keyed by ``row_id`` (the request's usage row id)."""
        return replace(self, row_id=row_id)

    @property
    def prepaid(self) -> bool:
        return self.balance_period_start_ms is not None

    def scaled(self, n: int, floor: int = 0) -> Money:
        """The money of ``n`` requests at once (a capacity lease; never one with reservations), taken only
        if it leaves at least ``floor`` of the balance."""
        if self.reserves:
            raise ValueError("a check with a reservation is never leased")
        quantities = tuple(q * n for q in self.quantities)
        return Money(
            self.charges, quantities, self.balance_period_start_ms, self.spend_cap, alerts=self.alerts, floor=floor
        )


class MoneyState(NamedTuple):
    """The money side of a verdict (a NamedTuple: one is built per request answered from a lease).
    ``price``: this check's price (micro-units; burned iff admitted).
    ``balance``: the live balance before the check (None: postpaid). ``spent``: the period's real-time
    spend before the check (None: no cap). ``quantities_before``: each charge's period quantity before.
    ``refused``: why the price did not fit (None: it did, or a policy refused first and nothing was
    priced against the balance). ``over_cap``: a soft cap the check went past (admitted)."""

    price: int
    balance: int | None
    spent: int | None
    quantities_before: tuple[int, ...]
    refused: MoneyRefusal | None = None
    over_cap: bool = False
    cap: int | None = None

    @property
    def balance_after(self) -> int | None:
        if self.balance is None:
            return None
        return self.balance if self.refused else self.balance - self.price


def money_refusal(money: Money, price: int, balance: int | None, spent: int | None) -> MoneyRefusal | None:
    """Why ``price`` does not fit the balance or a hard cap (the balance is checked first); None: it fits.
    A price of 0 always fits (even past a cap lowered below what was spent)."""
    if price <= 0:
        return None
    if balance is not None and balance - price < money.floor:
        return "insufficient-credits"
    cap = money.spend_cap
    if cap is not None and cap.hard and spent is not None and spent + price > cap.cap:
        return "spend-cap-reached"
    return None


def decide(
    money: Money,
    policies_fit: bool,
    quantities_before: tuple[int, ...],
    price: int,
    balance: int | None,
    spent: int | None,
) -> MoneyState:
    """The money side of a check from what a backend read (each backend reads, this decides): the check
    is admitted iff ``policies_fit`` and the result's ``refused`` is None. A check a policy refuses is not
    refused for money (the policy is reported: 429 before 402)."""
    refused = money_refusal(money, price, balance, spent) if policies_fit else None
    cap = money.spend_cap
    over_cap = (
        policies_fit
        and refused is None
        and cap is not None
        and not cap.hard
        and price > 0
        and spent is not None
        and spent + price > cap.cap
    )
    return MoneyState(price, balance, spent, quantities_before, refused, over_cap, None if cap is None else cap.cap)
