"""Versioned schema migrations for the usage warehouse.

The SQL lives in ``clickhouse/migrations/NNNN_name.sql`` (the single source of truth; packaged as
``tollway/warehouse/sql``, see ``bundled_migrations``). Each file holds statements separated by ``;``,
with ``{database}`` standing for the target database. ``Migrator`` creates the database if absent,
records what it applied in ``schema_migrations`` (version, name, checksum, applied_at) and applies the
pending files in order. A second run is a no-op; an applied file whose checksum changed is refused
(applied SQL is immutable: add a new migration instead). Run one migrator at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from tollway.warehouse.connection import check_identifier, execute, one_line, query_rows
from tollway.warehouse.errors import (
    ChecksumMismatch,
    MigrationError,
    WarehouseQueryError,
    WarehouseUnavailable,
)
from tollway.warehouse.sqltext import render, split_statements

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file: ``version`` from its ``NNNN_`` prefix, ``checksum`` the SHA-256 of its bytes."""

    version: int
    name: str
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``{database}`` replaced, ready to send one by one."""
        return split_statements(render(self.sql, database))


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationStatus:
    """What a database has applied and what this version of Tollway would still apply."""

    database: str
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


@dataclass(frozen=True)
class MigrationReport:
    """The result of ``Migrator.migrate``: the migrations applied by this run (empty when up to date)."""

    database: str
    applied: tuple[Migration, ...]
    version: int

    @property
    def up_to_date(self) -> bool:
        return not self.applied


def bundled_migrations() -> Traversable:
    """The migration files shipped with the package (``clickhouse/migrations`` in a checkout)."""
    return resources.files("tollway.warehouse") / "sql"


def load_migrations(source: Traversable | None = None) -> tuple[Migration, ...]:
    """Read and order the ``NNNN_name.sql`` files of ``source`` (default: the bundled ones).

    Raises ``MigrationError`` for a misnamed ``.sql`` file, a duplicate version, or no files at all
    (a package built without its SQL).
    """
    directory = bundled_migrations() if source is None else source
    try:
        entries = [entry for entry in directory.iterdir() if entry.name.endswith(".sql")]
    except OSError as exc:
        raise MigrationError(f"cannot read the migrations at {directory}: {exc}") from exc
    migrations: dict[int, Migration] = {}
    for entry in entries:
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql")
        raw = entry.read_bytes()
        try:
            split_statements(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MigrationError(f"migration file {entry.name}: {exc}") from exc
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(
                f"two migrations have version {version:04d}: {migrations[version].label}, {entry.name}"
            )
        migrations[version] = Migration(
            version=version,
            name=match["name"],
            sql=raw.decode("utf-8"),
            checksum=hashlib.sha256(raw).hexdigest(),
        )
    if not migrations:
        raise MigrationError(f"no migration files in {directory}: the package was built without its SQL")
    return tuple(migrations[v] for v in sorted(migrations))


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Migrator:
    """Applies ``migrations`` (default: the bundled ones) to ``database`` through ``client``."""

    def __init__(self, client: Client, database: str, migrations: Sequence[Migration] | None = None) -> None:
        self._client = client
        self._database = check_identifier(database)
        self._migrations = (
            tuple(sorted(migrations, key=lambda m: m.version)) if migrations is not None else load_migrations()
        )

    @property
    def database(self) -> str:
        return self._database

    @property
    def migrations(self) -> tuple[Migration, ...]:
        return self._migrations

    def applied(self) -> tuple[AppliedMigration, ...]:
        """The rows of ``schema_migrations``; empty when the database or the table does not exist yet."""
        exists = query_rows(
            self._client,
            "SELECT count() FROM system.tables WHERE database = {database:String} AND name = {table:String}",
            {"database": self._database, "table": MIGRATIONS_TABLE},
        )
        if not exists[0][0]:
            return ()
        rows = query_rows(
            self._client,
            f"""
            SELECT version, name, checksum, toString(applied_at)
            FROM {self._database}.{MIGRATIONS_TABLE} FINAL ORDER BY version
            """,  # noqa: S608 (a checked identifier)
        )
        return tuple(AppliedMigration(int(v), str(n), str(c), _parse_utc(str(at))) for v, n, c, at in rows)

    def status(self) -> MigrationStatus:
        """Applied and pending migrations, after the same checks as ``migrate`` (changes nothing)."""
        applied = self.applied()
        return MigrationStatus(self._database, applied, self._pending(applied))

    def migrate(self) -> MigrationReport:
        """Create the database and the bookkeeping table if absent, then apply every pending migration.

        Raises ``ChecksumMismatch`` when an applied file changed, ``MigrationError`` when the database
        is ahead of this Tollway or a statement fails (its migration is then not recorded; statements
        use ``IF NOT EXISTS`` so a rerun after the fix picks up where it stopped).
        """
        pending = self._pending(self.applied())
        self._ensure_bookkeeping()
        for migration in pending:
            self._apply(migration)
        applied = self.applied()
        return MigrationReport(self._database, pending, applied[-1].version if applied else 0)

    def _pending(self, applied: Sequence[AppliedMigration]) -> tuple[Migration, ...]:
        known = {m.version: m for m in self._migrations}
        for row in applied:
            migration = known.get(row.version)
            if migration is None:
                raise MigrationError(
                    f"database {self._database} has migration {row.label}, unknown to this version of Tollway: "
                    "upgrade Tollway before migrating"
                )
            if migration.checksum != row.checksum:
                raise ChecksumMismatch(
                    f"migration {migration.label} changed after it was applied to database {self._database} "
                    f"(recorded checksum {row.checksum[:12]}…, file {migration.checksum[:12]}…): "
                    "applied migrations are immutable, add a new one instead"
                )
        done = {row.version for row in applied}
        latest = max(done, default=0)
        pending = tuple(m for m in self._migrations if m.version not in done)
        for migration in pending:
            if migration.version < latest:
                raise MigrationError(
                    f"migration {migration.label} is older than {latest:04d}, already applied to database "
                    f"{self._database}: renumber it after the latest"
                )
        return pending

    def _ensure_bookkeeping(self) -> None:
        execute(self._client, f"CREATE DATABASE IF NOT EXISTS {self._database}")
        execute(
            self._client,
            f"""
            CREATE TABLE IF NOT EXISTS {self._database}.{MIGRATIONS_TABLE}
            (
                version    UInt32,
                name       String,
                checksum   String,
                applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
            )
            ENGINE = ReplacingMergeTree(applied_at)
            ORDER BY version
            """,
        )

    def _apply(self, migration: Migration) -> None:
        statements = migration.statements(self._database)
        for number, statement in enumerate(statements, start=1):
            try:
                execute(self._client, statement)
            except WarehouseUnavailable:
                raise
            except WarehouseQueryError as exc:
                raise MigrationError(
                    f"migration {migration.label} failed at statement {number} of {len(statements)}: {exc}"
                ) from exc
        try:
            self._client.insert(
                f"{self._database}.{MIGRATIONS_TABLE}",
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
        except OperationalError as exc:
            raise WarehouseUnavailable(f"ClickHouse unreachable: {one_line(exc)}") from exc
        except ClickHouseError as exc:
            raise MigrationError(f"cannot record migration {migration.label}: {one_line(exc)}") from exc
