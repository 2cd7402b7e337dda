"""The one embedded ClickHouse (chdb) engine of this test process.

chdb can open a single data path per process; opening a second one fails or silently reuses the
first. Every test therefore shares one clickhouse-connect client, and isolates itself in its own
database (see the ``chdb_db`` fixture).
"""

import uuid
from pathlib import Path
from typing import Any, NamedTuple

import clickhouse_connect


class ChdbDatabase(NamedTuple):
    client: Any
    name: str


class ChdbEngine:
    """Lazily opens ``chdb://<path>`` once; refuses a second, different path."""

    _opened_path: Path | None = None

    def __init__(self, path: Path) -> None:
        self._path = path
        self._client: Any = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dsn(self) -> str:
        return f"chdb://{self._path}"

    def client(self) -> Any:
        if self._client is None:
            opened = ChdbEngine._opened_path
            if opened is not None and opened != self._path:
                raise RuntimeError(f"chdb already opened {opened}; this process cannot open {self._path}")
            self._path.mkdir(parents=True, exist_ok=True)
            self._client = clickhouse_connect.get_client(dsn=self.dsn)
            ChdbEngine._opened_path = self._path
        return self._client

    def create_database(self, prefix: str = "test") -> ChdbDatabase:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.command(f"CREATE DATABASE {name}")
        return ChdbDatabase(client, name)

    def drop_database(self, name: str) -> None:
        self.client().command(f"DROP DATABASE IF EXISTS {name} SYNC")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
