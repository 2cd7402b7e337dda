"""The migration files: naming, loading, checksums, packaging, and that readers deduplicate."""

import hashlib
import re
from pathlib import Path

import pytest

from tollway.warehouse.errors import MigrationError
from tollway.warehouse.migrations import bundled_migrations, load_migrations
from tollway.warehouse.sqltext import split_statements

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "clickhouse" / "migrations"
CLUSTER = ROOT / "clickhouse" / "cluster"


def test_bundled_migrations_are_the_clickhouse_directory() -> None:
    bundled = {m.label: m for m in load_migrations()}
    assert list(bundled) == [
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
    for path in sorted(SOURCE.glob("*.sql")):
        migration = bundled[path.stem]
        assert migration.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (bundled_migrations() / "0001_usage.sql").read_bytes() == (SOURCE / "0001_usage.sql").read_bytes()


def test_statements_name_the_database() -> None:
    for migration in load_migrations():
        statements = migration.statements("tw_test")
        assert statements
        for statement in statements:
            assert "{database}" not in statement
            assert "tw_test." in statement


def test_the_cluster_variant_mirrors_the_migrations() -> None:
    assert [p.name for p in sorted(CLUSTER.glob("*.sql"))] == [p.name for p in sorted(SOURCE.glob("*.sql"))]
    for migration in load_migrations(CLUSTER):
        for statement in migration.statements("tw"):
            if statement.startswith("CREATE"):
                assert "ON CLUSTER '{cluster}'" in statement, statement


@pytest.mark.parametrize("directory", [SOURCE, CLUSTER])
def test_every_read_of_usage_is_final(directory: Path) -> None:
    """Readers must deduplicate: no view reads plain ``usage`` or ``usage_hourly``."""
    for path in directory.glob("*.sql"):
        for statement in split_statements(path.read_text()):
            for match in re.finditer(r"\bFROM\s+\{database\}\.(usage\w*)(\s+\w+)?", statement):
                table, modifier = match.group(1), (match.group(2) or "").strip()
                if table in ("usage", "usage_hourly"):
                    assert modifier == "FINAL", f"{path.name}: {match.group(0)!r}"


def test_misnamed_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_usage.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name"):
        load_migrations(tmp_path)


def test_duplicate_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="two migrations have version 0001"):
        load_migrations(tmp_path)


def test_no_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not SQL")
    with pytest.raises(MigrationError, match="no migration files"):
        load_migrations(tmp_path)


def test_unterminated_quote_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "0001_bad.sql").write_text("SELECT 'oops;")
    with pytest.raises(MigrationError, match=r"0001_bad\.sql: unterminated"):
        load_migrations(tmp_path)


def test_files_are_ordered_by_version(tmp_path: Path) -> None:
    (tmp_path / "0010_later.sql").write_text("SELECT 10;")
    (tmp_path / "0002_sooner.sql").write_text("SELECT 2;")
    assert [m.label for m in load_migrations(tmp_path)] == ["0002_sooner", "0010_later"]
