import argparse
import shutil
from pathlib import Path

import pytest

from tollway.cli import plans
from tollway.plans.loader import load_compiled_catalog
from tollway.settings import Settings

ROOT = Path(__file__).parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "catalogs"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tollway")
    commands = parser.add_subparsers(dest="command", required=True)
    plans.register(commands)
    return plans.run(parser.parse_args(list(argv)), Settings())


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    catalog = ROOT / "plans" / "catalog.yaml"
    assert run("plans", "validate", str(catalog), str(ROOT / "plans" / "configmap.yaml")) == 0
    out = capsys.readouterr().out.splitlines()
    digest = load_compiled_catalog(catalog).digest
    assert out[0] == (
        f"{catalog}: ok — catalog acme-data-api version 2026-12-07.1, 9 plans, 5 features, digest {digest}"
    )
    assert out[1:4] == [
        "  plan payg: prepaid in credits (worth 0.01 USD each)",
        "    burns in real time:",
        "      calls (per_unit): requests, 1 per request",
    ]
    assert out[4].startswith(str(ROOT / "plans" / "configmap.yaml"))
    assert out[4].endswith(digest)


def test_validate_reports_every_issue_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = ROOT / "plans" / "catalog.yaml", FIXTURES / "several-errors.yaml"
    assert run("plans", "validate", str(good), str(bad)) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ok")
    errors = captured.err.splitlines()
    assert len(errors) == 9
    assert all(line.startswith(f"{bad}:") for line in errors)


def test_validate_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("plans", "validate", str(tmp_path / "missing.yaml")) == 1
    assert "cannot read" in capsys.readouterr().err


def test_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = tmp_path / "catalog.yaml"
    shutil.copy(ROOT / "plans" / "catalog.yaml", catalog)
    assert run("plans", "routes", str(catalog)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["METHODS", "PATH", "KIND", "FEATURE", "COST"]
    assert lines[1].split() == ["GET,HEAD", "/v1/items", "exact", "items-read", "1"]
    assert lines[-1].split() == ["*", "/v1/admin/", "prefix", "admin", "1"]
    assert run("plans", "routes", str(FIXTURES / "yaml-syntax.yaml")) == 1


def test_validate_explains_what_burns_in_real_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.plans.test_realtime import CATALOG

    path = tmp_path / "money.yaml"
    path.write_text(CATALOG)
    assert run("plans", "validate", str(path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: ok — catalog money version 1, 5 plans, 2 features, digest sha256:")
    plans = [line.split(":")[0].strip() for line in out if line.startswith("  plan ")]
    assert plans == ["plan payg", "plan listed", "plan capped", "plan in-thirds"]  # not `free`: no money
    assert "  plan capped: postpaid; spend cap 10.00 USD per period (soft)" in out
    assert "      calls (allowance): requests, 1 per request" in out
    start = out.index(
        "  plan in-thirds: prepaid in thirds (worth 0.03 USD each); spend cap 10.00 USD per period (hard)"
        " = 333.333333 thirds"
    )
    assert out[start + 1 :] == ["    burns in real time:", "      calls (per_unit): requests, 1 per request"]
