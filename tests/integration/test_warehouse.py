"""The usage warehouse on the embedded ClickHouse (chdb): migrations, analyst views, exact rollups.

Every test has a database of its own (``chdb_db``) on the process's single chdb path.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.support.chdb_engine import ChdbDatabase, ChdbEngine
from tollway.clock import ManualClock
from tollway.warehouse import (
    ChecksumMismatch,
    MigrationError,
    Migrator,
    WarehouseQueryError,
    insert_json_rows,
    load_migrations,
    read_state,
    refresh_rollups,
)
from tollway.warehouse.migrations import Migration

pytestmark = pytest.mark.integration

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "clickhouse" / "cluster"
ALL = [
    "0001_usage",
    "0002_usage_hourly",
    "0003_analyst_views",
    "0004_invoices",
    "0005_invoice_lines_tombstones",
    "0006_usage_row_ids",
    "0007_credit_ledger",
    "0008_usage_prices",
    "0009_events_webhook_deliveries",
    "0010_invoice_numbers",
    "0011_credit_notes",
    "0012_payment_events",
]
LATEST = int(ALL[-1][:4])  # versions may skip numbers (issue 17 gave its lanes 0010 to 0013)


@pytest.fixture
def warehouse(chdb_db: ChdbDatabase) -> ChdbDatabase:
    """``chdb_db`` with every bundled migration applied."""
    Migrator(chdb_db.client, chdb_db.name).migrate()
    return chdb_db


def rows(client: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in client.query(sql).result_rows]


# --- the usage rows ----------------------------------------------------------------------------------


def usage(
    request_id: str,
    ts: str,
    customer: str,
    *,
    version: int,
    status: int = 0,
    feature: str = "items",
    meters: dict[str, str] | None = None,
    reason: str = "",
    plan: str | None = None,
    limits_checked: bool = True,
) -> dict[str, Any]:
    """One row as the metering writer sends it (JSONEachRow: ts as text, Decimals as strings)."""
    return {
        "request_id": request_id,
        "ts": ts,
        "customer_id": customer,
        "subject": f"key_{customer}" if customer else "",
        "plan": plan if plan is not None else {"acme": "pro", "globex": "free"}.get(customer, ""),
        "feature": feature,
        "route": "/v1/items/{item_id}" if feature == "items" else f"/v1/{feature}",
        "method": "GET",
        "status": status,
        "outcome": "refused" if reason else "admitted",
        "reason": reason,
        "limits_checked": limits_checked,
        "request_bytes": 120,
        "response_bytes": 0 if status == 0 else 2048,
        "upstream_latency_ms": 0.0 if status == 0 or reason else 12.5,
        "meters": meters or {},
        "version": version,
    }


def insert(db: ChdbDatabase, batch: Iterable[dict[str, Any]]) -> int:
    data = b"".join(json.dumps(row).encode() + b"\n" for row in batch)
    return insert_json_rows(db.client, db.name, "usage", data)


D25, D24 = "2026-11-25", "2026-11-24"
R1 = {"requests": "1"}
SEARCH = {**R1, "search_units": "3"}

# Decision rows (version 1), as Tollway writes them when it decides.
DECISIONS = [
    usage("a1", f"{D25} 10:05:00.000", "acme", version=1, meters={"requests": "1", "egress": "100"}),
    usage("a2", f"{D25} 10:20:00.500", "acme", version=1, meters=R1),
    usage("a3", f"{D25} 10:40:00.000", "acme", version=1, meters=R1),  # never reported: status stays 0
    usage("a4", f"{D25} 11:10:00.000", "acme", version=1, feature="search", meters=SEARCH),
    usage("a5", f"{D25} 11:30:00.000", "acme", version=1, reason="quota_exceeded"),  # empty meters
    usage("a6", f"{D24} 23:59:59.999", "acme", version=1, meters={**R1, "egress": "10"}),
    usage("g1", f"{D25} 10:15:00.000", "globex", version=1, meters=R1),
    usage("g2", f"{D25} 10:16:00.000", "globex", version=1, reason="not_entitled"),
    usage("g3", f"{D24} 09:00:00.000", "globex", version=1, meters=R1, limits_checked=False),
    usage("u1", f"{D25} 11:45:00.000", "", version=1, feature="", reason="unauthenticated"),
    usage("u2", f"{D25} 11:46:00.000", "", version=1, feature="", reason="unauthenticated"),  # never reported
]
# Completions (version 2) from Envoy's access log: status known, egress measured.
COMPLETIONS = [
    usage("a1", f"{D25} 10:05:00.000", "acme", version=2, status=200, meters={"requests": "1", "egress": "5123"}),
    usage("a2", f"{D25} 10:20:00.500", "acme", version=2, status=201, meters={**R1, "egress": "250"}),
    usage(
        "a4", f"{D25} 11:10:00.000", "acme", version=2, status=500, feature="search", meters={**R1, "search_units": "3"}
    ),
    usage("a5", f"{D25} 11:30:00.000", "acme", version=2, status=429, reason="quota_exceeded"),
    usage("a6", f"{D24} 23:59:59.999", "acme", version=2, status=404, meters={**R1, "egress": "10"}),
    usage("g1", f"{D25} 10:15:00.000", "globex", version=2, status=200, meters={**R1, "egress": "42.5"}),
    usage("g2", f"{D25} 10:16:00.000", "globex", version=2, status=403, reason="not_entitled"),
    usage(
        "g3", f"{D24} 09:00:00.000", "globex", version=2, status=200, meters={**R1, "egress": "7"}, limits_checked=False
    ),
    usage("u1", f"{D25} 11:45:00.000", "", version=2, status=401, feature="", reason="unauthenticated"),
]


def load_dataset(db: ChdbDatabase) -> None:
    """22 rows: 11 requests, each decided, 9 completed, one exact replay of a completion and a late
    replay of a decision that arrives after its completion."""
    assert insert(db, DECISIONS) == 11
    assert insert(db, [*COMPLETIONS, COMPLETIONS[0]]) == 10
    assert insert(db, [DECISIONS[1]]) == 1


# --- migrations --------------------------------------------------------------------------------------


def test_migrating_twice_is_a_no_op(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    migrator = Migrator(client, database)
    assert [m.label for m in migrator.status().pending] == ALL

    first = migrator.migrate()
    assert [m.label for m in first.applied] == ALL
    assert (first.up_to_date, first.version) == (False, LATEST)

    second = migrator.migrate()
    assert (second.applied, second.up_to_date, second.version) == ((), True, LATEST)
    status = migrator.status()
    assert status.up_to_date
    assert [(a.label, a.checksum) for a in status.applied] == [(m.label, m.checksum) for m in load_migrations()]
    assert rows(client, f"SELECT count() FROM {database}.schema_migrations") == [(len(ALL),)]  # no duplicate records
    tables = rows(client, f"SELECT name FROM system.tables WHERE database = '{database}' ORDER BY name")
    assert [t[0] for t in tables] == [
        "credit_ledger",
        "credit_notes",
        "daily_usage",
        "error_rates",
        "events",
        "invoice_lines",
        "invoices",
        "payment_events",
        "refused_by_reason",
        "rollup_state",
        "schema_migrations",
        "top_customers",
        "usage",
        "usage_final",
        "usage_hourly",
        "webhook_deliveries",
    ]


def test_migrate_creates_an_absent_database(chdb_engine: ChdbEngine, chdb_client: Any) -> None:
    database = "tw_absent_db"
    chdb_engine.drop_database(database)
    try:
        migrator = Migrator(chdb_client, database)
        assert migrator.status().applied == ()
        assert migrator.migrate().version == LATEST
        assert rows(chdb_client, f"SELECT count() FROM system.databases WHERE name = '{database}'") == [(1,)]
    finally:
        chdb_engine.drop_database(database)


def test_a_changed_migration_is_refused(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    edited = [*load_migrations()]
    edited[0] = replace(edited[0], sql=edited[0].sql + "\n-- edited\n", checksum="0" * 64)
    migrator = Migrator(client, database, edited)
    with pytest.raises(ChecksumMismatch, match=r"migration 0001_usage changed after it was applied"):
        migrator.migrate()
    with pytest.raises(ChecksumMismatch):
        migrator.status()


def test_pending_migrations_apply_in_order_and_older_ones_are_refused(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    one, two, three, *_ = load_migrations()
    assert [m.label for m in Migrator(client, database, [one]).migrate().applied] == ["0001_usage"]
    assert [m.label for m in Migrator(client, database, [one, two, three]).migrate().applied] == [
        "0002_usage_hourly",
        "0003_analyst_views",
    ]


def test_a_pending_migration_older_than_an_applied_one_is_refused(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    one, two, *_ = load_migrations()
    later = Migration(version=9, name="later", sql="SELECT 1;", checksum="9" * 64)
    Migrator(client, database, [one, later]).migrate()
    with pytest.raises(MigrationError, match="0002_usage_hourly is older than 0009"):
        Migrator(client, database, [one, two, later]).migrate()


def test_a_database_ahead_of_this_tollway_is_refused(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    with pytest.raises(MigrationError, match="0003_analyst_views, unknown to this version of Tollway"):
        Migrator(client, database, load_migrations()[:2]).migrate()


def test_a_failing_statement_is_not_recorded_and_a_fixed_rerun_completes(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    broken = Migration(
        version=1,
        name="t",
        sql="CREATE TABLE IF NOT EXISTS {database}.t (x UInt8) ENGINE = Memory;\nSELEC 1;",
        checksum="a" * 64,
    )
    with pytest.raises(MigrationError, match=r"0001_t failed at statement 2 of 2: Code: 62"):
        Migrator(client, database, [broken]).migrate()
    assert Migrator(client, database, [broken]).status().applied == ()
    fixed = replace(broken, sql=broken.sql.replace("SELEC", "SELECT"))
    assert [m.label for m in Migrator(client, database, [fixed]).migrate().applied] == ["0001_t"]


# --- the usage table: the contract the writers rely on ---------------------------------------------


USAGE_COLUMNS = [
    ("request_id", "String", ""),
    ("envoy_request_id", "String", "request_id"),
    ("ts", "DateTime64(3, 'UTC')", ""),
    ("customer_id", "String", ""),
    ("subject", "String", ""),
    ("plan", "LowCardinality(String)", ""),
    ("feature", "LowCardinality(String)", ""),
    ("route", "LowCardinality(String)", ""),
    ("method", "LowCardinality(String)", ""),
    ("status", "UInt16", ""),
    ("outcome", "Enum8('admitted' = 1, 'refused' = 2)", ""),
    ("reason", "LowCardinality(String)", ""),
    ("limits_checked", "Bool", ""),
    ("request_bytes", "UInt64", ""),
    ("response_bytes", "UInt64", ""),
    ("upstream_latency_ms", "Float64", ""),
    ("meters", "Map(LowCardinality(String), Decimal(38, 9))", ""),
    ("version", "UInt8", ""),
    ("loaded_at", "DateTime64(3, 'UTC')", "now64(3)"),
    ("price_micros", "Int64", "0"),
    ("balance_unit", "LowCardinality(String)", "''"),
]


def test_usage_table_matches_the_contract(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    columns = rows(
        client,
        f"SELECT name, type, default_expression FROM system.columns "
        f"WHERE database = '{database}' AND table = 'usage' ORDER BY position",
    )
    assert columns == USAGE_COLUMNS
    engine = rows(
        client,
        f"SELECT engine_full, partition_key, sorting_key FROM system.tables "
        f"WHERE database = '{database}' AND name = 'usage'",
    )
    engine_full, partition_key, sorting_key = engine[0]
    assert engine_full.startswith("ReplacingMergeTree(version)")
    assert (partition_key, sorting_key) == ("toYYYYMM(ts)", "customer_id, ts, request_id")
    indices = rows(
        client,
        f"SELECT expr, type FROM system.data_skipping_indices WHERE database = '{database}' AND table = 'usage'",
    )
    assert indices == [("loaded_at", "minmax")]


def test_a_bad_row_is_a_typed_error(warehouse: ChdbDatabase) -> None:
    bad = json.dumps({**DECISIONS[0], "outcome": "maybe"}).encode() + b"\n"
    with pytest.raises(WarehouseQueryError, match=r"insert into \w+\.usage refused"):
        insert_json_rows(warehouse.client, warehouse.name, "usage", bad)


# --- the analyst views on a hand-computed dataset --------------------------------------------------


def test_usage_final_keeps_the_highest_version_of_each_request(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    client.command(f"SYSTEM STOP MERGES {database}.usage")
    load_dataset(warehouse)
    # Unmerged, plain usage holds both versions and the late replay: 21 of the 22 rows sent (the exact
    # replay inside one batch already collapsed on insert: optimize_on_insert).
    assert rows(client, f"SELECT count() FROM {database}.usage") == [(21,)]
    final = rows(
        client,
        f"SELECT request_id, version, status, toString(ts), meters FROM {database}.usage_final ORDER BY request_id",
    )
    assert [(r[0], r[1], r[2]) for r in final] == [
        ("a1", 2, 200),
        ("a2", 2, 201),
        ("a3", 1, 0),
        ("a4", 2, 500),
        ("a5", 2, 429),
        ("a6", 2, 404),
        ("g1", 2, 200),
        ("g2", 2, 403),
        ("g3", 2, 200),
        ("u1", 2, 401),
        ("u2", 1, 0),
    ]
    assert final[0][3:] == ("2026-11-25 10:05:00.000", {"requests": Decimal(1), "egress": Decimal(5123)})
    assert final[5][3] == "2026-11-24 23:59:59.999"


def test_error_rates(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    load_dataset(warehouse)
    assert rows(client, f"SELECT * FROM {database}.error_rates ORDER BY day, customer_id") == [
        # day, customer, requests, unreported, 4xx, 5xx, rate_4xx, rate_5xx
        (date(2026, 11, 24), "acme", 1, 0, 1, 0, 1.0, 0.0),
        (date(2026, 11, 24), "globex", 1, 0, 0, 0, 0.0, 0.0),
        (date(2026, 11, 25), "", 2, 1, 1, 0, 0.5, 0.0),
        (date(2026, 11, 25), "acme", 5, 1, 1, 1, 0.2, 0.2),
        (date(2026, 11, 25), "globex", 2, 0, 1, 0, 0.5, 0.0),
    ]


def test_top_customers(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    load_dataset(warehouse)
    assert rows(client, f"SELECT * FROM {database}.top_customers") == [
        # month, customer, requests, admitted, meter totals
        (
            date(2026, 11, 1),
            "acme",
            6,
            5,
            {"egress": Decimal("5383"), "requests": Decimal(5), "search_units": Decimal(3)},
        ),
        (date(2026, 11, 1), "globex", 3, 2, {"egress": Decimal("49.5"), "requests": Decimal(2)}),
    ]


def test_refused_by_reason(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    load_dataset(warehouse)
    assert rows(client, f"SELECT * FROM {database}.refused_by_reason") == [
        (date(2026, 11, 25), "unauthenticated", "", 2),
        (date(2026, 11, 25), "not_entitled", "globex", 1),
        (date(2026, 11, 25), "quota_exceeded", "acme", 1),
    ]


DAILY_USAGE_SQL = "SELECT * FROM {database}.daily_usage ORDER BY day, customer_id, feature, meter"
DAILY_USAGE = [
    # day, customer, feature, meter, requests, quantity
    (date(2026, 11, 24), "acme", "items", "egress", 1, Decimal(10)),
    (date(2026, 11, 24), "acme", "items", "requests", 1, Decimal(1)),
    (date(2026, 11, 24), "globex", "items", "egress", 1, Decimal(7)),
    (date(2026, 11, 24), "globex", "items", "requests", 1, Decimal(1)),
    (date(2026, 11, 25), "", "", "", 2, Decimal(0)),
    (date(2026, 11, 25), "acme", "items", "", 1, Decimal(0)),
    (date(2026, 11, 25), "acme", "items", "egress", 2, Decimal(5373)),
    (date(2026, 11, 25), "acme", "items", "requests", 3, Decimal(3)),
    (date(2026, 11, 25), "acme", "search", "requests", 1, Decimal(1)),
    (date(2026, 11, 25), "acme", "search", "search_units", 1, Decimal(3)),
    (date(2026, 11, 25), "globex", "items", "", 1, Decimal(0)),
    (date(2026, 11, 25), "globex", "items", "egress", 1, Decimal("42.5")),
    (date(2026, 11, 25), "globex", "items", "requests", 1, Decimal(1)),
]


def test_daily_usage_after_a_refresh(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    load_dataset(warehouse)
    assert rows(client, f"SELECT count() FROM {database}.daily_usage") == [(0,)]  # not refreshed yet
    result = refresh_rollups(client, database)
    # slices: acme 11-24 23h, 11-25 10h, 11-25 11h; globex 11-24 09h, 11-25 10h; '' 11-25 11h
    assert result.slices == 6
    assert rows(client, DAILY_USAGE_SQL.format(database=database)) == DAILY_USAGE
    hourly = rows(
        client,
        f"SELECT plan, feature, meter, status_class, requests, quantity FROM {database}.usage_hourly FINAL "
        f"WHERE customer_id = 'acme' AND hour = '2026-11-25 10:00:00' AND requests > 0 ORDER BY ALL",
    )
    assert hourly == [
        ("pro", "items", "egress", "2xx", 2, Decimal(5373)),
        ("pro", "items", "requests", "2xx", 2, Decimal(2)),
        ("pro", "items", "requests", "none", 1, Decimal(1)),
    ]
    eleven = rows(
        client,
        f"SELECT feature, meter, status_class, requests FROM {database}.usage_hourly FINAL "
        f"WHERE customer_id = 'acme' AND hour = '2026-11-25 11:00:00' AND requests > 0 ORDER BY ALL",
    )
    assert eleven == [("items", "", "4xx", 1), ("search", "requests", "5xx", 1), ("search", "search_units", "5xx", 1)]


# --- rollup refresh -----------------------------------------------------------------------------------


def hourly_groups(db: ChdbDatabase, customer: str) -> list[tuple[Any, ...]]:
    return rows(
        db.client,
        f"SELECT toString(hour), meter, status_class, requests, quantity FROM {db.name}.usage_hourly FINAL "
        f"WHERE customer_id = '{customer}' ORDER BY ALL",
    )


def test_refresh_moves_a_request_from_none_to_2xx_and_is_idempotent(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    insert(warehouse, [DECISIONS[0]])  # a1: decided, status 0
    first = refresh_rollups(client, database)
    assert first.slices == 1
    hour = "2026-11-25 10:00:00"
    assert hourly_groups(warehouse, "acme") == [
        (hour, "egress", "none", 1, Decimal(100)),
        (hour, "requests", "none", 1, Decimal(1)),
    ]

    insert(warehouse, [COMPLETIONS[0]])  # a1 completed: 200, egress measured
    second = refresh_rollups(client, database)
    assert second.slices == 1
    assert second.refreshed_at > first.refreshed_at
    expected = [
        (hour, "egress", "2xx", 1, Decimal(5123)),
        (hour, "egress", "none", 0, Decimal(0)),  # the group that vanished, zeroed
        (hour, "requests", "2xx", 1, Decimal(1)),
        (hour, "requests", "none", 0, Decimal(0)),
    ]
    assert hourly_groups(warehouse, "acme") == expected
    assert rows(client, f"SELECT meter, requests, quantity FROM {database}.daily_usage ORDER BY meter") == [
        ("egress", 1, Decimal(5123)),
        ("requests", 1, Decimal(1)),
    ]

    # Again, and again with a replay: same numbers (the slice is within the safety margin, recomputed).
    third = refresh_rollups(client, database)
    assert hourly_groups(warehouse, "acme") == expected
    assert third.watermark == second.watermark
    insert(warehouse, [COMPLETIONS[0], DECISIONS[0]])
    refresh_rollups(client, database)
    assert hourly_groups(warehouse, "acme") == expected
    client.command(f"OPTIMIZE TABLE {database}.usage_hourly FINAL")
    assert hourly_groups(warehouse, "acme") == expected


def test_the_watermark_is_stored_and_bounds_the_next_scan(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    assert read_state(client, database) is None
    old = {**DECISIONS[6], "loaded_at": "2026-01-01 00:00:00.000"}  # loaded long ago
    insert(warehouse, [old])
    first = refresh_rollups(client, database)
    assert (first.slices, first.watermark) == (1, datetime(2026, 1, 1, tzinfo=UTC))
    state = read_state(client, database)
    assert state is not None
    assert (state.watermark, state.slices, state.refreshed_at) == (first.watermark, 1, first.refreshed_at)

    # A restart resumes from the stored watermark (minus the margin): a row loaded before it is not
    # scanned again (initech's, loaded "late" with an old loaded_at, stays out of the rollup).
    insert(warehouse, [{**DECISIONS[0], "customer_id": "initech", "loaded_at": "2025-12-01 00:00:00.000"}])
    insert(warehouse, [DECISIONS[0]])
    resumed = refresh_rollups(client, database)
    assert resumed.since == first.watermark
    assert resumed.slices == 2  # acme's new slice, and globex's at the watermark (within the margin)
    assert resumed.watermark > first.watermark
    customers = rows(client, f"SELECT DISTINCT customer_id FROM {database}.usage_hourly FINAL ORDER BY ALL")
    assert customers == [("acme",), ("globex",)]

    # An explicit bound past every row finds nothing and never moves the watermark back.
    later = refresh_rollups(client, database, resumed.watermark + timedelta(hours=1), margin=timedelta(0))
    assert later.slices == 0
    assert later.watermark == resumed.watermark + timedelta(hours=1)
    assert refresh_rollups(client, database, first.watermark).watermark == later.watermark


def test_refresh_versions_increase_even_when_the_clock_does_not(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    clock = ManualClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    insert(warehouse, [DECISIONS[0]])
    first = refresh_rollups(client, database, clock=clock)
    insert(warehouse, [COMPLETIONS[0]])
    second = refresh_rollups(client, database, clock=clock)  # same wall time
    assert second.refreshed_at == first.refreshed_at + timedelta(milliseconds=1)
    assert [g[2:4] for g in hourly_groups(warehouse, "acme")] == [("2xx", 1), ("none", 0), ("2xx", 1), ("none", 0)]


def test_refresh_in_small_batches_matches_one_batch(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    load_dataset(warehouse)
    assert refresh_rollups(client, database, batch_slices=1).slices == 6
    assert rows(client, DAILY_USAGE_SQL.format(database=database)) == DAILY_USAGE


# --- the cluster variant: parsed, and the same schema as the single-node one --------------------------


def cluster_statements(database: str) -> list[str]:
    return [s for m in load_migrations(CLUSTER_DIR) for s in m.statements(database)]


def test_cluster_ddl_parses(chdb_client: Any) -> None:
    statements = cluster_statements("tollway")
    assert len(statements) == 46  # 0010: 6, 0011: credit_notes_local and credit_notes, 0012: 2
    for statement in statements:
        formatted = chdb_client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows
        # An INSERT has no ON CLUSTER: it goes through a Distributed table to every shard.
        assert "ON CLUSTER" in formatted[0][0] or formatted[0][0].startswith("INSERT INTO tollway.invoice_lines_v2")


def _single_node(statement: str) -> str:
    statement = statement.replace(" ON CLUSTER '{cluster}'", "")
    return re.sub(
        r"ReplicatedReplacingMergeTree\('[^']*', '\{replica\}', ([\w, ]+)\)", r"ReplacingMergeTree(\1)", statement
    )


def test_cluster_tables_have_the_single_node_schema(warehouse: ChdbDatabase) -> None:
    client, database = warehouse
    local = f"{database}_cl"
    client.command(f"CREATE DATABASE {local}")
    try:
        for statement in cluster_statements(local):
            head = statement.splitlines()[0]
            if head.startswith(("CREATE TABLE", "ALTER TABLE")) and ("_local" in head or "rollup_state" in head):
                client.command(_single_node(statement))

        def describe(db: str, table: str) -> list[tuple[Any, ...]]:
            return rows(
                client,
                f"SELECT name, type, default_expression FROM system.columns "
                f"WHERE database = '{db}' AND table = '{table}' ORDER BY position",
            )

        def keys(db: str, table: str) -> list[tuple[Any, ...]]:
            return rows(
                client,
                f"SELECT partition_key, sorting_key FROM system.tables WHERE database = '{db}' AND name = '{table}'",
            )

        for table in (
            "usage",
            "usage_hourly",
            "rollup_state",
            "credit_ledger",
            "events",
            "webhook_deliveries",
            "invoices",
            "credit_notes",
        ):
            clustered = table if table == "rollup_state" else f"{table}_local"
            assert describe(local, clustered) == describe(database, table) != []
            assert keys(local, clustered) == keys(database, table)
        # 0005 rebuilds invoice_lines(_local) with is_deleted; the new local table takes the name.
        assert describe(local, "invoice_lines_local_v2") == describe(database, "invoice_lines")
        assert keys(local, "invoice_lines_local_v2") == keys(database, "invoice_lines")
        engines = "SELECT engine_full FROM system.tables WHERE database = '{}' AND name = '{}'"
        assert "version, is_deleted" in rows(client, engines.format(local, "invoice_lines_local_v2"))[0][0]
        assert "version, is_deleted" in rows(client, engines.format(database, "invoice_lines"))[0][0]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {local} SYNC")


def test_cluster_views_are_the_single_node_views() -> None:
    single = load_migrations()[2].statements("tw")
    clustered = [s.replace(" ON CLUSTER '{cluster}'", "") for s in load_migrations(CLUSTER_DIR)[2].statements("tw")]
    assert clustered == single
