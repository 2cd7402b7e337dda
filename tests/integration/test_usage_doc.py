"""docs/usage-tracking.md's analyst queries, executed: its dataset inserted as the spool would, the rollups
refreshed, each query run against the embedded ClickHouse and compared with the table printed under it."""

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.rollups import refresh_rollups

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "usage-tracking.md"
TABLES = ("usage", "usage_hourly", "usage_final", "daily_usage", "error_rates", "top_customers", "refused_by_reason")


def dataset() -> bytes:
    block = DOC.read_text().split("<!-- usage-doc-dataset -->", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    return block.encode()


def examples() -> list[tuple[str, list[list[str]]]]:
    found = []
    for part in DOC.read_text().split("<!-- usage-doc-query -->")[1:]:
        sql = part.split("```sql\n", 1)[1].split("```", 1)[0]
        table = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in part.split("```", 2)[2].splitlines()
            if line.startswith("|")
        ]
        found.append((sql, table[2:]))  # skip the header and the ---|--- line
    return found


def qualified(sql: str, database: str) -> str:
    names = "|".join(TABLES)
    return re.sub(rf"\bFROM ({names})\b", rf"FROM {database}.\1", sql)


def text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def test_the_document_has_its_queries() -> None:
    assert len(examples()) >= 4
    assert dataset().count(b"\n") >= 8


def test_every_query_returns_the_rows_the_document_shows(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", dataset())
    refresh_rollups(client, database)
    for sql, expected in examples():
        rows = client.query(qualified(sql, database)).result_rows
        assert [[text(v) for v in row] for row in rows] == expected, sql
