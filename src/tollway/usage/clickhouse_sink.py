"""The loader's ClickHouse adapter: inserts JSONEachRow batches into ``<database>.usage`` and refreshes the
hourly rollups, on one dedicated thread (clickhouse-connect and chdb are synchronous; one thread keeps
the event loop free and the embedded engine single-threaded from Python's side).

The embedded engine (``chdb://``) belongs to Tollway, so its migrations are applied on first connect;
a ClickHouse server is migrated explicitly by the operator (``tollway db migrate``) and the loader
waits, retrying, until the table exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tollway.warehouse.connection import connect, insert_json_rows, query_rows
from tollway.warehouse.errors import WarehouseError, WarehouseUnavailable
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.rollups import refresh_rollups

T = TypeVar("T")

log = logging.getLogger(__name__)


class ClickHouseSink:
    def __init__(self, dsn: str, database: str, *, rollups: bool = True, client: Any = None) -> None:
        """``client``: an open clickhouse-connect client to use instead of connecting to ``dsn`` (the
        embedded engine already opened by this process; migrated by the caller)."""
        self._dsn = dsn
        self._database = database
        self._rollups = rollups
        self._client: Any = client
        self._owns_client = client is None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    @property
    def embedded(self) -> bool:
        return self._dsn.startswith("chdb://")

    def _connected(self) -> Any:
        if self._client is None:
            client = connect(self._dsn)
            if self.embedded:
                report = Migrator(client, self._database).migrate()
                if report.applied:
                    log.info("embedded ClickHouse: applied migrations %s", ", ".join(m.name for m in report.applied))
            else:
                found = query_rows(client, "EXISTS TABLE {db:Identifier}.usage", {"db": self._database})
                if not found or not found[0][0]:
                    raise WarehouseUnavailable(
                        f"table {self._database}.usage does not exist: run `tollway db migrate` against this server"
                    )
            self._client = client
        return self._client

    def _insert(self, data: bytes) -> None:
        try:
            insert_json_rows(self._connected(), self._database, "usage", data)
        except WarehouseUnavailable:
            self._drop_client()
            raise

    def _drop_client(self) -> None:
        if self._client is not None and self._owns_client and not self.embedded:
            self._client.close()
            self._client = None

    async def insert(self, data: bytes, rows: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._insert, data)

    def _maintain(self) -> None:
        if self._rollups:
            result = refresh_rollups(self._connected(), self._database)
            log.debug("rollups refreshed: %s", result)

    async def maintain(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._maintain)

    async def read(self, fn: Callable[[Any, str], T]) -> T:
        """``fn(client, database)`` on the sink's thread: reads share the one client (an embedded chdb is
        opened once per process) and never overlap an insert."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: fn(self._connected(), self._database)
        )

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the sink's thread (for the usage CLI and tests)."""
        future = self._executor.submit(lambda: [tuple(r) for r in query_rows(self._connected(), sql, parameters)])
        return future.result()

    def close(self) -> None:
        def _close() -> None:
            if self._client is not None and self._owns_client:
                with contextlib.suppress(WarehouseError):
                    self._client.close()
            self._client = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
