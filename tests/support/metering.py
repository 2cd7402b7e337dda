"""Loading a Tollway spool into this test process's embedded ClickHouse, and reading the usage table."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.chdb_engine import ChdbDatabase
from tollway.usage.clickhouse_sink import ClickHouseSink
from tollway.usage.loader import UsageLoader
from tollway.usage.row import COLUMNS
from tollway.warehouse.migrations import Migrator

USAGE_COLUMNS = (
    "request_id, envoy_request_id, toUnixTimestamp64Milli(ts), customer_id, subject, plan, feature, route, method, "
    "status, "
    "toString(outcome), reason, limits_checked, request_bytes, response_bytes, upstream_latency_ms, meters, version, "
    "price_micros, toString(balance_unit)"
)
FIELDS = tuple("ts_ms" if name == "ts" else name for name in COLUMNS)  # ts is read back as epoch ms


class SpoolLoader:
    """Drains ``spool_dir`` into ``database.usage`` (migrated here) with the production loader."""

    def __init__(self, db: ChdbDatabase, spool_dir: Path) -> None:
        self.client, self.database = db
        Migrator(self.client, self.database).migrate()
        self.sink = ClickHouseSink("chdb://", self.database, client=self.client)
        self.loader = UsageLoader(spool_dir, self.sink)

    def drain(self) -> int:
        return asyncio.run(self.loader.drain())

    def row_list(self, where: str = "1") -> list[dict[str, Any]]:
        """Deduplicated usage rows (``FINAL``)."""
        result = self.client.query(f"SELECT {USAGE_COLUMNS} FROM {self.database}.usage FINAL WHERE {where}")
        return [dict(zip(FIELDS, row, strict=True)) for row in result.result_rows]

    def rows(self, where: str = "1") -> dict[str, dict[str, Any]]:
        """Deduplicated usage rows (``FINAL``) by Envoy's request id (the x-request-id a client saw; unique
        in these tests' Envoy configs), failing if two rows share one: a request counted twice."""
        rows = self.row_list(where)
        by_envoy_id = {row["envoy_request_id"]: row for row in rows}
        assert len(by_envoy_id) == len(rows), "two usage rows for one Envoy request id"
        return by_envoy_id

    def scalar(self, sql: str) -> Any:
        return self.client.query(sql.format(db=self.database)).result_rows[0][0]

    def wait_for(
        self, done: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 15.0
    ) -> dict[str, dict[str, Any]]:
        """Drain and read until ``done(rows)`` (Envoy flushes its access log every 200 ms)."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            rows = self.rows()
            if done(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)

    def close(self) -> None:
        self.sink.close()
