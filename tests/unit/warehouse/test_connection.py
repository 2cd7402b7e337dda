"""DSN parsing, names spliced into SQL, timestamps and settings: no ClickHouse needed."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tollway.warehouse.connection import chdb_path, check_identifier, connect, one_line, redact_dsn
from tollway.warehouse.errors import InvalidDatabaseName, InvalidDsn
from tollway.warehouse.rollups import format_ts, parse_ts
from tollway.warehouse.settings import WarehouseSettings


@pytest.mark.parametrize("name", ["tollway", "_t1", "Usage_2026"])
def test_plain_identifiers_pass(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a.b", "a b", "x;DROP", "`t`"])
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidDatabaseName):
        check_identifier(name)


def test_chdb_paths() -> None:
    assert chdb_path("chdb:///var/lib/tw") == Path("/var/lib/tw")
    assert chdb_path("chdb://./.tollway/chdb") == Path.cwd() / ".tollway" / "chdb"
    assert chdb_path("chdb://memory") is None
    with pytest.raises(InvalidDsn):
        chdb_path("chdb:///x?opt=1")


@pytest.mark.parametrize(
    "dsn",
    ["ftp://host", "localhost:8123", "http://", "http://host:notaport", "http://host:8123/tollway", ""],
)
def test_bad_dsns_are_refused_before_any_connection(dsn: str) -> None:
    with pytest.raises(InvalidDsn):
        connect(dsn)


def test_passwords_are_redacted() -> None:
    assert redact_dsn("https://tw:s3cret@ch.example:8443/") == "https://tw:***@ch.example:8443/"
    assert redact_dsn("http://ch:8123") == "http://ch:8123"
    with pytest.raises(InvalidDsn) as refused:
        connect("https://tw:s3cret@ch.example:8443/db")
    assert "s3cret" not in str(refused.value)


def test_one_line_keeps_the_first_line_short() -> None:
    message = one_line(RuntimeError("Code: 60. DB::Exception: no table\nstack:\n 0. frame"))
    assert message == "Code: 60. DB::Exception: no table"
    assert len(one_line(RuntimeError("x" * 1000))) == 300


def test_timestamps_round_trip_in_utc() -> None:
    moment = datetime(2026, 11, 25, 6, 35, 46, 123456, tzinfo=timezone(timedelta(hours=-5)))
    assert format_ts(moment) == "2026-11-25 11:35:46.123"
    assert parse_ts("2026-11-25 11:35:46.123") == datetime(2026, 11, 25, 11, 35, 46, 123000, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 1, 1))


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLWAY_CLICKHOUSE_DSN", raising=False)
    monkeypatch.delenv("TOLLWAY_CLICKHOUSE_DATABASE", raising=False)
    assert WarehouseSettings().dsn == "chdb://./.tollway/chdb"
    assert WarehouseSettings().database == "tollway"
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DSN", "http://ch:8123")
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DATABASE", "usage_prod")
    assert (WarehouseSettings().dsn, WarehouseSettings().database) == ("http://ch:8123", "usage_prod")
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DATABASE", "no-dashes")
    with pytest.raises(ValueError, match="invalid database name"):
        WarehouseSettings()
