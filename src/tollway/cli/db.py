"""``tollway db``: apply and inspect the usage warehouse's schema migrations (ClickHouse).

The target comes from ``--dsn``/``--database`` or ``TOLLWAY_CLICKHOUSE_DSN`` (default
``chdb://./.tollway/chdb``, the embedded engine) and ``TOLLWAY_CLICKHOUSE_DATABASE`` (default
``tollway``). Every failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from tollway.settings import Settings
from tollway.warehouse.connection import check_identifier, connect, quiet_driver_logs, redact_dsn
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.migrations import MigrationStatus, Migrator, load_migrations
from tollway.warehouse.settings import WarehouseSettings

EXIT_FAILURE = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser("db", help="the ClickHouse usage warehouse: schema migrations")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    migrate = sub.add_parser("migrate", help="create the database if absent and apply pending migrations")
    status = sub.add_parser("status", help="list applied and pending migrations")
    for parser in (migrate, status):
        parser.add_argument(
            "--dsn",
            help="chdb:///path (embedded) or http(s)://user:password@host:8123 (default: $TOLLWAY_CLICKHOUSE_DSN)",
        )
        parser.add_argument("--database", help="database name (default: $TOLLWAY_CLICKHOUSE_DATABASE or tollway)")
        parser.add_argument(
            "--migrations",
            type=Path,
            metavar="DIR",
            help="apply the NNNN_name.sql files of DIR instead of the bundled ones (e.g. clickhouse/cluster)",
        )


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _target(args: argparse.Namespace) -> tuple[str, str]:
    settings = WarehouseSettings()
    dsn = args.dsn if args.dsn is not None else settings.dsn
    database = check_identifier(args.database) if args.database is not None else settings.database
    return dsn, database


def _migrate(migrator: Migrator, where: str) -> int:
    report = migrator.migrate()
    for migration in report.applied:
        print(f"applied {migration.label}")
    if report.up_to_date:
        print(f"database {report.database} at {where} is up to date (version {report.version:04d})")
    else:
        print(
            f"database {report.database} at {where}: {len(report.applied)} migration(s) applied, "
            f"now at version {report.version:04d}"
        )
    return 0


def _print_status(status: MigrationStatus, where: str) -> None:
    print(f"database {status.database} at {where}: {len(status.applied)} applied, {len(status.pending)} pending")
    for row in status.applied:
        print(f"  applied  {row.label}  {row.applied_at:%Y-%m-%d %H:%M:%S} UTC  {row.checksum[:12]}")
    for migration in status.pending:
        print(f"  pending  {migration.label}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 on success, 2 (with one line on stderr) on any failure. ``settings`` is unused."""
    del settings  # the warehouse has its own TOLLWAY_CLICKHOUSE_* settings
    try:
        dsn, database = _target(args)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "TOLLWAY_CLICKHOUSE_" + "_".join(str(p) for p in error["loc"]).upper()
        return _fail(f"invalid settings: {name}: {error['msg'].removeprefix('Value error, ')}")
    except WarehouseError as exc:
        return _fail(str(exc))
    where = redact_dsn(dsn)
    try:
        migrations = load_migrations(args.migrations) if args.migrations is not None else None
    except WarehouseError as exc:
        return _fail(str(exc))
    quiet_driver_logs()
    try:
        client = connect(dsn)
        try:
            migrator = Migrator(client, database, migrations)
            if args.db_command == "migrate":
                return _migrate(migrator, where)
            if args.db_command == "status":
                _print_status(migrator.status(), where)
                return 0
        finally:
            client.close()
    except WarehouseError as exc:
        return _fail(str(exc))
    return _fail(f"unknown db command {args.db_command!r}")
