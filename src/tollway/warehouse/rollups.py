"""Exact hourly rollups: ``usage_hourly`` recomputed slice by slice from ``usage FINAL``.

An insert-time materialized view would count both versions of a request and every replay, so the
rollup is refreshed instead. ``refresh_rollups``:

1. finds the dirty (customer_id, hour) slices: those with a ``usage`` row loaded at or after the
   watermark minus a safety margin (rows whose insert began before the last refresh but finished
   after it). This scan reads plain ``usage`` on purpose: it only collects slice keys, using the
   minmax index on ``loaded_at``; every number is computed from ``usage FINAL``;
2. recomputes each slice's groups (plan, feature, meter, status_class) from ``usage FINAL`` and writes
   them with a new ``refreshed_at`` (the table's version column);
3. writes ``requests = 0, quantity = 0`` for the slice's groups that no longer exist (a request's
   status class moved from 'none' to '2xx' when its version-2 row arrived);
4. stores the watermark (the newest ``loaded_at`` seen) in ``rollup_state`` so a restart resumes.

So ``usage_hourly FINAL WHERE requests > 0`` is exact for every refreshed slice. Run one refresher
per database at a time. Synchronous (clickhouse-connect); call it from a thread in async code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from tollway.clock import Clock, SystemClock
from tollway.warehouse.connection import check_identifier, execute, query_rows

ROLLUP_NAME = "usage_hourly"
DEFAULT_MARGIN = timedelta(minutes=2)
DEFAULT_BATCH_SLICES = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SLICES = "Array(Tuple(String, DateTime('UTC')))"
_TS = "DateTime64(3, 'UTC')"


@dataclass(frozen=True)
class RollupState:
    """The last refresh: rows loaded up to ``watermark`` are rolled up; ``refreshed_at`` its version."""

    watermark: datetime
    refreshed_at: datetime
    slices: int


@dataclass(frozen=True)
class RefreshResult:
    """``since``: the bound asked for (the scan started ``margin`` earlier); ``watermark``: where the next
    refresh resumes; ``slices``: (customer_id, hour) slices recomputed; ``refreshed_at``: their version."""

    since: datetime
    watermark: datetime
    slices: int
    refreshed_at: datetime


def format_ts(moment: datetime) -> str:
    """``moment`` as ClickHouse reads a ``DateTime64(3, 'UTC')``: ``2026-11-25 11:35:46.123`` (UTC)."""
    if moment.tzinfo is None:
        raise ValueError(f"a timezone-aware datetime is needed, got {moment!r}")
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S}.{utc.microsecond // 1000:03d}"


def parse_ts(text: str) -> datetime:
    """The inverse of ``format_ts`` (also reads ClickHouse's ``toString`` of a DateTime/DateTime64)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _truncate_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def read_state(client: Client, database: str) -> RollupState | None:
    """The stored watermark of ``usage_hourly``, or ``None`` before the first refresh."""
    rows = query_rows(
        client,
        f"""
        SELECT toString(watermark), toString(refreshed_at), slices
        FROM {check_identifier(database)}.rollup_state FINAL WHERE name = {{name:String}}
        """,  # noqa: S608 (a checked identifier)
        {"name": ROLLUP_NAME},
    )
    if not rows:
        return None
    watermark, refreshed_at, slices = rows[0]
    return RollupState(parse_ts(str(watermark)), parse_ts(str(refreshed_at)), int(slices))


def _write_state(client: Client, database: str, state: RollupState) -> None:
    execute(
        client,
        f"INSERT INTO {database}.rollup_state (name, watermark, slices, refreshed_at) "
        f"SELECT {{name:String}}, {{watermark:{_TS}}}, {{slices:UInt64}}, {{refreshed_at:{_TS}}}",
        {
            "name": ROLLUP_NAME,
            "watermark": format_ts(state.watermark),
            "slices": state.slices,
            "refreshed_at": format_ts(state.refreshed_at),
        },
    )


def dirty_slices(client: Client, database: str, since: datetime) -> tuple[list[tuple[str, str]], datetime | None]:
    """The (customer_id, hour) slices with rows loaded at or after ``since``, and the newest ``loaded_at``."""
    rows = query_rows(
        client,
        f"""
        SELECT customer_id, toString(toStartOfHour(ts)) AS hour, toString(max(loaded_at))
        FROM {check_identifier(database)}.usage
        WHERE loaded_at >= {{since:{_TS}}}
        GROUP BY customer_id, hour
        ORDER BY customer_id, hour
        """,  # noqa: S608 (a checked identifier; plain usage on purpose: only slice keys, see above)
        {"since": format_ts(max(since, EPOCH))},
    )
    slices = [(str(customer), str(hour)) for customer, hour, _ in rows]
    newest = max((parse_ts(str(loaded)) for _, _, loaded in rows), default=None)
    return slices, newest


def _slice_filter(batch: Sequence[tuple[str, str]]) -> dict[str, object]:
    hours = [parse_ts(hour) for _, hour in batch]
    return {
        "slices": list(batch),
        "customers": sorted({customer for customer, _ in batch}),
        "lo": format_ts(min(hours)),
        "hi": format_ts(max(hours) + timedelta(hours=1)),
    }


def _recompute(client: Client, database: str, batch: Sequence[tuple[str, str]], refreshed_at: datetime) -> None:
    """Steps 2 and 3 for one batch of slices, both versioned ``refreshed_at``."""
    parameters = {**_slice_filter(batch), "refreshed_at": format_ts(refreshed_at)}
    execute(
        client,
        f"""
        INSERT INTO {database}.usage_hourly
            (hour, customer_id, plan, feature, meter, status_class, requests, quantity, refreshed_at)
        SELECT
            toStartOfHour(ts) AS hour,
            customer_id,
            plan,
            feature,
            meter_key AS meter,
            if(status = 0, 'none', concat(toString(intDiv(status, 100)), 'xx')) AS status_class,
            count() AS requests,
            sum(meter_quantity) AS quantity,
            {{refreshed_at:{_TS}}} AS refreshed_at
        FROM {database}.usage FINAL
        LEFT ARRAY JOIN mapKeys(meters) AS meter_key, mapValues(meters) AS meter_quantity
        WHERE customer_id IN {{customers:Array(String)}}
          AND ts >= {{lo:{_TS}}} AND ts < {{hi:{_TS}}}
          AND (customer_id, toStartOfHour(ts)) IN {{slices:{_SLICES}}}
        GROUP BY hour, customer_id, plan, feature, meter, status_class
        """,  # noqa: S608 (database is a checked identifier; values are bound parameters)
        parameters,
    )
    # Groups of these slices whose newest row predates this refresh no longer exist in usage: zero them.
    # FINAL picks each group's newest row before WHERE filters (no PREWHERE with FINAL).
    execute(
        client,
        f"""
        INSERT INTO {database}.usage_hourly
            (hour, customer_id, plan, feature, meter, status_class, requests, quantity, refreshed_at)
        SELECT hour, customer_id, plan, feature, meter, status_class, 0, 0, {{refreshed_at:{_TS}}}
        FROM {database}.usage_hourly FINAL
        WHERE customer_id IN {{customers:Array(String)}}
          AND hour >= {{lo:{_TS}}} AND hour < {{hi:{_TS}}}
          AND (customer_id, hour) IN {{slices:{_SLICES}}}
          AND refreshed_at < {{refreshed_at:{_TS}}}
          AND requests > 0
        SETTINGS optimize_move_to_prewhere_if_final = 0
        """,  # noqa: S608 (database is a checked identifier; values are bound parameters)
        parameters,
    )


def refresh_rollups(
    client: Client,
    database: str,
    since_loaded_at: datetime | None = None,
    *,
    margin: timedelta = DEFAULT_MARGIN,
    batch_slices: int = DEFAULT_BATCH_SLICES,
    clock: Clock | None = None,
) -> RefreshResult:
    """Bring ``usage_hourly`` up to date for rows loaded since ``since_loaded_at`` (default: the stored
    watermark, or everything on the first run). Idempotent: a second call recomputes the same numbers.

    Raises ``WarehouseUnavailable`` / ``WarehouseQueryError`` (``tollway.warehouse.errors``).
    """
    check_identifier(database)
    if batch_slices < 1:
        raise ValueError("batch_slices must be at least 1")
    state = read_state(client, database)
    since = since_loaded_at if since_loaded_at is not None else (state.watermark if state else EPOCH)
    if since.tzinfo is None:
        raise ValueError("since_loaded_at must be timezone-aware")
    now = _truncate_ms((clock or SystemClock()).now().astimezone(UTC))
    # The version of this refresh's rows must beat every earlier refresh's, whatever the wall clock does.
    refreshed_at = max(now, state.refreshed_at + _MS) if state else now
    previous = state.watermark if state else EPOCH
    # Recorded first, so a refresh that dies halfway still leaves the next one a higher version.
    _write_state(client, database, RollupState(previous, refreshed_at, 0))

    slices, newest = dirty_slices(client, database, since - margin)
    for start in range(0, len(slices), batch_slices):
        _recompute(client, database, slices[start : start + batch_slices], refreshed_at)

    watermark = max(previous, _truncate_ms(since.astimezone(UTC)), newest or EPOCH)
    _write_state(client, database, RollupState(watermark, refreshed_at, len(slices)))
    return RefreshResult(since=since, watermark=watermark, slices=len(slices), refreshed_at=refreshed_at)
