"""``tollway db migrate`` and ``tollway db status`` run as an operator would: a subprocess, its own chdb path."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tollway_cli import CliResult
from tollway.harness.ports import free_ports

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "clickhouse" / "migrations"


def tollway_db(cwd: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_CLICKHOUSE_")}
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "db", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_failure(result: CliResult, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tollway: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_migrate_with_the_defaults_then_again_then_status(tmp_path: Path) -> None:
    first = tollway_db(tmp_path, "migrate")
    assert first.code == 0, first.stderr
    assert first.stdout.splitlines() == [
        "applied 0001_usage",
        "applied 0002_usage_hourly",
        "applied 0003_analyst_views",
        "applied 0004_invoices",
        "applied 0005_invoice_lines_tombstones",
        "applied 0006_usage_row_ids",
        "applied 0007_credit_ledger",
        "applied 0008_usage_prices",
        "applied 0009_events_webhook_deliveries",
        "applied 0010_invoice_numbers",
        "applied 0011_credit_notes",
        "applied 0012_payment_events",
        "database tollway at chdb://./.tollway/chdb: 12 migration(s) applied, now at version 0012",
    ]
    assert (tmp_path / ".tollway" / "chdb").is_dir()  # the default DSN, relative to the working directory

    second = tollway_db(tmp_path, "migrate")
    assert second.code == 0, second.stderr
    assert second.stdout.splitlines() == ["database tollway at chdb://./.tollway/chdb is up to date (version 0012)"]

    status = tollway_db(tmp_path, "status")
    assert status.code == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "database tollway at chdb://./.tollway/chdb: 12 applied, 0 pending"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["applied", "0001_usage"],
        ["applied", "0002_usage_hourly"],
        ["applied", "0003_analyst_views"],
        ["applied", "0004_invoices"],
        ["applied", "0005_invoice_lines_tombstones"],
        ["applied", "0006_usage_row_ids"],
        ["applied", "0007_credit_ledger"],
        ["applied", "0008_usage_prices"],
        ["applied", "0009_events_webhook_deliveries"],
        ["applied", "0010_invoice_numbers"],
        ["applied", "0011_credit_notes"],
        ["applied", "0012_payment_events"],
    ]


def test_settings_from_the_environment_and_flags(tmp_path: Path) -> None:
    env = {"TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'engine'}", "TOLLWAY_CLICKHOUSE_DATABASE": "usage_env"}
    pending = tollway_db(tmp_path, "status", env=env)
    assert pending.code == 0, pending.stderr
    assert pending.stdout.splitlines()[0].endswith(
        "usage_env at chdb://" + str(tmp_path / "engine") + ": 0 applied, 12 pending"
    )

    flagged = tollway_db(tmp_path, "migrate", "--database", "usage_flag", env=env)
    assert flagged.code == 0, flagged.stderr
    assert "database usage_flag at" in flagged.stdout
    assert tollway_db(tmp_path, "status", env=env).stdout.splitlines()[0].endswith(": 0 applied, 12 pending")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--dsn", "ftp://ch.example"], ["invalid ClickHouse DSN", "expected chdb:///path"]),
        (["--dsn", "localhost:8123"], ["invalid ClickHouse DSN"]),
        (["--dsn", "http://tw:s3cret@ch.example:8123/tollway"], ["not in the DSN path", "tw:***@"]),
        (["--database", "no-dashes"], ["invalid database name 'no-dashes'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    result = tollway_db(tmp_path, "migrate", *args)
    assert_one_line_failure(result, *fragments)
    assert "s3cret" not in result.stderr
    assert not (tmp_path / ".tollway").exists()


def test_bad_database_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = tollway_db(tmp_path, "status", env={"TOLLWAY_CLICKHOUSE_DATABASE": "x y"})
    assert_one_line_failure(result, "TOLLWAY_CLICKHOUSE_DATABASE", "invalid database name")


def test_unreachable_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    result = tollway_db(tmp_path, "migrate", "--dsn", f"http://tw:s3cret@127.0.0.1:{port}")
    assert_one_line_failure(result, f"cannot reach ClickHouse at http://tw:***@127.0.0.1:{port}")
    assert "s3cret" not in result.stderr


def test_an_edited_migration_is_refused(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    dsn = f"chdb://{tmp_path / 'engine'}"
    assert tollway_db(tmp_path, "migrate", "--dsn", dsn, "--migrations", str(migrations)).code == 0
    with (migrations / "0002_usage_hourly.sql").open("a") as sql:
        sql.write("\n-- an edit after the fact\n")
    result = tollway_db(tmp_path, "migrate", "--dsn", dsn, "--migrations", str(migrations))
    assert_one_line_failure(result, "migration 0002_usage_hourly changed after it was applied to database tollway")
    assert_one_line_failure(tollway_db(tmp_path, "status", "--dsn", dsn, "--migrations", str(migrations)), "changed")
