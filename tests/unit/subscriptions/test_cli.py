"""The parts of ``tollway subscriptions`` that need no Redis: option parsing, defaults, the catalog check.
(The commands themselves run against a real Valkey in tests/integration/test_subscriptions.py.)"""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from tollway.cli import subscriptions as cli
from tollway.subscriptions import requests as subs
from tollway.subscriptions.model import Subscription

NOW = datetime(2026, 5, 3, 12, 34, 56, 789_000, tzinfo=UTC)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tollway")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["subscriptions", *argv])


def build(*argv: str, previous: Subscription | None = None, catalog_interval: str | None = None) -> Subscription:
    args = parse("set", *argv)
    return cli.build_subscription(args, NOW, previous, cli.parse_overrides(args.override), catalog_interval)


def test_overrides_parse_and_bad_ones_are_named() -> None:
    assert cli.parse_overrides(["rpm=600", " monthly_calls = 1_000 ", "zero=0"]) == {
        "rpm": 600,
        "monthly_calls": 1000,
        "zero": 0,
    }
    for bad in ("x=abc", "x", "=5", "x=-1", "x=1.5", "x=5=6"):
        with pytest.raises(ValueError, match="NAME=LIMIT") as info:
            cli.parse_overrides([bad])
        assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="given twice"):
        cli.parse_overrides(["x=1", "x=2"])
    with pytest.raises(ValueError, match="at most"):
        cli.parse_overrides([f"x={2**63}"])
    with pytest.raises(ValueError, match="override name"):
        cli.parse_overrides(["{x}=1"])


def test_times_are_now_iso_or_local_wall_clock() -> None:
    assert subs.parse_time("--start", "now", "UTC", NOW) == NOW.replace(microsecond=0)
    assert subs.parse_time("--start", "2026-03-01T08:30:00Z", "Europe/Paris", NOW) == datetime(
        2026, 3, 1, 8, 30, tzinfo=UTC
    )
    # No offset: wall-clock time in the subscription's timezone.
    assert subs.parse_time("--start", "2026-03-01", "Europe/Paris", NOW) == datetime(2026, 2, 28, 23, tzinfo=UTC)
    # ... and a time skipped by DST resolves to the end of the gap, like period boundaries.
    assert subs.parse_time("--anchor", "2026-03-29T02:30", "Europe/Paris", NOW) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="--start 'yesterday' is not 'now' or an ISO 8601"):
        subs.parse_time("--start", "yesterday", "UTC", NOW)
    with pytest.raises(ValueError, match="--start '2026-02-30'"):
        subs.parse_time("--start", "2026-02-30", "UTC", NOW)


def test_set_defaults_for_a_new_subscription() -> None:
    sub = build("--customer", "acme", "--plan", "pro")
    assert sub == Subscription.new("acme", "pro", NOW.replace(microsecond=0))
    yearly = build("--customer", "acme", "--plan", "pro", catalog_interval="year")
    assert yearly.interval == "year"
    explicit = build("--customer", "acme", "--plan", "pro", "--interval", "month")
    assert explicit.interval == "month"
    quarterly = build("--customer", "acme", "--plan", "pro", "--interval", "quarter", catalog_interval="quarter")
    assert quarterly.interval == "quarter"
    paris = build(
        "--customer", "acme", "--plan", "pro", "--timezone", "Europe/Paris", "--start", "2026-01-31T10:00",
        "--alignment", "anniversary", "--override", "rpm=5",
    )  # fmt: skip
    assert paris.started_at == paris.anchor == datetime(2026, 1, 31, 9, tzinfo=UTC)
    assert dict(paris.overrides) == {"rpm": 5}


def test_set_on_an_existing_subscription_keeps_the_cycle_and_replaces_overrides() -> None:
    previous = Subscription.new(
        "acme",
        "free",
        datetime(2025, 7, 15, 8, tzinfo=UTC),
        timezone="Asia/Kolkata",
        alignment="anniversary",
        anchor=datetime(2025, 7, 20, tzinfo=UTC),
        interval="year",
        overrides={"rpm": 5},
    )
    changed = build("--customer", "acme", "--plan", "pro", previous=previous)
    assert (changed.plan_id, changed.started_at, changed.anchor) == ("pro", previous.started_at, previous.anchor)
    assert (changed.timezone, changed.alignment, changed.interval) == ("Asia/Kolkata", "anniversary", "year")
    assert dict(changed.overrides) == {}
    restarted = build("--customer", "acme", "--plan", "pro", "--start", "now", previous=previous)
    assert restarted.started_at == restarted.anchor == NOW.replace(microsecond=0)
    assert build("--customer", "acme", "--plan", "pro", catalog_interval="year", previous=previous).interval == "year"
    monthly = build(
        "--customer", "acme", "--plan", "pro", "--start", "now", catalog_interval="month", previous=previous
    )
    assert monthly.interval == "month", "a new start may take the new plan's interval"


def test_unknown_timezone_is_a_clean_error() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Europe/Pariss'"):
        build("--customer", "acme", "--plan", "pro", "--timezone", "Europe/Pariss")


def test_argparse_rejects_unknown_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("set", "--customer", "acme", "--plan", "pro", "--alignment", "fiscal")
    assert "invalid choice: 'fiscal'" in capsys.readouterr().err


# --- the catalog check ------------------------------------------------------------------------------


def fake_catalog(monkeypatch: pytest.MonkeyPatch, interval: str | None = "year") -> None:
    plan = SimpleNamespace(
        limits=[SimpleNamespace(name="rpm")],
        quotas=[SimpleNamespace(name="monthly_calls")],
        pricing=SimpleNamespace(interval=interval) if interval else None,
    )
    # Stand-ins for the whole package, so this test does not depend on the real loader's state.
    package, loader, errors = (ModuleType(f"tollway.plans{m}") for m in ("", ".loader", ".errors"))
    package.__path__ = []
    loader.load_catalog = lambda path: SimpleNamespace(plans={"pro": plan, "free": SimpleNamespace()})  # type: ignore[attr-defined]
    errors.CatalogError = type("CatalogError", (Exception,), {})  # type: ignore[attr-defined]
    for module in (package, loader, errors):
        monkeypatch.setitem(sys.modules, module.__name__, module)


def test_catalog_check_with_a_stand_in_loader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_catalog(monkeypatch)
    path = tmp_path / "plans.yaml"
    assert cli.check_against_catalog(path, "pro", {"rpm": 1, "monthly_calls": 2}) == "year"
    assert cli.check_against_catalog(path, "free", {}) is None
    with pytest.raises(ValueError, match=r"plan 'gold' is not in the catalog .* \(plans: free, pro\)"):
        cli.check_against_catalog(path, "gold", {})
    expected = r"plan 'pro' has no limit or quota named 'burst' \(it has: monthly_calls, rpm\)"
    with pytest.raises(ValueError, match=expected):
        cli.check_against_catalog(path, "pro", {"burst": 1, "rpm": 2})


REAL_CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata:
  name: test
  version: "1"
plans:
  pro:
    limits:
      - name: rpm
        limit: 100
        per: minute
    quotas:
      - name: monthly-calls
        limit: 1000
    pricing:
      currency: USD
      interval: year
"""


def test_catalog_check_with_the_real_loader(tmp_path: Path) -> None:
    try:
        from tollway.plans.loader import load_catalog  # noqa: F401
    except ImportError:
        pytest.skip("tollway.plans.loader (the catalog loader, written in parallel) is not available yet")
    path = tmp_path / "plans.yaml"
    path.write_text(REAL_CATALOG)
    assert cli.check_against_catalog(path, "pro", {"rpm": 1, "monthly-calls": 2}) == "year"
    with pytest.raises(ValueError, match="has no limit or quota named 'burst'"):
        cli.check_against_catalog(path, "pro", {"burst": 1})
    with pytest.raises(ValueError, match="plan 'gold' is not in the catalog"):
        cli.check_against_catalog(path, "gold", {})
    path.write_text("apiVersion: nope\n")
    with pytest.raises(ValueError, match="is not valid"):
        cli.check_against_catalog(path, "pro", {})
    with pytest.raises(ValueError, match="cannot read the catalog"):
        cli.check_against_catalog(tmp_path / "missing.yaml", "pro", {})


def test_a_plan_change_is_recorded_with_its_instant() -> None:
    previous = Subscription.new("acme", "free", datetime(2026, 1, 1, tzinfo=UTC), timezone="Europe/Paris")
    now_change = build("--customer", "acme", "--plan", "pro", previous=previous)
    assert [c.as_dict() for c in now_change.changes] == [{"at": "2026-05-03T12:34:56Z", "from": "free", "to": "pro"}]
    dated = build("--customer", "acme", "--plan", "pro", "--effective", "2026-04-16", previous=previous)
    assert dated.changes[0].at == datetime(2026, 4, 15, 22, tzinfo=UTC)  # Paris midnight
    back = build("--customer", "acme", "--plan", "free", "--effective", "2026-04-20T00:00Z", previous=dated)
    assert [(c.previous_plan_id, c.plan_id) for c in back.changes] == [("free", "pro"), ("pro", "free")]
    same = build("--customer", "acme", "--plan", "pro", "--override", "rpm=5", previous=dated)
    assert same.changes == dated.changes, "no plan change: the history is kept as it is"
    restarted = build("--customer", "acme", "--plan", "pro", "--start", "2026-05-01", previous=dated)
    assert restarted.changes == (), "a new start is a new subscription"


def test_bad_plan_change_times_are_clean_errors() -> None:
    previous = Subscription.new("acme", "free", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="takes effect now or at an earlier time"):
        build("--customer", "acme", "--plan", "pro", "--effective", "2026-06-01T00:00Z", previous=previous)
    with pytest.raises(ValueError, match="must come after the start"):
        build("--customer", "acme", "--plan", "pro", "--effective", "2025-12-31T00:00Z", previous=previous)
    dated = build("--customer", "acme", "--plan", "pro", "--effective", "2026-04-01T00:00Z", previous=previous)
    with pytest.raises(ValueError, match="must come after the previous plan change"):
        build("--customer", "acme", "--plan", "free", "--effective", "2026-03-01T00:00Z", previous=dated)
    with pytest.raises(ValueError, match="--effective dates a plan change"):
        build("--customer", "acme", "--plan", "pro", "--effective", "2026-04-01T00:00Z")
    with pytest.raises(ValueError, match="--effective dates a plan change"):
        build("--customer", "acme", "--plan", "pro", "--effective", "2026-04-02T00:00Z", previous=dated)


# --- intervals against the plan's pricing interval (issue 16, item 4) ---------------------------------


def test_an_interval_the_plan_is_not_priced_per_is_refused() -> None:
    with pytest.raises(ValueError, match=r"plan 'pro' is priced per month: a subscription to it is billed monthly, "
                       r"not weekly \(--interval week\)"):  # fmt: skip
        build("--customer", "acme", "--plan", "pro", "--interval", "week", catalog_interval="month")
    with pytest.raises(ValueError, match=r"priced per quarter: .* billed quarterly, not half-yearly"):
        build("--customer", "acme", "--plan", "pro", "--interval", "half_year", catalog_interval="quarter")


def test_a_running_subscription_keeps_its_interval() -> None:
    previous = Subscription.new("acme", "free", datetime(2026, 1, 31, tzinfo=UTC), interval="quarter")
    # A plan change to a plan priced per month would cut the running quarter into months.
    with pytest.raises(ValueError, match=r"billed quarterly since 2026-01-31T00:00:00Z, and a running subscription "
                       r"keeps its interval .* start a new subscription \(--start\) to bill it monthly"):  # fmt: skip
        build("--customer", "acme", "--plan", "pro", catalog_interval="month", previous=previous)
    with pytest.raises(ValueError, match="keeps its interval"):
        build("--customer", "acme", "--plan", "free", "--interval", "week", previous=previous)
    assert build("--customer", "acme", "--plan", "pro", catalog_interval="quarter", previous=previous).interval == (
        "quarter"
    )


def test_interval_names_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("week", "month", "quarter", "half_year", "year"):
        assert parse("set", "--customer", "a", "--plan", "p", "--interval", name).interval == name
    with pytest.raises(SystemExit) as exit_info:
        parse("set", "--customer", "a", "--plan", "p", "--interval", "semiannual")
    assert exit_info.value.code == 2
    assert "interval 'semiannual' is not one of week, month, quarter, half_year, year (write 'half_year')" in (
        capsys.readouterr().err
    )
