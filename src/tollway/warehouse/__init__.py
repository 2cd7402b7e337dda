"""The ClickHouse side of usage metering: connection, schema migrations, exact hourly rollups.

The SQL is in ``clickhouse/migrations`` (shipped in the package as ``tollway/warehouse/sql``);
``clickhouse/README.md`` explains the tables and views to operators.
"""

from tollway.warehouse.connection import check_identifier, connect, insert_json_rows, redact_dsn
from tollway.warehouse.errors import (
    ChecksumMismatch,
    InvalidDatabaseName,
    InvalidDsn,
    MigrationError,
    WarehouseError,
    WarehouseQueryError,
    WarehouseUnavailable,
)
from tollway.warehouse.migrations import Migration, MigrationReport, MigrationStatus, Migrator, load_migrations
from tollway.warehouse.rollups import RefreshResult, RollupState, format_ts, read_state, refresh_rollups
from tollway.warehouse.settings import WarehouseSettings

__all__ = [
    "ChecksumMismatch",
    "InvalidDatabaseName",
    "InvalidDsn",
    "Migration",
    "MigrationError",
    "MigrationReport",
    "MigrationStatus",
    "Migrator",
    "RefreshResult",
    "RollupState",
    "WarehouseError",
    "WarehouseQueryError",
    "WarehouseSettings",
    "WarehouseUnavailable",
    "check_identifier",
    "connect",
    "format_ts",
    "insert_json_rows",
    "load_migrations",
    "read_state",
    "redact_dsn",
    "refresh_rollups",
]
