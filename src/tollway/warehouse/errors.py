"""Typed errors of the ClickHouse warehouse adapter.

Callers (the CLI, the usage writer) catch ``WarehouseError`` and tell the kinds apart: a bad DSN is
an operator's typo, an unreachable server may be retried, a failed query or migration needs a look.
"""

from __future__ import annotations


class WarehouseError(Exception):
    """Base of every error raised by ``tollway.warehouse``. ``str()`` is one line, safe to print."""


class InvalidDsn(WarehouseError):
    """The DSN is not ``chdb://PATH`` or ``http(s)://[user:pass@]host[:port][/]``."""


class InvalidDatabaseName(WarehouseError):
    """A database or table name that is not a plain identifier (it is spliced into SQL)."""


class WarehouseUnavailable(WarehouseError):
    """The server cannot be reached (or the embedded engine cannot be opened). Worth retrying."""


class WarehouseQueryError(WarehouseError):
    """ClickHouse refused a statement or an insert (bad data, missing table, …). Not worth retrying."""


class MigrationError(WarehouseError):
    """The migrations cannot be applied as they stand (unreadable, misnamed, unknown to this version)."""


class ChecksumMismatch(MigrationError):
    """An applied migration's file changed afterwards: applied SQL is immutable, add a new migration."""
