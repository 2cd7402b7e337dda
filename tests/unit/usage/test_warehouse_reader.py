"""A checking process that records usage but does not load it reads a ClickHouse server for the caller
usage report (and so for usage headers); an embedded chdb path stays the loading process's."""

from types import SimpleNamespace
from typing import Any

import pytest

from tollway.server import warehouse_reader
from tollway.usage.clickhouse_sink import ClickHouseSink


def _metering(sink: Any) -> Any:
    return SimpleNamespace(sink=sink)


def test_a_server_dsn_gives_a_reader_to_a_process_without_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DSN", "http://clickhouse.example:8123")
    reader = warehouse_reader(_metering(None))
    assert isinstance(reader, ClickHouseSink)
    assert not reader.embedded
    reader.close()  # never connected: nothing was opened


def test_no_reader_for_an_embedded_engine_or_beside_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DSN", "chdb:///var/lib/tollway/chdb")
    assert warehouse_reader(_metering(None)) is None
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DSN", "http://clickhouse.example:8123")
    assert warehouse_reader(_metering(object())) is None
    assert warehouse_reader(None) is None
