"""Open a clickhouse-connect client from a DSN, and the insert path for JSONEachRow batches.

DSNs: ``chdb:///abs/path`` or ``chdb://./relative/path`` (the embedded engine, in this process; one
path per process) and ``http(s)://[user:password@]host[:port]`` (a server). The client gets no default
database: every statement Tollway sends names ``database.table``, so a client can be opened before
the migrations create the database.

clickhouse-connect is synchronous; async callers wrap these calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from tollway.warehouse.errors import InvalidDatabaseName, InvalidDsn, WarehouseQueryError, WarehouseUnavailable

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MEMORY = {"", "memory", ":memory:"}
_MESSAGE_LIMIT = 300


def quiet_driver_logs() -> None:
    """For CLI commands: the HTTP stack logs every failed attempt; the command's one-line error says it all."""
    for noisy in ("urllib3", "clickhouse_connect"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def check_identifier(name: str, what: str = "database") -> str:
    """``name`` when it is a plain identifier (it is spliced into SQL unquoted), else ``InvalidDatabaseName``."""
    if not _IDENTIFIER.fullmatch(name):
        raise InvalidDatabaseName(
            f"invalid {what} name {name!r}: use letters, digits and '_', not starting with a digit"
        )
    return name


def one_line(error: BaseException) -> str:
    """The first line of an exception's message, shortened: ClickHouse errors carry whole stack traces."""
    text = str(error).strip() or type(error).__name__
    line = text.splitlines()[0].strip()
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def chdb_path(dsn: str) -> Path | None:
    """The absolute engine path of a ``chdb://`` DSN; ``None`` for the in-memory engine."""
    if not dsn.startswith("chdb://"):
        raise InvalidDsn(f"not a chdb DSN: {redact_dsn(dsn)}")
    location = dsn.removeprefix("chdb://")
    if "?" in location or "#" in location:
        raise InvalidDsn(f"a chdb DSN is chdb://PATH with no options: {dsn}")
    if location in _MEMORY:
        return None
    return Path(location).expanduser().resolve()


def _http_parts(dsn: str) -> SplitResult:
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise InvalidDsn(f"invalid ClickHouse DSN {redact_dsn(dsn)}: {exc}") from None
    if not parts.hostname:
        raise InvalidDsn(f"invalid ClickHouse DSN {redact_dsn(dsn)}: no host")
    if parts.path not in ("", "/"):
        raise InvalidDsn(
            f"invalid ClickHouse DSN {redact_dsn(dsn)}: name the database with --database "
            "(TOLLWAY_CLICKHOUSE_DATABASE), not in the DSN path"
        )
    del port  # parsed only to validate it
    return parts


def connect(dsn: str, *, connect_timeout_s: int = 10, query_timeout_s: int = 300) -> Client:
    """A clickhouse-connect client for ``dsn``, checked by a first round trip.

    Raises ``InvalidDsn`` for a DSN of another form, ``WarehouseUnavailable`` when the server cannot be
    reached or the embedded engine cannot be opened (chdb opens one path per process).
    """
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme == "chdb":
        path = chdb_path(dsn)
        try:
            if path is None:
                return clickhouse_connect.get_client(interface="chdb")
            path.mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(interface="chdb", path=str(path))
        except (ClickHouseError, OSError) as exc:
            raise WarehouseUnavailable(f"cannot open the embedded ClickHouse at {path}: {one_line(exc)}") from exc
    if scheme in ("http", "https"):
        _http_parts(dsn)
        try:
            return clickhouse_connect.get_client(
                dsn=dsn,
                connect_timeout=connect_timeout_s,
                send_receive_timeout=query_timeout_s,
                autogenerate_session_id=False,
            )
        except OperationalError as exc:
            raise WarehouseUnavailable(f"cannot reach ClickHouse at {redact_dsn(dsn)}: {one_line(exc)}") from exc
        except ClickHouseError as exc:
            raise WarehouseUnavailable(
                f"ClickHouse at {redact_dsn(dsn)} refused the connection: {one_line(exc)}"
            ) from exc
    raise InvalidDsn(
        f"invalid ClickHouse DSN {redact_dsn(dsn)!r}: expected chdb:///path, chdb://./relative/path "
        "or http(s)://[user:password@]host[:port]"
    )


def insert_json_rows(client: Client, database: str, table: str, data: bytes) -> int:
    """Insert a JSONEachRow batch (one JSON object per line) into ``database.table``; the rows written.

    Timestamps must be strings like ``"2026-11-25 11:35:46.123"`` (an integer epoch in ms is misread by
    DateTime64) and Decimal map values JSON strings (``"5123"``). Omitted columns take their defaults
    (``loaded_at`` = the server's insert time). Raises ``WarehouseUnavailable`` when the server cannot be
    reached (worth retrying with the same bytes: replays are deduplicated by request id) and
    ``WarehouseQueryError`` when ClickHouse refuses the batch.
    """
    target = f"{check_identifier(database)}.{check_identifier(table, 'table')}"
    try:
        summary = client.raw_insert(target, insert_block=data, fmt="JSONEachRow")
    except OperationalError as exc:
        raise WarehouseUnavailable(f"insert into {target} failed: {one_line(exc)}") from exc
    except ClickHouseError as exc:
        raise WarehouseQueryError(f"insert into {target} refused: {one_line(exc)}") from exc
    return int(summary.written_rows)


def execute(client: Client, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
    """Run one statement (DDL, ``INSERT … SELECT``) with server-side ``{name:Type}`` parameters.

    Raises ``WarehouseUnavailable`` or ``WarehouseQueryError`` with a one-line message.
    """
    try:
        client.command(sql, parameters=dict(parameters) if parameters else None)
    except OperationalError as exc:
        raise WarehouseUnavailable(f"ClickHouse unreachable: {one_line(exc)}") from exc
    except ClickHouseError as exc:
        raise WarehouseQueryError(one_line(exc)) from exc


def query_rows(client: Client, sql: str, parameters: Mapping[str, Any] | None = None) -> Sequence[Sequence[Any]]:
    """The rows of a ``SELECT``, errors mapped as in ``execute``."""
    try:
        result = client.query(sql, parameters=dict(parameters) if parameters else None)
    except OperationalError as exc:
        raise WarehouseUnavailable(f"ClickHouse unreachable: {one_line(exc)}") from exc
    except ClickHouseError as exc:
        raise WarehouseQueryError(one_line(exc)) from exc
    rows: Sequence[Sequence[Any]] = result.result_rows
    return rows
