"""The ClickHouse client the management API reads usage and invoices with.

Opened on first use, not at start: keys, subscriptions and customers are served while ClickHouse is
away (those reads answer 503 ``warehouse-unavailable`` meanwhile). clickhouse-connect is synchronous,
so queries run in a worker thread, one at a time (the embedded engine is one per process). The
embedded ``chdb://`` engine is migrated when opened, like ``tollway bill`` does; a server must have
been migrated with ``tollway db migrate``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tollway.warehouse.connection import connect
from tollway.warehouse.errors import WarehouseUnavailable
from tollway.warehouse.migrations import Migrator

T = TypeVar("T")


class Warehouse:
    def __init__(self, dsn: str, database: str, *, client: Any = None) -> None:
        """``client``: an open clickhouse-connect client to use instead of connecting to ``dsn`` (tests);
        it is not closed by :meth:`close`."""
        self._dsn = dsn
        self._database = database
        self._client = client
        self._owned = client is None
        self._lock = threading.Lock()

    @property
    def database(self) -> str:
        return self._database

    async def run(self, query: Callable[[Any, str], T]) -> T:
        """``query(client, database)`` in a worker thread; ``WarehouseError`` subclasses pass through."""
        return await asyncio.to_thread(self._run, query)

    def _run(self, query: Callable[[Any, str], T]) -> T:
        with self._lock:
            if self._client is None:
                self._client = self._open()
            try:
                return query(self._client, self._database)
            except WarehouseUnavailable:
                if self._owned and not self._dsn.startswith("chdb://"):
                    self._drop()  # reconnect on the next query
                raise

    def _open(self) -> Any:
        client = connect(self._dsn)
        if self._dsn.startswith("chdb://"):
            Migrator(client, self._database).migrate()
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._drop()
