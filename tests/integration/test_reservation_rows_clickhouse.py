"""The reservation sweeper's row lookup on a real ClickHouse (chdb): the latest version of a request's usage
rows (decision, access log, correction), read back as the row that was encoded."""

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tollway.usage.reservation_sweeper import CORRECTED, ClickHouseRows
from tollway.usage.row import UsageRow, encode_row
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

TS = 1_795_607_253_580


def test_every_version_of_the_asked_rows_is_read_back(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    Migrator(client, database).migrate()
    decision = UsageRow(
        "3f9c-1", TS, "acme", "key_1", "llm", "chat", "/v1/chat", "POST", 0, "admitted", "", True, 0, 0, 0.0,
        {"requests": 1}, 1, "e-1", 41_000, "USD",
    )  # fmt: skip
    completed = decision._replace(
        version=2, status=200, request_bytes=10, response_bytes=99, upstream_latency_ms=12.5,
        meters={"requests": 1, "tokens": Decimal(1500)}, price_micros=16_000,
    )  # fmt: skip
    corrected = completed._replace(version=3, reason=CORRECTED, price_micros=15_000)
    other = decision._replace(request_id="3f9c-2")
    for row in (decision, completed, corrected, other, decision._replace(customer_id="someone-else")):
        insert_json_rows(client, database, "usage", encode_row(row))  # one insert each, as they arrive

    async def read(fn: Any) -> Any:
        return fn(client, database)

    found = asyncio.run(ClickHouseRows(read).rows("acme", ["3f9c-1", "missing"]))
    assert list(found) == ["3f9c-1"]
    assert found["3f9c-1"] == corrected
