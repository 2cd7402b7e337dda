"""Events and delivery attempts in ClickHouse (tables ``events`` and ``webhook_deliveries``, migration 0009).

Writing: the dispatcher appends one JSON row per event it queues and per attempt it settles to a Redis list
(``queue.history_key``) in the same atomic call that queues or settles — so the history is as durable as
the queue and ClickHouse being away delays nothing. :class:`HistoryWriter` moves that list into ClickHouse
in batches (one writer at a time, under a lock key): read the head, insert, then trim what was inserted.
Killed between insert and trim, the next writer inserts the same rows again, and each table's
ReplacingMergeTree key (event id; endpoint, event and attempt id) keeps one: exactly once by table keys.

Reading (for the admin API and the CLI): events by customer, type and time range, newest first, with
keyset pagination; one event; the attempts of an endpoint (optionally of one event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from tollway.notifications.events import Event
from tollway.notifications.queue import history_key, history_lock_key
from tollway.redis_types import RedisClient
from tollway.warehouse.connection import insert_json_rows, query_rows
from tollway.warehouse.errors import WarehouseError

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH = 5000
MAX_PAGE = 1000


class Runs(Protocol):
    """Something that runs ``fn(client, database)`` on its ClickHouse client (``ClickHouseSink.read``,
    ``admin.warehouse_access.Warehouse.run``)."""

    def __call__(self, fn: Callable[[Any, str], T]) -> Awaitable[T]: ...


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table_rows(rows: Sequence[str]) -> dict[str, bytes]:
    """The buffer's JSON rows as JSONEachRow batches per table (unknown or corrupt rows dropped, logged)."""
    out: dict[str, list[str]] = {"events": [], "webhook_deliveries": []}
    for raw in rows:
        try:
            row = json.loads(raw)
            table = row.pop("t")
            row["ts"] = _stamp(int(row["ts"]))
            out[table].append(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("webhook history: a row that is not one dropped (%s): %.200s", exc, raw)
    return {table: ("\n".join(lines) + "\n").encode() for table, lines in out.items() if lines}


class HistoryWriter:
    """Moves the history buffer into ClickHouse. ``runs()``: how to reach ClickHouse now (None: not yet,
    e.g. another process holds the embedded engine until this one takes the loader over)."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        runs: Callable[[], Runs | None],
        *,
        interval_s: float = 1.0,
        batch: int = BATCH,
        lock_ms: int = 60_000,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._runs = runs
        self._interval_s = interval_s
        self._batch = batch
        self._lock_ms = lock_ms
        self._token = secrets.token_hex(8)
        self.rows_written = 0
        self.failing = ""

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                moved = await self.flush_once()
                if self.failing:
                    log.warning("webhook history: ClickHouse answers again")
                self.failing = ""
            except WarehouseError as exc:
                if not self.failing:
                    log.error("webhook history: cannot write to ClickHouse (rows wait in Redis): %s", exc)
                self.failing = str(exc)
                moved = 0
            if moved < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        await self._release()

    async def flush_once(self) -> int:
        """Insert the head of the buffer and trim it; the rows moved (0: none, no ClickHouse, or another
        writer holds the lock)."""
        runs = self._runs()
        if runs is None:
            return 0
        lock = history_lock_key(self._prefix)
        holder = await self._redis.get(lock)
        if holder not in (None, self._token):
            return 0
        if not await self._redis.set(lock, self._token, px=self._lock_ms, nx=holder is None, xx=holder is not None):
            return 0
        key = history_key(self._prefix)
        rows = [str(r) for r in await self._redis.lrange(key, 0, self._batch - 1)]
        if not rows:
            return 0
        batches = table_rows(rows)

        def insert(client: Any, database: str) -> None:
            for table, data in batches.items():
                insert_json_rows(client, database, table, data)

        await runs(insert)
        await self._redis.ltrim(key, len(rows), -1)
        self.rows_written += len(rows)
        return len(rows)

    async def _release(self) -> None:
        lock = history_lock_key(self._prefix)
        try:
            if await self._redis.get(lock) == self._token:
                await self._redis.delete(lock)
        except Exception as exc:  # shutting down: the lock expires on its own
            log.debug("webhook history: lock not released: %s", exc)


# --- reading --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventQuery:
    customer_id: str | None = None
    types: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 100
    before: tuple[int, str] | None = None  # keyset cursor: (ts ms, id) of the last row of the previous page


def _event(row: Sequence[Any]) -> Event:
    event_id, event_type, ts, customer, data = row
    ms = int(ts.replace(tzinfo=UTC).timestamp() * 1000) if isinstance(ts, datetime) else int(ts)
    return Event(event_id, event_type, ms, customer, json.loads(data) if data else {})


def query_events(client: Any, database: str, q: EventQuery) -> list[Event]:
    """Events newest first (ties by id, descending) matching ``q``; at most ``q.limit``."""
    where = ["1"]
    params: dict[str, Any] = {"db": database, "limit": max(1, min(q.limit, MAX_PAGE))}
    if q.customer_id is not None:
        where.append("customer_id = {customer:String}")
        params["customer"] = q.customer_id
    if q.types:
        where.append("type IN {types:Array(String)}")
        params["types"] = list(q.types)
    if q.since_ms is not None:
        where.append("ts >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
        params["since"] = q.since_ms
    if q.until_ms is not None:
        where.append("ts < fromUnixTimestamp64Milli({until:Int64}, 'UTC')")
        params["until"] = q.until_ms
    if q.before is not None:
        where.append("(toUnixTimestamp64Milli(ts), id) < ({bts:Int64}, {bid:String})")
        params["bts"], params["bid"] = q.before
    sql = (
        "SELECT id, type, toUnixTimestamp64Milli(ts), customer_id, data FROM {db:Identifier}.events FINAL "  # noqa: S608
        f"WHERE {' AND '.join(where)} ORDER BY ts DESC, id DESC LIMIT {{limit:UInt32}}"
    )
    return [_event(row) for row in query_rows(client, sql, params)]


def get_event(client: Any, database: str, event_id: str) -> Event | None:
    rows = query_rows(
        client,
        "SELECT id, type, toUnixTimestamp64Milli(ts), customer_id, data FROM {db:Identifier}.events FINAL "
        "WHERE id = {id:String} LIMIT 1",
        {"db": database, "id": event_id},
    )
    return _event(rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    endpoint_id: str
    event_id: str
    attempt_id: str
    attempt: int
    ts_ms: int
    status: int
    outcome: str
    duration_ms: int
    error: str

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "event_id": self.event_id,
            "attempt": self.attempt,
            "at": datetime.fromtimestamp(self.ts_ms / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "status": self.status,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


def query_attempts(
    client: Any,
    database: str,
    endpoint_id: str,
    event_id: str | None = None,
    limit: int = 100,
    before: tuple[int, str] | None = None,
) -> list[AttemptRow]:
    """Attempts to ``endpoint_id`` (of ``event_id`` only, if given), newest first; at most ``limit``."""
    where = ["endpoint_id = {ep:String}"]
    params: dict[str, Any] = {"db": database, "ep": endpoint_id, "limit": max(1, min(limit, MAX_PAGE))}
    if event_id is not None:
        where.append("event_id = {ev:String}")
        params["ev"] = event_id
    if before is not None:
        where.append("(toUnixTimestamp64Milli(ts), attempt_id) < ({bts:Int64}, {bid:String})")
        params["bts"], params["bid"] = before
    sql = (
        "SELECT endpoint_id, event_id, attempt_id, attempt, toUnixTimestamp64Milli(ts), status, outcome, duration_ms, "  # noqa: S608
        f"error FROM {{db:Identifier}}.webhook_deliveries FINAL WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, attempt_id DESC LIMIT {limit:UInt32}"
    )
    return [
        AttemptRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]), str(r[6]), int(r[7]), str(r[8]))
        for r in query_rows(client, sql, params)
    ]
