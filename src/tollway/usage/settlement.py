"""Settling reservations from completed usage rows (issue 14, item 3; docs/credits.md#reservations).

The metering process (``tollway meter``) completes each admitted request's row from Envoy's access log,
with the body meter's values. For a request of a prepaid plan that reserves for one of its meters, the
reservation keyed by the row id is settled with the row's actual quantities **before** the completed row
(version 2) is written, and the row carries the settled (final) price:

1. settle in Redis (exactly once; a repeated settle answers the first outcome: ``ratelimit.reservations``);
2. write the version-2 row with ``price_micros`` = the settled total (the admission's whole price − given
   back + overrun burned; ``Settlement.total``).

A crash between 1 and 2 leaves Redis settled and the row at version 1 (the reserved price). A crash
before 1, a lost access-log entry or Redis unreachable at 1 leaves the reservation open. Both are found
by the reservation sweeper (``sweep``), from the reservations hash: an open record or a marker older than
the settle timeout is matched with its usage row in ClickHouse and the row is corrected (version 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import UnknownPlan
from tollway.ratelimit.errors import LimiterUnavailable
from tollway.ratelimit.reservations import Settlement
from tollway.usage.row import UsageRow

log = logging.getLogger(__name__)


class Settler(Protocol):
    async def settle(
        self, partition: str, row_id: str, actual: Sequence[int] | Mapping[str, int], now_ms: int
    ) -> Settlement: ...


@dataclass(frozen=True, slots=True)
class ReservedMeter:
    charge_id: str
    meter: str


def reserved_meters(catalog: CompiledCatalog | None, plan: str, feature: str) -> tuple[ReservedMeter, ...]:
    """The charges of ``plan`` that reserve for ``feature``'s requests, with their meters (none when the
    catalog no longer knows the plan: the reservation then closes at its reserve)."""
    if catalog is None or not plan:
        return ()
    try:
        terms = catalog.money_terms(plan)
    except UnknownPlan:
        return ()
    if terms is None or not terms.prepaid:
        return ()
    return tuple(
        ReservedMeter(b.charge_id, b.meter) for b in terms.burning if b.per == "reserve" and b.quantity(feature, 1) > 0
    )


def quantity(value: int | Decimal) -> int:
    """A meter's value as a whole quantity (a fraction counts as a whole unit)."""
    if isinstance(value, int):
        return value
    return int(value.to_integral_value(ROUND_CEILING))


class ReservationSettler:
    """Settles the reservation of each completed row that has one. ``settled``/``already``/``unknown``/
    ``failed`` count the outcomes (``failed``: Redis could not be reached; the sweeper settles it)."""

    def __init__(
        self, limiter: Settler, catalog: Callable[[], CompiledCatalog | None], now_ms: Callable[[], int]
    ) -> None:
        self._limiter = limiter
        self._catalog = catalog
        self._now_ms = now_ms
        self.settled = 0
        self.already = 0
        self.unknown = 0
        self.failed = 0

    async def settled_row(self, row: UsageRow) -> UsageRow:
        """``row`` with its settled price (the row unchanged when it has no reservation, or when it could
        not be settled now)."""
        if row.outcome != "admitted" or not row.balance_unit:
            return row
        reserved = reserved_meters(self._catalog(), row.plan, row.feature)
        if not reserved:
            return row
        actual = {r.charge_id: quantity(row.meters[r.meter]) for r in reserved if r.meter in row.meters}
        try:
            settlement = await self._limiter.settle(row.customer_id, row.request_id, actual, self._now_ms())
        except (LimiterUnavailable, ValueError) as exc:
            self.failed += 1
            log.warning("reservation %s not settled now (the sweeper will): %s", row.request_id, exc)
            return row
        if settlement.status == "unknown":
            self.unknown += 1
            return row
        if settlement.status == "settled":
            self.settled += 1
        else:
            self.already += 1
        return row._replace(price_micros=settlement.total)
