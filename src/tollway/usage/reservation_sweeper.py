"""The reservation sweeper (``tollway meter``, supervised): reservations the access log did not settle, and
settlements whose row never carried the settled price, found and repaired from the usage rows
(docs/credits.md#reservations, "Crash recovery").

Every ``interval`` it reads every customer's reservations hash. An entry older than the settle timeout
(an open record by its creation time, a settlement marker by its settling time) is matched with its
usage rows in ClickHouse (by row id, every version):

* **open, a completed row (version ≥ 2) exists**: the access-log entry was written but not settled
  (Redis was unreachable, or the meter died in between): settled with the row's quantities; a correction
  row (version 3, reason ``reservation-settled``) carries the settled price.
* **open, only the decision row (version 1)**: the response was never reported (a lost access-log
  entry, the meter killed): the reservation is closed at its reserve (nothing back, nothing more); a
  version-3 row (reason ``reservation-closed-at-reserve``) says so.
* **open, no row at all**: the checking process died between Redis and the spool, so the request was
  never answered: the reservation is **released** (every reserved quantity back, logged).
* **a marker**: the row's latest price must be the settled total (``Settlement.total``: the admission's
  whole price, kept in the record, − given back + overrun burned); if it is not (the meter died between
  settling and writing the row), a correction row (the next version, reason ``reservation-corrected``)
  carries it; once the latest row is right the marker is deleted.

A row not in ClickHouse yet because the loader is behind is indistinguishable from a lost one, so the
timeout (``TOLLWAY_RESERVATION_TIMEOUT_S``, default 900 s) must exceed the loader's delay by a margin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

from tollway.plans.catalog import CompiledCatalog
from tollway.ratelimit.reservations import Reservation, Settlement
from tollway.usage.row import UsageRow, encode_row
from tollway.usage.settlement import Settler, quantity, reserved_meters

log = logging.getLogger(__name__)

SETTLED_FROM_ROW: Final = "reservation-settled"
CLOSED_AT_RESERVE: Final = "reservation-closed-at-reserve"
CORRECTED: Final = "reservation-corrected"


class RowLookup(Protocol):
    async def rows(self, customer_id: str, row_ids: Sequence[str]) -> Mapping[str, UsageRow]:
        """The latest version of each row asked for that exists (ClickHouse may have merged the others)."""
        ...


class ReservationStore(Settler, Protocol):
    async def held_reservations(self) -> dict[str, dict[str, str]]: ...

    async def forget_settled(self, partition: str, row_id: str) -> bool: ...


@dataclass
class SweepReport:
    settled: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


def _age_ms(text: str) -> int:
    """The creation time of an open record, the settling time of a marker."""
    head = text.split("\n", 1)[0].split(" ")
    return int(head[1]) if head[0] == "R" else int(head[-1])


async def sweep(
    store: ReservationStore,
    lookup: RowLookup,
    catalog: CompiledCatalog | None,
    append: Callable[[bytes], bool],
    now_ms: int,
    timeout_ms: int,
) -> SweepReport:
    """One pass (module docstring). ``append`` writes correction rows to the spool."""
    report = SweepReport()
    for customer, held in (await store.held_reservations()).items():
        due = {row_id: text for row_id, text in held.items() if _age_ms(text) <= now_ms - timeout_ms}
        if not due:
            continue
        rows = await lookup.rows(customer, sorted(due))
        lines: list[bytes] = []
        for row_id, text in sorted(due.items()):
            found = rows.get(row_id)
            if text.startswith("R"):
                record = Reservation.decode(row_id, text)
                if found is None:
                    await store.settle(customer, row_id, {c.charge.name: 0 for c in record.charges}, now_ms)
                    log.warning("reservation %s of %s released: the request has no usage row", row_id, customer)
                    report.released.append(row_id)
                    continue
                latest = found
                if latest.version >= 2:
                    reserved = reserved_meters(catalog, latest.plan, latest.feature)
                    actual = {
                        r.charge_id: quantity(latest.meters[r.meter]) for r in reserved if r.meter in latest.meters
                    }
                    reason = SETTLED_FROM_ROW
                    report.settled.append(row_id)
                else:
                    actual = {}
                    reason = CLOSED_AT_RESERVE
                    report.closed.append(row_id)
                settled = await store.settle(customer, row_id, actual, now_ms)
                lines.append(_correction(found, settled, reason))
            else:
                settled = Settlement.decode(row_id, text)
                if found is None or found.price_micros == settled.total:
                    await store.forget_settled(customer, row_id)
                    report.forgotten.append(row_id)
                    continue
                lines.append(_correction(found, settled, CORRECTED))
                report.corrected.append(row_id)
        if lines and not append(b"".join(lines)):
            log.warning("reservation sweeper: the spool refused %d correction rows (retried next sweep)", len(lines))
    return report


def _correction(latest: UsageRow, settled: Settlement, reason: str) -> bytes:
    """The next version of the row (at least 3), with the settled price: ``Settlement.total`` (the
    admission's whole price − given back + overrun burned), independent of which versions remain."""
    version = max(latest.version + 1, 3)
    return encode_row(latest._replace(version=version, price_micros=settled.total, reason=reason))


class ReservationSweeper:
    """The background task of ``tollway meter`` (started supervised): a pass every ``interval_s`` while
    this process holds the ClickHouse client (``reader()`` not None)."""

    def __init__(
        self,
        store: ReservationStore,
        reader: Callable[[], Callable[[Callable[[Any, str], Any]], Awaitable[Any]] | None],
        catalog: Callable[[], CompiledCatalog | None],
        append: Callable[[bytes], bool],
        now_ms: Callable[[], int],
        timeout_s: float,
        interval_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._reader = reader
        self._catalog = catalog
        self._append = append
        self._now_ms = now_ms
        self._timeout_ms = int(timeout_s * 1000)
        self._interval_s = interval_s
        self._sleep = sleep

    async def pass_once(self) -> SweepReport:
        read = self._reader()
        if read is None:
            return SweepReport()
        lookup = ClickHouseRows(read)
        return await sweep(self._store, lookup, self._catalog(), self._append, self._now_ms(), self._timeout_ms)

    async def run(self) -> None:
        await run_sweeper(self.pass_once, self._interval_s, self._sleep)


async def run_sweeper(
    pass_once: Callable[[], Awaitable[SweepReport]], interval_s: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Background: a pass every ``interval_s`` (until cancelled; supervised, so a failing pass restarts)."""
    while True:
        await sleep(interval_s)
        report = await pass_once()
        if report.settled or report.closed or report.released or report.corrected:
            log.info(
                "reservation sweep: %d settled from rows, %d closed at reserve, %d released, %d corrected",
                len(report.settled),
                len(report.closed),
                len(report.released),
                len(report.corrected),
            )


_COLUMNS: Final = (
    "request_id, version, toUnixTimestamp64Milli(ts), subject, plan, feature, route, method, status, outcome, "
    "reason, limits_checked, request_bytes, response_bytes, upstream_latency_ms, meters, envoy_request_id, "
    "price_micros, balance_unit"
)


class ClickHouseRows:
    """``RowLookup`` on the usage table (every version of the rows asked for)."""

    def __init__(self, read: Callable[[Callable[[Any, str], Any]], Awaitable[Any]]) -> None:
        self._read = read

    async def rows(self, customer_id: str, row_ids: Sequence[str]) -> Mapping[str, UsageRow]:
        from tollway.warehouse.connection import check_identifier, query_rows

        def fetch(client: Any, database: str) -> list[Sequence[Any]]:
            db = check_identifier(database)
            return list(
                query_rows(
                    client,
                    f"SELECT {_COLUMNS} FROM {db}.usage "  # noqa: S608 (checked identifier)
                    "WHERE customer_id = {customer:String} AND request_id IN {ids:Array(String)}",
                    {"customer": customer_id, "ids": list(row_ids)},
                )
            )

        found: dict[str, UsageRow] = {}
        for r in await self._read(fetch):
            row = UsageRow(
                str(r[0]),
                int(r[2]),
                customer_id,
                str(r[3]),
                str(r[4]),
                str(r[5]),
                str(r[6]),
                str(r[7]),
                int(r[8]),
                "admitted" if str(r[9]) == "admitted" else "refused",
                str(r[10]),
                bool(r[11]),
                int(r[12]),
                int(r[13]),
                float(r[14]),
                {str(k): Decimal(str(v)).normalize() for k, v in dict(r[15]).items()},
                int(r[1]),
                str(r[16]),
                int(r[17]),
                str(r[18]),
            )
            seen = found.get(row.request_id)
            if seen is None or seen.version < row.version:
                found[row.request_id] = row
        return found
