"""Plan versions end to end (issue 16, item 1): a price change with two existing subscribers and a new one,
a migration preview then a migration from the next period on, and the gateway enforcing each subscriber's
version. The catalog and the expected invoices are docs/billing.md's worked example ("Plan versions,
grandfathering and migrations"), read from the page, so the page and the code cannot drift apart.

Hand-computed (USD, each line rounded once): October — alice 10.00 + 3 × 0.10 = 10.30, bob 10.00 + 2 ×
0.10 = 10.20 (both on version 1, the same under the catalog before the change), carol 12.00 + 4 × 0.20 =
12.80 (version 2); November — alice 10.00 + 1 × 0.10 = 10.10, bob (migrated) 12.00 + 4 × 0.20 = 12.80,
carol 12.00. The preview on 20 October: bob's October 10.20 → 10.20, November (no usage yet) 10.00 → 12.00.
"""

import argparse
import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import EnvoyFactory
from tests.support.admin_api import AdminApi, admin_api, insert_usage
from tests.support.chdb_engine import ChdbDatabase
from tests.support.inprocess_tollway import inprocess_tollway
from tests.support.tollway_cli import create_key
from tests.support.usage_rows import usage_row
from tollway.admin.scopes import Scope
from tollway.billing.invoices import BillingMonth, build_invoices
from tollway.cli import subscriptions as cli
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog, load_catalog_text
from tollway.settings import Settings
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "billing.md"
SEPTEMBER = datetime(2026, 9, 1, 12, tzinfo=UTC)
OCTOBER = datetime(2026, 10, 1, 12, tzinfo=UTC)
PREVIEW_DAY = datetime(2026, 10, 20, 12, tzinfo=UTC)
NOVEMBER_START = datetime(2026, 11, 1, tzinfo=UTC)
BILLING_DAY = datetime(2026, 12, 2, 12, tzinfo=UTC)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def doc_example() -> tuple[str, dict[str, dict[str, str]]]:
    """The example's catalog and its table, by customer."""
    section = DOC.read_text().split("<!-- versions-example -->", 1)[1].split("\n## ", 1)[0]
    catalog = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = cells(table[0])
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in (cells(line) for line in table[2:])}
    return catalog, rows


AFTER, EXPECTED = doc_example()


def before_catalog() -> str:
    """The catalog before the price change: pro unversioned, its body (and digest) version 1's."""
    version_1 = re.search(r"\n      1:\n(.*?)\n      2:\n", AFTER, re.S)
    assert version_1 is not None
    body = "\n".join(line[4:] for line in version_1.group(1).splitlines())
    return AFTER.split("    versions:\n", 1)[0] + body + "\n"


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


def subscribe_all(valkey: ValkeyServer, tmp_path: Path) -> None:
    """alice and bob before the price change, carol after (with the catalog of the day)."""
    for customer in ("alice", "bob"):
        assert run_cli(valkey, SEPTEMBER, "set", "--customer", customer, "--plan", "pro", "--start", "2026-09-01",
                       "--catalog", str(tmp_path / "before.yaml")) == 0  # fmt: skip
    assert run_cli(valkey, OCTOBER, "set", "--customer", "carol", "--plan", "pro", "--start", "2026-10-01",
                   "--catalog", str(tmp_path / "after.yaml")) == 0  # fmt: skip


@pytest.fixture
def catalogs(tmp_path: Path) -> Path:
    (tmp_path / "before.yaml").write_text(before_catalog())
    (tmp_path / "after.yaml").write_text(AFTER)
    return tmp_path


def usage(customer: str, count: int, day: str) -> bytes:
    return b"".join(
        usage_row(f"{customer}-{day}-{n}", f"{day} 10:00:0{n}.000", customer, {"requests": 1}, plan="pro")
        for n in range(count)
    )


def totals(client: Any, database: str, catalog_path: Path, subscriptions: list[Subscription], month: int) -> dict:
    invoices, _ = build_invoices(
        client, database, load_catalog(catalog_path), subscriptions, BillingMonth(2026, month), now=BILLING_DAY
    )
    return {i.customer_id: (f"{i.total:.2f}", [part.draft.plan_id for part in i.parts]) for i in invoices}


class NoClose:
    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def close(self) -> None:  # the fixture's client is shared by the whole session
        pass


def test_a_price_change_grandfathers_existing_subscribers_and_a_migration_moves_one_from_the_next_period(
    chdb_db: ChdbDatabase,
    valkey_fresh: ValkeyServer,
    catalogs: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, database = chdb_db
    Migrator(client, database).migrate()
    monkeypatch.setattr(cli, "open_warehouse", lambda _settings: NoClose(client))
    monkeypatch.setenv("TOLLWAY_CLICKHOUSE_DATABASE", database)
    after = load_catalog_text(AFTER, "after.yaml")
    before = load_catalog_text(before_catalog(), "before.yaml")
    # Moving pro's body under versions: {1: …} keeps its published digest (the catalog loaded: it matched).
    assert before.plans["pro"].published == after.plans["pro@1"].published is not None

    subscribe_all(valkey_fresh, catalogs)
    subscriptions = stored(valkey_fresh)
    assert {c: s.plan_id for c, s in subscriptions.items()} == {"alice": "pro", "bob": "pro", "carol": "pro@2"}
    insert_json_rows(
        client,
        database,
        "usage",
        usage("alice", 3, "2026-10-05") + usage("bob", 2, "2026-10-06") + usage("carol", 4, "2026-10-07"),
    )

    # The price change leaves the existing invoices as they were; the new subscriber pays the new price.
    existing = [subscriptions["alice"], subscriptions["bob"]]
    october_before = totals(client, database, catalogs / "before.yaml", existing, 10)
    october = totals(client, database, catalogs / "after.yaml", list(subscriptions.values()), 10)
    assert {c: october[c] for c in ("alice", "bob")} == october_before
    assert {c: total for c, (total, _) in october.items()} == {
        c: row["October total (USD)"] for c, row in EXPECTED.items()
    }
    assert {c: plans for c, (_, plans) in october.items()} == {c: [row["October plan"]] for c, row in EXPECTED.items()}

    # The preview: bob's current invoice unchanged, the next one at the new fixed fee; nothing written.
    state = store_raw(valkey_fresh)
    capsys.readouterr()
    assert run_cli(valkey_fresh, PREVIEW_DAY, "migrate", "--customer", "bob", "--to", "pro@2", "--preview",
                   "--catalog", str(catalogs / "after.yaml"), "--json") == 0  # fmt: skip
    preview = json.loads(capsys.readouterr().out)
    [bob] = preview["preview"]
    assert (bob["customer_id"], bob["from"], bob["to"]) == ("bob", "pro", "pro@2")
    assert (bob["effective_at"], bob["scheduled"]) == ("2026-11-01T00:00:00Z", True)
    assert [
        (p["period"], p["start"], p["before"]["total"], p["after"]["total"], p["difference"]) for p in bob["invoices"]
    ] == [
        ("current", "2026-10-01T00:00:00Z", "10.20", "10.20", "0.00"),
        ("next", "2026-11-01T00:00:00Z", "10.00", "12.00", "2.00"),
    ]
    assert bob["invoices"][1]["after"]["plans"] == ["pro@2"]
    assert store_raw(valkey_fresh) == state

    # The migration, from bob's next period on.
    assert run_cli(valkey_fresh, PREVIEW_DAY, "migrate", "--customer", "bob", "--to", "pro@2",
                   "--catalog", str(catalogs / "after.yaml"), "--json") == 0  # fmt: skip
    done = json.loads(capsys.readouterr().out)
    assert done == {
        "migrated": [
            {
                "customer_id": "bob",
                "from": "pro",
                "to": "pro@2",
                "effective_at": "2026-11-01T00:00:00Z",
                "scheduled": True,
                "cancelled": False,
            }
        ],
        "unchanged": [],
    }
    subscriptions = stored(valkey_fresh)
    assert [c.as_dict() for c in subscriptions["bob"].changes] == [
        {"at": "2026-11-01T00:00:00Z", "from": "pro", "to": "pro@2"}
    ]
    assert {c: s.plan_id for c, s in subscriptions.items() if c != "bob"} == {"alice": "pro", "carol": "pro@2"}

    insert_json_rows(client, database, "usage", usage("alice", 1, "2026-11-03") + usage("bob", 4, "2026-11-04"))
    after_path = catalogs / "after.yaml"
    assert totals(client, database, after_path, list(subscriptions.values()), 10) == october  # October stands
    november = totals(client, database, after_path, list(subscriptions.values()), 11)
    assert {c: total for c, (total, _) in november.items()} == {
        c: row["November total (USD)"] for c, row in EXPECTED.items()
    }
    assert {c: plans for c, (_, plans) in november.items()} == {
        c: [row["November plan"]] for c, row in EXPECTED.items()
    }


def test_a_migration_to_a_version_that_does_not_exist_is_refused_and_writes_nothing(
    valkey_fresh: ValkeyServer, catalogs: Path
) -> None:
    subscribe_all(valkey_fresh, catalogs)
    state = store_raw(valkey_fresh)
    after = str(catalogs / "after.yaml")
    for argv, message in (
        (("--customer", "bob", "--to", "pro@3"), "cannot migrate to 'pro@3': no such plan version (plan 'pro' has"),
        (("--from", "pro@1", "--to", "pro@9"), "no such plan version (plan 'pro' has versions 1, 2)"),
        (("--customer", "bob", "--to", "team@2"), "no such plan version (the catalog has no plan 'team')"),
        (("--customer", "bob", "--to", "pro@02"), "must be a whole number from 1"),
        (("--customer", "bob", "--to", "pro@2", "--effective", "2026-10-19"), "takes effect now or later"),
        (("--customer", "carol", "--to", "pro@1", "--effective", "2026-10-01T06:00"), "takes effect now or later"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            run_cli(valkey_fresh, PREVIEW_DAY, "migrate", *argv, "--catalog", after)
        assert store_raw(valkey_fresh) == state, argv


def test_set_pins_the_latest_version_for_a_new_plan_and_keeps_the_one_a_customer_holds(
    valkey_fresh: ValkeyServer, catalogs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribe_all(valkey_fresh, catalogs)
    after = str(catalogs / "after.yaml")
    # Changing alice's overrides with the bare id keeps her version (1, stored as "pro"): never a migration.
    assert run_cli(valkey_fresh, PREVIEW_DAY, "set", "--customer", "alice", "--plan", "pro", "--override", "monthly=4",
                   "--catalog", after) == 0  # fmt: skip
    alice = stored(valkey_fresh)["alice"]
    assert (alice.plan_id, dict(alice.overrides), alice.changes) == ("pro", {"monthly": 4}, ())
    # An unknown version is refused before anything is written.
    state = store_raw(valkey_fresh)
    for plan in ("pro@3", "pro@0"):
        with pytest.raises(ValueError, match=re.escape(f"plan {plan!r} is not in the catalog")):
            run_cli(valkey_fresh, PREVIEW_DAY, "set", "--customer", "dave", "--plan", plan, "--catalog", after)
    assert store_raw(valkey_fresh) == state
    # Every subscriber of version 1 (stored as "pro"), to the latest version, from each one's next period.
    capsys.readouterr()
    assert run_cli(valkey_fresh, PREVIEW_DAY, "migrate", "--from", "pro@1", "--to", "pro", "--catalog", after) == 0
    assert capsys.readouterr().out.splitlines() == [
        "migrated alice: pro → pro@2 scheduled from 2026-11-01T00:00:00Z",
        "migrated bob: pro → pro@2 scheduled from 2026-11-01T00:00:00Z",
    ]
    assert {c: s.plan_id for c, s in stored(valkey_fresh).items()} == {
        "alice": "pro@2",
        "bob": "pro@2",
        "carol": "pro@2",
    }


@pytest.fixture
def gateway_stack(
    valkey_fresh: ValkeyServer, envoy_factory: EnvoyFactory, catalogs: Path
) -> Iterator[tuple[httpx.Client, ManualClock, dict[str, str]]]:
    subscribe_all(valkey_fresh, catalogs)
    keys = {c: str(create_key(valkey_fresh.url, c)["api_key"]) for c in ("alice", "bob", "carol")}
    assert run_cli(valkey_fresh, PREVIEW_DAY, "migrate", "--customer", "bob", "--to", "pro@2",
                   "--catalog", str(catalogs / "after.yaml")) == 0  # fmt: skip
    clock = ManualClock(PREVIEW_DAY)
    with inprocess_tollway(valkey_fresh.url, catalogs / "after.yaml", clock=clock) as tollway:
        envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
            yield client, clock, keys


def admitted(client: httpx.Client, key: str) -> int:
    """How many requests the month's quota admits before the first 429."""
    for count in range(10):
        response = client.get("/v1/items/1", headers={"authorization": f"Bearer {key}"})
        if response.status_code == 429:
            return count
        assert response.status_code == 200, response.text
    raise AssertionError("no 429 after 10 requests")


def test_the_gateway_enforces_each_subscribers_version(
    gateway_stack: tuple[httpx.Client, ManualClock, dict[str, str]],
) -> None:
    client, clock, keys = gateway_stack
    # October: bob's migration is scheduled, not in force; carol is on version 2.
    assert {c: admitted(client, key) for c, key in keys.items()} == {"alice": 3, "bob": 3, "carol": 5}
    clock.set(NOVEMBER_START)  # bob's next period: version 2 from its first instant
    assert {c: admitted(client, key) for c, key in keys.items()} == {"alice": 3, "bob": 5, "carol": 5}


def test_the_admin_api_pins_new_subscribers_and_previews_then_migrates(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, catalogs: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        for customer, plan in (("bob", "pro@1"), ("carol", "pro")):
            assert (
                await api.http.post("/customers", json={"customer_id": customer}, headers=writer)
            ).status_code == 201
            put = await api.http.put(
                f"/customers/{customer}/subscription",
                json={"plan_id": plan, "started_at": "2026-09-01"},
                headers=writer,
            )
            assert put.status_code == 201, put.text
        assert (await api.http.get("/customers/carol/subscription", headers=writer)).json()["plan_id"] == "pro@2"
        insert_usage(chdb_db, [usage("bob", 2, "2026-10-06")])
        path = "/customers/bob/subscription"
        bob = (await api.http.get(path, headers=writer)).json()

        for body, status, slug, fragment in (
            ({"to": "pro@9"}, 422, "validation-error", "no such plan version (plan 'pro' has versions 1, 2)"),
            ({"to": "pro@2", "effective": "2026-10-01"}, 422, "validation-error", "takes effect now or later"),
            ({"to": "pro@2", "colour": "red"}, 422, "validation-error", "colour"),
        ):
            refused = await api.http.post(path + "/migrations", json=body, headers=writer)
            assert refused.status_code == status, refused.text
            assert refused.json()["type"].endswith("/" + slug)
            assert fragment in json.dumps(refused.json())
        already = await api.http.post("/customers/carol/subscription/migrations", json={"to": "pro"}, headers=writer)
        assert already.status_code == 409, already.text

        preview = await api.http.post(path + "/migrations", json={"to": "pro@2", "preview": True}, headers=writer)
        assert preview.status_code == 200, preview.text
        shown = preview.json()
        assert (shown["from"], shown["to"], shown["effective_at"], shown["scheduled"]) == (
            "pro@1",
            "pro@2",
            "2026-11-01T00:00:00Z",
            True,
        )
        assert [(p["period"], p["before"]["total"], p["after"]["total"]) for p in shown["invoices"]] == [
            ("current", "10.20", "10.20"),
            ("next", "10.00", "12.00"),
        ]
        assert (await api.http.get(path, headers=writer)).json() == bob  # a preview writes nothing

        done = await api.http.post(path + "/migrations", json={"to": "pro@2"}, headers=writer)
        assert done.status_code == 201, done.text
        assert done.json()["invoices"] is None
        now = (await api.http.get(path, headers=writer)).json()
        assert now["plan_changes"] == [{"at": "2026-11-01T00:00:00Z", "from": "pro@1", "to": "pro@2"}]
        actions = [e["action"] for e in (await api.http.get("/audit", headers=writer)).json()["items"]]
        assert actions.count("subscription.migrate") == 1
        again = await api.http.post(path + "/migrations", json={"to": "pro@2"}, headers=writer)
        assert again.status_code == 422
        assert "already has a plan change scheduled" in again.text
        # Back to the version held: the scheduled change is cancelled.
        back = await api.http.post(path + "/migrations", json={"to": "pro@1"}, headers=writer)
        assert back.status_code == 201, back.text
        assert (back.json()["cancelled"], back.json()["scheduled"]) == (True, False)
        assert (await api.http.get(path, headers=writer)).json()["plan_changes"] == []

    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db, catalog=catalogs / "after.yaml", now=PREVIEW_DAY) as api:
            await scenario(api)

    asyncio.run(go())
