"""Reservations: the money of a meter known only after the response, reserved at admission and settled
exactly once (docs/decisions/0006-money-in-the-limiter-script.md, "Reservations"). Pure: formats and
arithmetic shared by the script's callers and the model.

At admission a check whose ``Money.reserved`` marks charges prices their reserve quantities like any
quantity (marginal price at the counter, counter += reserve, burned from the balance) and, in the same
atomic call, writes one record in the customer's reservations hash, keyed by the usage row id::

    {p}rv:{<customer>}   hash   row id -> reservation record (open) or settlement marker (settled)

Open record (``Reservation.encode``): a header line, then one line per reserved charge::

    R <created_ms> <overrun> <prepaid 0|1> <cap_period_start_ms|-1> <cap_period_end_ms|-1> <admission price>[ <alerts>]
    <charge> <period_start_ms> <period_end_ms> <reserved quantity> <reserved price> <model args>

``<alerts>`` (``ReservedAlerts``; only when the check had money alerts, ``Money.alerts``): the money
alerts its settlement reports, ``<unit> <cap micros|-1> <hard 0|1> <threshold>,…|-``. A record without it
(written before settlements had events) settles without events.

Settlement marker (``Settlement.encode``), written over the record by the settling call::

    S <final price> <given back> <overrun burned> <forgiven> <settled_ms> <request's final price>

**Settle** (``settle.lua``; ``MemoryLimiter.settle``) is one atomic call per reservation: if the field
holds an open record it is settled with the actual quantities and replaced by the marker; if it holds a
marker, nothing changes and the marker's outcome is answered (status ``already``); if it is absent,
``unknown``. So a reservation is settled exactly once however often (and by however many processes)
settle is called for it, and a repeated call learns the same final price. Per charge, with ``d`` =
actual − reserved and ``Q`` its counter now:

* ``d < 0``: the counter goes down by ``min(−d, Q)`` and the price of those top positions,
  ``total(Q) − total(Q − u)``, goes back (to ``grants.refund_target``, else the ``REFUND_GRANT``; and
  off the period's spend counter if the check had a cap);
* ``d > 0``: the counter goes up by ``d`` and the overrun ``total(Q + d) − total(Q)`` is burned after
  the returns, from the live grants in burn order and then as *debt*, but only as far as the live
  balance plus ``overrun`` allows; the rest is *forgiven* (never burned, reported). The debt is the
  grant record ``DEBT_GRANT`` with a negative remaining (priority −1: first in burn order, so returned
  money pays it first; a burn never takes from a negative record). A negative live balance refuses
  every priced request (402) until a top-up covers it.

Events (``ratelimit.alerts.settlement_events``): the overrun burned is a burn like a check's price.
If it takes the live balance (after the returns) from at or above a ``balance.low`` threshold to below it,
or to 0 or below, or the spend (after the returns) past the cap, the settling call appends
``balance.low`` / ``balance.exhausted`` / ``spend_cap.reached`` to the customer's outbox with the ids of
a check's (so a threshold already announced in the funding epoch, at admission or by another settlement,
is not announced again; a settlement answered from its marker appends nothing). Returns cross nothing.

The final price of the request is its admission price ``− given back + overrun burned``: what its usage
row (version 2) carries, so the reconcile identity holds (the debt record is one of the held records). The
settle call reads no rollover and no policy. Markers are deleted by :func:`forget`-style cleanup
(``Limiter.forget_settled``) once the row carrying the final price is durable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from tollway.credits.charges import MODEL_GRADUATED, MODEL_PER_UNIT, RealTimeCharge, TierMicros
from tollway.ratelimit.money import Money, MoneyAlerts

DEBT_GRANT: Final = "debt"
"""The grant record that holds a negative balance left by settled overruns (priority ``DEBT_PRIORITY``)."""
DEBT_PRIORITY: Final = -1

SettleStatus = Literal["settled", "already", "unknown"]


def charge_from_arg(name: str, period_start_ms: int, period_end_ms: int, arg: str) -> RealTimeCharge:
    """A charge back from its script argument (``RealTimeCharge.script_arg``)."""
    model, _, rest = arg.partition(" ")
    if int(model) == MODEL_PER_UNIT:
        return RealTimeCharge(name, "per_unit", period_start_ms, period_end_ms, unit=int(rest))
    if int(model) == MODEL_GRADUATED:
        tiers = []
        for part in rest.split(","):
            up, unit, flat = (int(x) for x in part.split(":"))
            tiers.append(TierMicros(up or None, unit, flat))
        return RealTimeCharge(name, "graduated", period_start_ms, period_end_ms, tiers=tuple(tiers))
    size, package, free, up = (int(x) for x in rest.split(" "))
    return RealTimeCharge(
        name,
        "package",
        period_start_ms,
        period_end_ms,
        package_size=size,
        package=package,
        free_units=free,
        round_up=up == 1,
    )


@dataclass(frozen=True, slots=True)
class ReservedCharge:
    charge: RealTimeCharge
    quantity: int
    price: int


@dataclass(frozen=True, slots=True)
class ReservedAlerts:
    """The money alerts of the check that reserved, kept in its record for the settlement's events:
    ``alerts`` (unit and ``balance.low`` thresholds) and the spend cap it was checked against (``cap``
    micro-units, None: none; ``hard``)."""

    alerts: MoneyAlerts
    cap: int | None = None
    hard: bool = False

    def encode(self) -> str:
        low = ",".join(str(t) for t in self.alerts.low) or "-"
        cap = -1 if self.cap is None else self.cap
        return f"{self.alerts.unit} {cap} {int(self.hard and self.cap is not None)} {low}"

    @classmethod
    def decode(cls, fields: Sequence[str]) -> ReservedAlerts:
        unit, cap, hard, low = fields
        thresholds = () if low == "-" else tuple(int(t) for t in low.split(","))
        return cls(MoneyAlerts(unit, thresholds), None if int(cap) < 0 else int(cap), hard == "1")

    @classmethod
    def of(cls, money: Money) -> ReservedAlerts | None:
        """What a record of a check with ``money`` keeps (None: the check has no money alerts)."""
        if money.alerts is None:
            return None
        cap = money.spend_cap
        return cls(money.alerts, None if cap is None else cap.cap, cap is not None and cap.hard)


@dataclass(frozen=True, slots=True)
class Reservation:
    """An open reservation. ``cap_period``: the spend counter's period (None: the check had no cap).
    ``admitted_price``: the whole price the check burned (reserved charges and those known at admission).
    ``alerts``: the money alerts of its settlement (None: none)."""

    row_id: str
    created_ms: int
    overrun: int
    prepaid: bool
    cap_period: tuple[int, int] | None
    charges: tuple[ReservedCharge, ...]
    admitted_price: int = 0
    alerts: ReservedAlerts | None = None

    @property
    def price(self) -> int:
        return sum(c.price for c in self.charges)

    def encode(self) -> str:
        cap = self.cap_period or (-1, -1)
        head = f"R {self.created_ms} {self.overrun} {int(self.prepaid)} {cap[0]} {cap[1]} {self.admitted_price}"
        if self.alerts is not None:
            head += " " + self.alerts.encode()
        lines = [head]
        for c in self.charges:
            ch = c.charge
            lines.append(f"{ch.name} {ch.period_start_ms} {ch.period_end_ms} {c.quantity} {c.price} {ch.script_arg}")
        return "\n".join(lines)

    @classmethod
    def decode(cls, row_id: str, text: str) -> Reservation:
        head, *rest = text.split("\n")
        kind, created, overrun, prepaid, cap_start, cap_end, admitted, *tail = head.split(" ")
        if kind != "R":
            raise ValueError(f"reservation {row_id!r} is not open")
        charges = []
        for line in rest:
            name, start, end, quantity, price, arg = line.split(" ", 5)
            charge = charge_from_arg(name, int(start), int(end), arg)
            charges.append(ReservedCharge(charge, int(quantity), int(price)))
        cap = None if int(cap_start) < 0 else (int(cap_start), int(cap_end))
        alerts = ReservedAlerts.decode(tail) if tail else None
        return cls(row_id, int(created), int(overrun), prepaid == "1", cap, tuple(charges), int(admitted), alerts)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of settling one reservation. ``price``: the reserved charges' final price (the request's
    usage row carries its admission price − ``back`` + ``burned``: charges known at admission included);
    ``back``: given back; ``burned``: overrun burned; ``forgiven``: overrun past the allowance, not burned.
    ``status``: ``settled`` by this call, ``already`` by an earlier one (same numbers), ``unknown`` (no
    such reservation: all numbers 0). ``total``: the request's final price, what its usage row carries
    (the admission's whole price − ``back`` + ``burned``)."""

    row_id: str
    status: SettleStatus
    price: int = 0
    back: int = 0
    burned: int = 0
    forgiven: int = 0
    settled_ms: int = 0
    total: int = 0

    def encode(self) -> str:
        return f"S {self.price} {self.back} {self.burned} {self.forgiven} {self.settled_ms} {self.total}"

    @classmethod
    def decode(cls, row_id: str, text: str, status: SettleStatus = "already") -> Settlement:
        kind, price, back, burned, forgiven, at, total = text.split(" ")
        if kind != "S":
            raise ValueError(f"reservation {row_id!r} is not settled")
        return cls(row_id, status, int(price), int(back), int(burned), int(forgiven), int(at), int(total))


def check_reservation(money: Money) -> None:
    """ValueError unless a check with reserved charges names its row id."""
    if money.reserves and not money.row_id:
        raise ValueError("a check with a reservation needs the usage row id (Money.for_row)")


def checked_actual(record: Reservation, actual: Sequence[int] | Mapping[str, int]) -> tuple[int, ...]:
    """One actual quantity per reserved charge of ``record``, in its order: ``actual`` in that order, or
    by charge name (a charge it does not name: its reserved quantity, so its reservation stands).
    ValueError for a wrong number of quantities or a negative one."""
    if isinstance(actual, Mapping):
        quantities = tuple(actual.get(c.charge.name, c.quantity) for c in record.charges)
    else:
        quantities = tuple(actual)
    if len(quantities) != len(record.charges):
        raise ValueError(f"{len(quantities)} actual quantities for {len(record.charges)} reserved charges")
    if any(q < 0 for q in quantities):
        raise ValueError("actual quantities must be >= 0")
    return quantities


def reservations_key(prefix: str, partition: str) -> str:
    """The customer's reservations hash: usage row id -> open record or settlement marker."""
    return f"{prefix}rv:{{{partition}}}"
