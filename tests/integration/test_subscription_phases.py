"""Phases end to end (issue 16, item 2): a trial that converts (through a discounted ramp), a trial that
ends early by an upgrade mid-day, and a shorter trial asked for explicitly. The catalog and the expected
invoices are docs/billing.md's worked example ("Phases: trials and ramps"), read from the page, so the
page and the code cannot drift apart; the arithmetic is repeated here to be checked by hand.

Hand-computed (USD, each line rounded once; every customer starts 2 November 2026 00:00 UTC, calendar
months; November has 30 days, December 31):

- alice (catalog phases: trial 14 days free, then intro 1 period at 50 % off, then pro). November:
  trial 2–16 Nov = 0.00 (2 requests, free); intro 16 Nov–1 Dec = 15/30 of the month:
  31.00 × 0.5 = 15.50, + 3 × 0.10 = 0.30 → 15.80, − 50 % = 7.90 → **7.90**. December: intro 1–16 Dec =
  15/31: 31.00 × 15/31 = 15.00, − 50 % = 7.50; pro 16 Dec–1 Jan = 16/31: 31.00 × 16/31 = 16.00 →
  7.50 + 16.00 = **23.50**.
- bob (catalog phases, then `set --plan team --effective 2026-11-08T12:00:00Z`): November: trial 2 Nov
  00:00 – 8 Nov 12:00 = 0.00 (1 request, free); team 8 Nov 12:00 – 1 Dec = 22.5 days of 30 = 0.75:
  62.00 × 0.75 = 46.50, + 4 × 0.20 = 0.80 → **47.30**. December: team, **62.00**.
- carol (`--phase pro:trial=7d`: no ramp). November: trial 2–9 Nov = 0.00; pro 9 Nov – 1 Dec = 22/30:
  31.00 × 0.733333333333 = 22.73333… → 22.73, + 1 × 0.10 → **22.83**. December: pro, **31.00**.
"""

import argparse
import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import EnvoyFactory
from tests.support.admin_api import AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.inprocess_tollway import inprocess_tollway
from tests.support.tollway_cli import create_key
from tests.support.usage_rows import usage_row
from tollway.admin.scopes import Scope
from tollway.billing.invoices import BillingMonth, build_invoices
from tollway.cli import subscriptions as cli
from tollway.cli.main import main
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog
from tollway.settings import Settings
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "billing.md"
START = datetime(2026, 11, 2, tzinfo=UTC)
UPGRADE_DAY = datetime(2026, 11, 8, 13, tzinfo=UTC)
BILLING_DAY = datetime(2027, 1, 2, 12, tzinfo=UTC)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def doc_example() -> tuple[str, dict[str, dict[str, str]]]:
    """The example's catalog and its table, by customer."""
    section = DOC.read_text().split("<!-- phases-example -->", 1)[1].split("\n## ", 1)[0]
    catalog = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = cells(table[0])
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in (cells(line) for line in table[2:])}
    return catalog, rows


CATALOG, EXPECTED = doc_example()


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tollway")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["subscriptions", *argv])


def run_cli(valkey: ValkeyServer, now: datetime, *argv: str) -> int:
    settings = Settings(redis_url=valkey.url)  # type: ignore[arg-type]
    return asyncio.run(cli.run(cli_args(*argv), settings, clock=ManualClock(now)))


def stored(valkey: ValkeyServer) -> dict[str, Subscription]:
    async def go() -> dict[str, Subscription]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return {s.customer_id: s for s in await RedisSubscriptionStore(redis).list()}
        finally:
            await redis.aclose()

    return asyncio.run(go())


def store_raw(valkey: ValkeyServer) -> dict[str, dict[str, str]]:
    async def go() -> dict[str, dict[str, str]]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            keys = sorted(await redis.keys("tw:*"))
            return {key: await redis.hgetall(key) if await redis.type(key) == "hash" else {} for key in keys}
        finally:
            await redis.aclose()

    return asyncio.run(go())


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


def subscribe_all(valkey: ValkeyServer, catalog: Path) -> None:
    """alice and bob with the catalog's phases, carol with a 7-day trial; bob upgrades mid-day."""
    for customer, more in (("alice", ()), ("bob", ()), ("carol", ("--phase", "pro:trial=7d"))):
        assert run_cli(valkey, START, "set", "--customer", customer, "--plan", "pro", "--start", "2026-11-02",
                       "--catalog", str(catalog), *more) == 0  # fmt: skip
    assert run_cli(valkey, UPGRADE_DAY, "set", "--customer", "bob", "--plan", "team",
                   "--effective", "2026-11-08T12:00:00Z", "--catalog", str(catalog)) == 0  # fmt: skip


def usage(customer: str, count: int, day: str) -> bytes:
    return b"".join(
        usage_row(f"{customer}-{day}-{n}", f"{day} 10:00:0{n}.000", customer, {"requests": 1}, plan="pro")
        for n in range(count)
    )


def test_a_trial_that_converts_and_one_ended_by_an_upgrade_bill_the_hand_computed_invoices(
    chdb_db: ChdbDatabase, valkey_fresh: ValkeyServer, catalog: Path
) -> None:
    client, database = chdb_db
    Migrator(client, database).migrate()
    subscribe_all(valkey_fresh, catalog)
    subscriptions = stored(valkey_fresh)
    assert [c.as_dict() for c in subscriptions["alice"].changes] == [
        {"at": "2026-11-16T00:00:00Z", "from": "pro:trial", "to": "pro:intro", "phase": True},
        {"at": "2026-12-16T00:00:00Z", "from": "pro:intro", "to": "pro", "phase": True},
    ]
    # The upgrade ended bob's trial at 12:00 and dropped the phases still to come.
    assert [c.as_dict() for c in subscriptions["bob"].changes] == [
        {"at": "2026-11-08T12:00:00Z", "from": "pro:trial", "to": "team"}
    ]
    assert [c.as_dict() for c in subscriptions["carol"].changes] == [
        {"at": "2026-11-09T00:00:00Z", "from": "pro:trial", "to": "pro", "phase": True}
    ]
    insert_json_rows(
        client,
        database,
        "usage",
        usage("alice", 2, "2026-11-05")  # during the trial: free
        + usage("alice", 3, "2026-11-20")
        + usage("bob", 1, "2026-11-04")  # during the trial: free
        + usage("bob", 4, "2026-11-20")
        + usage("carol", 1, "2026-11-10"),
    )
    loaded = load_catalog(catalog)
    for month, label in ((11, "November"), (12, "December")):
        invoices, skipped = build_invoices(
            client, database, loaded, list(subscriptions.values()), BillingMonth(2026, month), now=BILLING_DAY
        )
        assert skipped == []
        got = {i.customer_id: (f"{i.total:.2f}", ", ".join(p.draft.plan_id for p in i.parts)) for i in invoices}
        assert got == {
            customer: (row[f"{label} total (USD)"], row[f"{label} parts"]) for customer, row in EXPECTED.items()
        }
    # Written out, the arithmetic of the docstring: each phase is a prorated part.
    november, _ = build_invoices(
        client, database, loaded, [subscriptions["alice"]], BillingMonth(2026, 11), now=BILLING_DAY
    )
    trial, intro = november[0].parts
    assert (trial.draft.total, trial.draft.period.fraction) == (0, Decimal("0.466666666667"))  # 14/30, free
    assert intro.draft.period.fraction == Decimal("0.5")  # 15/30
    assert [(line.discount_id or line.charge_id, f"{line.amount}") for line in intro.draft.lines] == [
        ("platform", "15.50"),
        ("calls", "0.30"),
        ("phase-intro", "-7.90"),
    ]


def test_overlapping_gapped_and_unknown_phases_are_refused_and_write_nothing(
    valkey_fresh: ValkeyServer, catalog: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribe_all(valkey_fresh, catalog)
    state = store_raw(valkey_fresh)
    monkeypatch.setenv("TOLLWAY_REDIS_URL", valkey_fresh.url)
    base = ["subscriptions", "set", "--customer", "dave", "--plan", "pro", "--start", "2026-11-02"]
    for more, message in (
        (["--phase", "pro:trial=2026-11-02..2026-11-16", "--phase", "pro:intro=2026-11-10..2026-12-10"],
         "phase 2 (pro:intro from 2026-11-10T00:00:00Z until 2026-12-10T00:00:00Z) overlaps the phase before it"),
        (["--phase", "pro:trial=2026-11-02..2026-11-16", "--phase", "pro:intro=2026-11-20..2026-12-10"],
         "phase 2 (pro:intro from 2026-11-20T00:00:00Z until 2026-12-10T00:00:00Z) leaves a gap"),
        (["--phase", "pro:trial=2026-11-02..2026-11-01"], "ends at 2026-11-01T00:00:00Z, not after it starts"),
        (["--phase", "pro:trial=0d"], "a phase lasts from 1 to 3660 days or periods"),
        (["--phase", "pro:trial=14d", "--phase", "pro:trial=3periods"], "is on the same plan as phase 1"),
        (["--phase", "pro:promo=14d"], "phase 1: plan 'pro:promo' is not in the catalog"),
    ):  # fmt: skip
        code = main([*base, *more, "--catalog", str(catalog)])
        err = capsys.readouterr().err
        assert code == 2, (more, err)
        assert message in err, err
        assert store_raw(valkey_fresh) == state, more
    # Phases are given when a subscription starts: not to a running one.
    code = main(["subscriptions", "set", "--customer", "alice", "--plan", "pro", "--phase", "pro:trial=3d",
                 "--catalog", str(catalog)])  # fmt: skip
    assert code == 2
    assert "phases are given when a subscription starts" in capsys.readouterr().err
    assert store_raw(valkey_fresh) == state
    # Re-running the command that started a subscription with its phases changes nothing.
    assert run_cli(valkey_fresh, UPGRADE_DAY, "set", "--customer", "carol", "--plan", "pro", "--start", "2026-11-02",
                   "--phase", "pro:trial=7d", "--catalog", str(catalog)) == 0  # fmt: skip
    assert store_raw(valkey_fresh) == state
    # --end-phase converts early: the trial ends at --effective and the plan starts then (no ramp).
    assert run_cli(valkey_fresh, UPGRADE_DAY, "set", "--customer", "alice", "--plan", "pro", "--end-phase",
                   "--effective", "2026-11-08T12:00:00Z", "--catalog", str(catalog)) == 0  # fmt: skip
    assert [c.as_dict() for c in stored(valkey_fresh)["alice"].changes] == [
        {"at": "2026-11-08T12:00:00Z", "from": "pro:trial", "to": "pro"}
    ]
    code = main(["subscriptions", "set", "--customer", "alice", "--plan", "pro", "--end-phase",
                 "--catalog", str(catalog)])  # fmt: skip
    assert code == 2
    assert "with no phase after" in capsys.readouterr().err


def test_the_admin_api_takes_phases_refuses_overlaps_and_ends_a_trial_by_a_plan_change(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, catalog: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        for customer in ("dave", "erin", "fred"):
            created = await api.http.post("/customers", json={"customer_id": customer}, headers=writer)
            assert created.status_code == 201
        path = "/customers/dave/subscription"
        for phases, fragment in (
            (
                [{"plan_id": "pro:trial", "end": "2026-11-16"}, {"plan_id": "pro:intro", "start": "2026-11-12",
                                                                  "days": 5}],
                "overlaps the phase before it",
            ),
            ([{"plan_id": "pro:trial", "days": 14, "periods": 1}], "give exactly one of days, periods or an end"),
            ([{"plan_id": "pro:trial", "days": 0}], "greater than or equal to 1"),
            ([{"plan_id": "nope:trial", "days": 3}], "plan 'nope:trial' is not in the catalog"),
        ):  # fmt: skip
            refused = await api.http.put(
                path, json={"plan_id": "pro", "started_at": "2026-11-02", "phases": phases}, headers=writer
            )
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert fragment in json.dumps(refused.json()), refused.text
            assert (await api.http.get(path, headers=writer)).status_code == 404  # nothing written

        # The catalog's phases by default; an explicit list replaces them ([] gives none).
        put = await api.http.put(path, json={"plan_id": "pro", "started_at": "2026-11-02"}, headers=writer)
        assert put.status_code == 201, put.text
        assert put.json()["plan_changes"] == [
            {"at": "2026-11-16T00:00:00Z", "from": "pro:trial", "to": "pro:intro", "phase": True},
            {"at": "2026-12-16T00:00:00Z", "from": "pro:intro", "to": "pro", "phase": True},
        ]
        erin = await api.http.put(
            "/customers/erin/subscription",
            json={"plan_id": "pro", "started_at": "2026-11-02", "phases": []},
            headers=writer,
        )
        assert (erin.json()["plan_id"], erin.json()["plan_changes"]) == ("pro", [])

        # An upgrade mid-day during the trial ends it then; the phases to come are dropped.
        change = await api.http.post(
            path + "/plan-changes", json={"plan_id": "team", "effective": "2026-11-08T12:00:00Z"}, headers=writer
        )
        assert change.status_code == 201, change.text
        assert change.json()["plan_changes"] == [{"at": "2026-11-08T12:00:00Z", "from": "pro:trial", "to": "team"}]
        # Naming the plan the phases lead to converts early; without phases it is a conflict, as before.
        fred = "/customers/fred/subscription"
        created = await api.http.put(fred, json={"plan_id": "pro", "started_at": "2026-11-02"}, headers=writer)
        assert created.status_code == 201, created.text
        early = await api.http.post(
            fred + "/plan-changes", json={"plan_id": "pro", "effective": "2026-11-08T00:00:00Z"}, headers=writer
        )
        assert early.status_code == 201, early.text
        assert early.json()["plan_changes"] == [{"at": "2026-11-08T00:00:00Z", "from": "pro:trial", "to": "pro"}]
        for who in ("fred", "erin"):
            again = await api.http.post(f"/customers/{who}/subscription/plan-changes", json={"plan_id": "pro"},
                                        headers=writer)  # fmt: skip
            assert again.status_code == 409, again.text

    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db, catalog=catalog, now=UPGRADE_DAY) as api:
            await scenario(api)

    asyncio.run(go())


@pytest.fixture
def gateway_stack(
    valkey_fresh: ValkeyServer, envoy_factory: EnvoyFactory, catalog: Path
) -> Iterator[tuple[httpx.Client, ManualClock, dict[str, str]]]:
    subscribe_all(valkey_fresh, catalog)
    keys = {c: str(create_key(valkey_fresh.url, c)["api_key"]) for c in ("alice", "bob")}
    clock = ManualClock(datetime(2026, 11, 5, 12, tzinfo=UTC))
    with inprocess_tollway(valkey_fresh.url, catalog, clock=clock) as tollway:
        envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
            yield client, clock, keys


def admitted(client: httpx.Client, key: str, most: int = 12) -> int:
    """How many requests are admitted before the first 429 (at most ``most`` are sent)."""
    for count in range(most):
        response = client.get("/v1/items/1", headers={"authorization": f"Bearer {key}"})
        if response.status_code == 429:
            return count
        assert response.status_code == 200, response.text
    return most


def test_the_gateway_enforces_the_phase_in_force_and_a_period_keeps_its_quota_usage_across_phases(
    gateway_stack: tuple[httpx.Client, ManualClock, dict[str, str]],
) -> None:
    client, clock, keys = gateway_stack
    # 5 November: alice is in her trial (pro's quota: 5 a month); she uses 2.
    assert admitted(client, keys["alice"], most=2) == 2
    # 20 November: the intro phase (a plan change mid-period); the counter is the period's, not the plan's.
    clock.set(datetime(2026, 11, 20, 12, tzinfo=UTC))
    assert admitted(client, keys["alice"]) == 3
    # bob upgraded on 8 November: team's quota (8) is enforced.
    assert admitted(client, keys["bob"]) == 8
    # December: a new period, alice's intro phase still in force with pro's quota.
    clock.set(datetime(2026, 12, 2, tzinfo=UTC))
    assert admitted(client, keys["alice"]) == 5
