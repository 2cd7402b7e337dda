"""Grants on a real Valkey and the credit ledger on the embedded ClickHouse: the store's layout and
atomic operations, ``tollway credits`` (grant, list, void, balance, sync, reconcile), a ledger write that
fails after the grant, and the reconcile identity against usage rows' burns.

The limiter's burns are simulated by rewriting a grant record the way ``consume.lua`` does (remaining
down, a rollover cut into ``forfeited``); the usage table gets the lead's ``price_micros`` and
``balance_unit`` columns from this module's fixture, not from a migration.
"""

import asyncio
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from clickhouse_connect.driver.exceptions import OperationalError
from redis.asyncio import Redis as AsyncRedis

from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import run_cli
from tests.support.usage_rows import usage_row
from tollway.cli import credits as credits_cli
from tollway.cli.main import build_parser
from tollway.clock import ManualClock
from tollway.credits.grants import MAX_GRANTS, GrantState
from tollway.credits.store import GrantInfo, GrantNotFound, GrantStore, TooManyGrants, instant_ms
from tollway.harness.valkey import ValkeyServer
from tollway.settings import Settings
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = instant_ms(NOW)
PERIOD_START_MS = instant_ms(datetime(2026, 11, 1, tzinfo=UTC))
DEC_1_MS = instant_ms(datetime(2026, 12, 1, tzinfo=UTC))


@pytest.fixture
def ledger_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    """Every migration, and the usage columns the lead's 0008 adds (created here, so these tests do not
    depend on that migration)."""
    client, database = chdb_db
    Migrator(client, database).migrate()
    client.command(
        f"ALTER TABLE {database}.usage ADD COLUMN IF NOT EXISTS price_micros Int64 DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS balance_unit LowCardinality(String) DEFAULT ''"
    )
    return chdb_db


@pytest.fixture
def subscribed(valkey_fresh: ValkeyServer) -> ValkeyServer:
    """Customers ``acme`` (UTC) and ``beta`` (Europe/Paris) with subscriptions since January."""

    async def go() -> None:
        client = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            store = RedisSubscriptionStore(client)
            await store.put(Subscription.new("acme", "basic", datetime(2026, 1, 1, tzinfo=UTC)))
            await store.put(
                Subscription.new("beta", "basic", datetime(2026, 1, 1, tzinfo=UTC), timezone="Europe/Paris")
            )
        finally:
            await client.aclose()

    asyncio.run(go())
    return valkey_fresh


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``tollway credits …`` in this process, on the test's Valkey and chdb database (a clock at NOW)."""

    def __init__(self, valkey: ValkeyServer, db: ChdbDatabase | None, capsys: pytest.CaptureFixture[str]) -> None:
        self.valkey = valkey
        self.db = db
        self.capsys = capsys
        self.clock = ManualClock(NOW)
        self.client: Any = db.client if db is not None else None

    def __call__(self, *argv: str) -> Result:
        args = build_parser().parse_args(["credits", *argv])
        settings = Settings(redis_url=self.valkey.url)  # type: ignore[call-arg]
        ledger = credits_cli.DirectLedger(self.client, self.db.name) if self.db is not None else None
        self.capsys.readouterr()
        code = asyncio.run(credits_cli.run(args, settings, clock=self.clock, ledger=ledger))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *argv: str) -> Result:
        result = self(*argv)
        assert result.code == 0, result.err
        return result


@pytest.fixture
def cli(subscribed: ValkeyServer, ledger_db: ChdbDatabase, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(subscribed, ledger_db, capsys)


def sync_redis(valkey: ValkeyServer) -> "redis.Redis[str]":
    return redis.Redis.from_url(valkey.url, decode_responses=True)


def record(valkey: ValkeyServer, customer: str, grant_id: str) -> GrantState:
    client = sync_redis(valkey)
    try:
        return GrantState.decode(grant_id, client.hget(f"tw:cr:{{{customer}}}", grant_id) or "")
    finally:
        client.close()


def rewrite(valkey: ValkeyServer, customer: str, state: GrantState) -> None:
    """Change a grant record as the limiter's script does."""
    client = sync_redis(valkey)
    try:
        client.hset(f"tw:cr:{{{customer}}}", state.grant_id, state.encode())
    finally:
        client.close()


def burn(valkey: ValkeyServer, customer: str, grant_id: str, micros: int) -> None:
    state = record(valkey, customer, grant_id)
    rewrite(valkey, customer, replace(state, remaining=state.remaining - micros))


def insert_burns(db: ChdbDatabase, customer: str, prices: list[int], unit: str = "USD") -> None:
    lines = []
    for n, price in enumerate(prices):
        row = json.loads(usage_row(f"{customer}-r{n}", "2026-11-25 11:00:00", customer, {"requests": 1}))
        lines.append(json.dumps({**row, "price_micros": price, "balance_unit": unit}).encode() + b"\n")
    insert_json_rows(db.client, db.name, "usage", b"".join(lines))


def ledger_rows(db: ChdbDatabase, customer: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in db.client.query(
            f"SELECT entry_id, kind, grant_id, toString(amount), unit FROM {db.name}.credit_ledger FINAL "
            f"WHERE customer_id = '{customer}' ORDER BY entry_id"
        ).result_rows
    ]


def redis_keys(valkey: ValkeyServer) -> list[str]:
    client = sync_redis(valkey)
    try:
        return sorted(k for k in client.keys("tw:c*") if not k.startswith("tw:customer"))
    finally:
        client.close()


# --- the store --------------------------------------------------------------------------------------------


def info(grant_id: str, amount: str = "10", **fields: Any) -> GrantInfo:
    base: dict[str, Any] = {
        "grant_id": grant_id,
        "amount": Decimal(amount),
        "unit": "USD",
        "effective_ms": NOW_MS,
        "expires_ms": None,
        "priority": 0,
        "rollover_max": None,
        "reason": "",
        "created_ms": NOW_MS,
        "created_by": "test",
    }
    return GrantInfo(**{**base, **fields})


def run_store(valkey: ValkeyServer, scenario: Any) -> Any:
    async def go() -> Any:
        client = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await scenario(GrantStore(client), client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_grant_is_a_limiter_record_and_its_metadata(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: GrantStore, client: AsyncRedis) -> None:
        expires = NOW_MS + 86_400_000
        made = await store.make(
            "acme", info("g1", "12.5", expires_ms=expires, priority=2, rollover_max=Decimal("3")), rolled_ms=5
        )
        assert made.created
        assert await client.hgetall("tw:cr:{acme}") == {"g1": f"12500000 2 {NOW_MS} {expires} 3000000 5 0"}
        meta = json.loads(await client.hget("tw:crm:{acme}", "g1"))
        assert meta["amount"] == "12.5"
        assert meta["unit"] == "USD"
        assert meta["rollover_max"] == "3"
        assert meta["expires_at"] == "2026-11-26T12:00:00.000Z"
        assert meta["created_by"] == "test"
        assert await store.customers() == ["acme"]
        assert await store.balance("acme", NOW_MS) == 12_500_000
        assert await store.balance("acme", expires) == 0  # expired: not live
        assert await store.balance("acme", NOW_MS - 1) == 0  # not effective yet
        [view] = await store.list("acme")
        assert view.as_dict(NOW_MS)["status"] == "active"
        assert view.as_dict(NOW_MS - 1)["status"] == "scheduled"
        assert view.as_dict(expires)["status"] == "expired"

    run_store(valkey_fresh, scenario)


def test_the_same_id_is_the_existing_grant_and_limits_hold(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: GrantStore, client: AsyncRedis) -> None:
        assert (await store.make("acme", info("g1"))).created
        again = await store.make("acme", info("g1", "99"))  # the store returns it; the caller compares
        assert not again.created
        assert again.grant.info == info("g1")
        assert await client.hget("tw:cr:{acme}", "g1") == f"10000000 0 {NOW_MS} 0 -1 {NOW_MS} 0"
        with pytest.raises(ValueError, match="holds grants in USD, not EUR"):
            await store.make("acme", info("g2", unit="EUR"))
        for n in range(2, MAX_GRANTS + 1):
            await store.make("acme", info(f"g{n}"))
        with pytest.raises(TooManyGrants, match=f"holds {MAX_GRANTS} grants"):
            await store.make("acme", info("one-more"))
        assert await client.hlen("tw:cr:{acme}") == MAX_GRANTS
        assert not await client.hexists("tw:crm:{acme}", "one-more")
        with pytest.raises(ValueError, match="reserved"):
            await store.make("acme", info("returned"))

    run_store(valkey_fresh, scenario)


def test_every_grant_made_bumps_the_funding_epoch_once(valkey_fresh: ValkeyServer) -> None:
    """The funding epoch (part of balance.low / balance.exhausted event ids) moves with every grant or
    top-up, in the grant's own script, and not when a retried grant id is found to exist."""

    async def scenario(store: GrantStore, client: AsyncRedis) -> None:
        await store.make("acme", info("g1"))
        assert await client.get("tw:cre:{acme}") == "1"
        await store.make("acme", info("g1"))  # a retry: the existing grant, no new funding
        assert await client.get("tw:cre:{acme}") == "1"
        await store.make("acme", info("top-up", "5"))
        assert await client.get("tw:cre:{acme}") == "2"
        with pytest.raises(ValueError, match="holds grants in USD"):
            await store.make("acme", info("g3", unit="EUR"))
        assert await client.get("tw:cre:{acme}") == "2"

    run_store(valkey_fresh, scenario)


def test_void_takes_only_what_remains_and_expiry_sweeps(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: GrantStore, client: AsyncRedis) -> None:
        await store.make("acme", info("keep"))
        await store.make("acme", info("old", "5", expires_ms=NOW_MS + 1000))
        burn(valkey_fresh, "acme", "keep", 4_250_000)
        removal, now = await store.void("acme", "keep", at_ms=NOW_MS + 5, actor="ops")
        assert now
        assert (removal.kind, removal.remaining, removal.at_ms, removal.actor) == (
            "voided",
            5_750_000,
            NOW_MS + 5,
            "ops",
        )
        assert not await client.hexists("tw:cr:{acme}", "keep")
        again, now = await store.void("acme", "keep", at_ms=NOW_MS + 9, actor="other")
        assert not now
        assert again == removal
        with pytest.raises(GrantNotFound, match="has no grant 'nope'"):
            await store.void("acme", "nope", at_ms=NOW_MS, actor="ops")
        assert await store.expire("acme", NOW_MS + 999) == []
        [expired] = await store.expire("acme", NOW_MS + 1000)
        assert (expired.grant_id, expired.kind, expired.remaining, expired.at_ms) == (
            "old",
            "expired",
            5_000_000,
            NOW_MS + 1000,
        )
        assert await client.hlen("tw:cr:{acme}") == 0
        statuses = {v.grant_id: v.as_dict(NOW_MS)["status"] for v in await store.list("acme")}
        assert statuses == {"keep": "voided", "old": "expired"}

    run_store(valkey_fresh, scenario)


def test_balance_applies_the_pending_rollover(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: GrantStore, client: AsyncRedis) -> None:
        await store.make("acme", info("carry", "10", rollover_max=Decimal(2)), rolled_ms=PERIOD_START_MS)
        await store.make("acme", info("later", "1", effective_ms=DEC_1_MS + 10))
        assert await store.balance("acme", NOW_MS, PERIOD_START_MS) == 10_000_000
        # December: the limiter's next check cuts "carry" to 2; "later" is live from Dec 1 + 10 ms.
        assert await store.balance("acme", DEC_1_MS + 10, DEC_1_MS) == 3_000_000
        assert await store.balance("acme", DEC_1_MS + 10) == 11_000_000  # without the period: as stored

    run_store(valkey_fresh, scenario)


def test_the_store_on_a_redis_cluster(valkey_cluster: Any) -> None:
    """One script per operation touches the customer's three hashes: they share the customer's slot."""
    import uuid

    from redis.asyncio.cluster import RedisCluster

    async def go() -> None:
        client = RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=2)
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        store = GrantStore(client, prefix)
        try:
            for customer in ("acme", "beta", "gamma"):
                keys = [store.grants_key(customer), store.metadata_key(customer), store.removals_key(customer)]
                assert {await client.cluster_keyslot(k) for k in keys} == {await client.cluster_keyslot(customer)}
                assert (await store.make(customer, info("g1", "3"))).created
                await store.make(customer, info("g2", "1", expires_ms=NOW_MS + 1))
                removal, _ = await store.void(customer, "g1", at_ms=NOW_MS, actor="ops")
                assert removal.remaining == 3_000_000
                assert [r.grant_id for r in await store.expire(customer, NOW_MS + 1)] == ["g2"]
                assert (await store.snapshot(customer)).records == {}
            assert await store.customers() == ["acme", "beta", "gamma"]
        finally:
            await client.aclose()

    asyncio.run(go())


# --- the CLI, the ledger and reconcile -------------------------------------------------------------------


def test_grant_list_balance_void_and_the_ledger(cli: Cli) -> None:
    made = cli.ok(
        "grant", "acme", "25.50", "--unit", "USD", "--id", "g1", "--reason", "prepaid top-up", "--json"
    ).json()
    assert (made["grant_id"], made["amount"], made["remaining"], made["created"], made["ledger"]) == (
        "g1",
        "25.5",
        "25.5",
        True,
        "recorded",
    )
    minted = cli.ok("grant", "acme", "5", "--unit", "USD", "--priority", "-1", "--expires-at", "2026-12-31")
    assert minted.out.startswith("granted grt_")
    assert "expires 2026-12-31T00:00:00.000Z" in minted.out
    assert cli.ok("balance", "acme", "--json").json() == {
        "customer_id": "acme",
        "unit": "USD",
        "balance": "30.5",
        "grants": 2,
    }
    listed = cli.ok("list", "acme", "--json").json()
    assert next(g["grant_id"] for g in listed) == "g1"
    assert len(listed) == 2
    burn(cli.valkey, "acme", "g1", 500_000)
    insert_burns(cli.db, "acme", [200_000, 300_000])  # type: ignore[arg-type]
    voided = cli.ok("void", "acme", "g1", "--json").json()
    assert (voided["status"], voided["voided_amount"], voided["voided_now"], voided["ledger"]) == (
        "voided",
        "25",
        True,
        "recorded",
    )
    assert cli.ok("void", "acme", "g1").out.startswith("g1 of acme was voided already")
    rows = ledger_rows(cli.db, "acme")  # type: ignore[arg-type]
    grant_ids = [r for r in rows if r[0].startswith("grant:grt_")]
    assert [r for r in rows if r[2] == "g1"] == [
        ("grant:g1", "grant", "g1", "25.5", "USD"),
        ("void:g1", "void", "g1", "-25", "USD"),
    ]
    assert len(grant_ids) == 1
    assert grant_ids[0][3] == "5"
    recon = cli.ok("reconcile", "--json").json()
    assert recon == {"customers": 1, "differences": []}
    assert cli.ok("sync", "--json").json() == {"customers": 1, "expired": [], "written": 0}


def test_reconcile_names_a_difference_and_exits_1(cli: Cli) -> None:
    cli.ok("grant", "acme", "10", "--unit", "USD", "--id", "g1")
    cli.ok("grant", "beta", "3", "--unit", "EUR", "--id", "b1")
    burn(cli.valkey, "acme", "g1", 1_500_000)
    insert_burns(cli.db, "acme", [1_000_000])  # type: ignore[arg-type]  # a usage row of 0.5 is lost
    result = cli("reconcile")
    assert result.code == 1
    assert result.out.strip() == "acme: Redis 8.5 USD, ledger 9 USD (difference -0.5)"
    assert cli("reconcile", "--customer", "beta").code == 0
    insert_burns(cli.db, "acme", [1_000_000, 500_000])  # the lost row arrives (r0 replayed: counted once)
    assert cli.ok("reconcile").out.strip() == "2 customer(s) reconciled: Redis and the ledger agree"


def test_a_failed_ledger_write_is_reported_and_sync_writes_it(cli: Cli) -> None:
    real = cli.client

    class InsertsFail:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
            raise OperationalError("connection refused")

    cli.client = InsertsFail()
    result = cli("grant", "acme", "7", "--unit", "USD", "--id", "g1")
    assert result.code == 1
    assert result.out.startswith("granted g1: 7 USD to acme")
    assert "the grant is made in Redis, but its ledger entry was not written" in result.err
    assert "tollway credits sync" in result.err
    cli.client = real
    assert ledger_rows(cli.db, "acme") == []  # type: ignore[arg-type]
    assert cli("reconcile").out.strip() == "acme: Redis 7 USD, ledger 0 USD (difference 7)"
    assert cli.ok("sync").out.strip().endswith("1 customer(s): 1 ledger entry written")
    assert ledger_rows(cli.db, "acme") == [("grant:g1", "grant", "g1", "7", "USD")]  # type: ignore[arg-type]
    assert cli("reconcile").code == 0
    cli.client = InsertsFail()
    assert cli("void", "acme", "g1").code == 1
    cli.client = real
    assert cli("reconcile").code == 1
    # A retried void writes the missing entry, as sync would.
    assert cli.ok("void", "acme", "g1").out.startswith("g1 of acme was voided already")
    assert cli("reconcile").code == 0


def test_ledger_unreachable_before_the_grant_writes_nothing(cli: Cli) -> None:
    cli.db.client.command(f"DROP TABLE {cli.db.name}.credit_ledger")  # type: ignore[union-attr]
    result = cli("grant", "acme", "7", "--unit", "USD")
    assert result.code == 1
    assert "credit_ledger does not exist" in result.err
    assert redis_keys(cli.valkey) == []


def test_retry_with_the_same_id_is_idempotent_and_a_different_grant_conflicts(cli: Cli) -> None:
    first = cli.ok("grant", "acme", "10", "--unit", "USD", "--id", "top-up-42", "--reason", "invoice 42")
    cli.clock.advance(timedelta(seconds=30))
    again = cli.ok("grant", "acme", "10.00", "--unit", "USD", "--id", "top-up-42", "--reason", "invoice 42")
    assert first.out.startswith("granted top-up-42")
    assert again.out.startswith("already granted (same request) top-up-42")
    other = cli("grant", "acme", "11", "--unit", "USD", "--id", "top-up-42", "--reason", "invoice 42")
    assert other.code == 1
    assert "is a different grant" in other.err
    assert cli.ok("balance", "acme").out.strip() == "acme: 10 USD"
    assert ledger_rows(cli.db, "acme") == [("grant:top-up-42", "grant", "top-up-42", "10", "USD")]  # type: ignore[arg-type]


def test_expiry_and_rollover_reach_the_ledger_through_sync(cli: Cli) -> None:
    cli.ok("grant", "acme", "10", "--unit", "USD", "--id", "carry", "--rollover-max", "2")
    cli.ok("grant", "acme", "4", "--unit", "USD", "--id", "short", "--expires-at", "2026-11-30T00:00:00Z")
    carry = record(cli.valkey, "acme", "carry")
    assert carry.rolled_ms == NOW_MS  # effective now, inside the period: no cut at this period's start
    burn(cli.valkey, "acme", "carry", 1_000_000)
    burn(cli.valkey, "acme", "short", 1_000_000)
    insert_burns(cli.db, "acme", [1_000_000, 1_000_000])  # type: ignore[arg-type]
    # December: the limiter's first check cuts "carry" from 9 to 2.
    rewrite(cli.valkey, "acme", record(cli.valkey, "acme", "carry").rolled_over(DEC_1_MS))
    assert record(cli.valkey, "acme", "carry").forfeited == 7_000_000
    assert cli("reconcile").code == 0  # the cut is on the Redis side (forfeited) until sync writes it
    cli.clock.advance(timedelta(days=7))
    synced = cli.ok("sync", "--json").json()
    assert synced["expired"] == [{"customer_id": "acme", "grant_id": "short", "amount": "3"}]
    assert synced["written"] == 2
    assert ledger_rows(cli.db, "acme") == [  # type: ignore[arg-type]
        ("expiry:short", "expiry", "short", "-3", "USD"),
        ("grant:carry", "grant", "carry", "10", "USD"),
        ("grant:short", "grant", "short", "4", "USD"),
        (f"rollover:carry:{DEC_1_MS}", "rollover", "carry", "-7", "USD"),
    ]
    assert cli("reconcile").code == 0
    assert cli.ok("sync", "--json").json()["written"] == 0
    assert cli.ok("void", "acme", "carry", "--json").json()["voided_amount"] == "2"
    assert cli("reconcile").code == 0  # the rollover entry of a grant no longer held now counts
    assert cli.ok("balance", "acme").out.strip() == "acme: 0 USD"


def test_a_backdated_grant_is_not_cut_at_the_current_period_start(cli: Cli) -> None:
    cli.ok("grant", "acme", "10", "--unit", "USD", "--id", "back", "--effective-at", "2026-10-15", "--no-rollover")
    state = record(cli.valkey, "acme", "back")
    assert (state.effective_ms, state.rolled_ms, state.rollover_max) == (
        instant_ms(datetime(2026, 10, 15, tzinfo=UTC)),
        PERIOD_START_MS,
        0,
    )
    assert state.rolled_over(PERIOD_START_MS) == state  # the limiter's check this period cuts nothing
    assert cli.ok("balance", "acme").out.strip() == "acme: 10 USD"


def test_naive_times_are_the_customers_wall_clock(cli: Cli) -> None:
    made = cli.ok("grant", "beta", "1", "--unit", "EUR", "--expires-at", "2026-12-01T00:00", "--json").json()
    assert made["expires_at"] == "2026-11-30T23:00:00.000Z"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["acme", "0", "--unit", "USD"], "must be above 0"),
        (["acme", "-5", "--unit", "USD"], "must be above 0"),
        (["acme", "10.005", "--unit", "USD"], "USD allows 2 decimal places; 10.005 has more"),
        (["acme", "10.5", "--unit", "JPY"], "JPY allows 0 decimal places"),
        (["acme", "١٠", "--unit", "USD"], "not a decimal number in ASCII digits"),
        (["acme", "1e3", "--unit", "USD"], "not a decimal number in ASCII digits"),
        (["acme", "10", "--unit", "GOLD"], "unknown unit 'GOLD'"),
        (
            ["acme", "10", "--unit", "USD", "--effective-at", "2026-12-10", "--expires-at", "2026-12-10"],
            "expiry must be after",
        ),
        (["acme", "10", "--unit", "USD", "--expires-at", "2026-11-01"], "expiry must be after"),
        (
            ["acme", "10", "--unit", "USD", "--expires-at", "2026-11-25T11:00:00Z", "--effective-at", "2026-11-01"],
            "in the future",
        ),
        (["acme", "10", "--unit", "USD", "--rollover-max", "0.001"], "rollover maximum: USD allows 2"),
        (["acme", "10", "--unit", "USD", "--id", "bad id!"], "grant id 'bad id!' is not valid"),
        (["acme", "10", "--unit", "USD", "--expires-at", "soon"], "is not 'now' or an ISO 8601"),
        (["nobody", "10", "--unit", "USD"], "unknown customer 'nobody': no subscription"),
        (["acme", "10"], "no unit given"),
        (["acme", "1000000001", "--unit", "USD"], "must be at most 1000000000"),
        (["acme", "10", "--unit", "USD", "--reason", "line\nbreak"], "the reason must be plain text"),
        (["acme", "10", "--unit", "USD", "--reason", "bad \udcff byte"], "the reason must be plain text"),
        (["acme", "10", "--unit", "USD", "--priority", "1000001"], "the priority must be from"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(cli: Cli, argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cli("grant", *argv)
    assert redis_keys(cli.valkey) == []
    assert ledger_rows(cli.db, "acme") == []  # type: ignore[arg-type]


def test_the_limiters_returned_amount_record_is_listed_and_reconciled(cli: Cli) -> None:
    """Money returned when the customer held no grant lands in the record ``returned``, which has no
    metadata; the gateway writes a ``return`` entry for it."""
    from tollway.credits.ledger import LedgerEntry, insert_entries

    cli.ok("grant", "acme", "1", "--unit", "USD", "--id", "g1")
    burn(cli.valkey, "acme", "g1", 1_000_000)
    insert_burns(cli.db, "acme", [1_000_000])  # type: ignore[arg-type]
    rewrite(cli.valkey, "acme", GrantState("returned", 250_000))
    assert cli("reconcile").code == 1
    insert_entries(
        cli.client,
        cli.db.name,  # type: ignore[union-attr]
        [LedgerEntry("return:r9", "acme", NOW_MS, "return", "returned", Decimal("0.25"), "USD", request_id="r9")],
    )
    assert cli("reconcile").code == 0
    listed = {g["grant_id"]: g for g in cli.ok("list", "acme", "--json").json()}
    assert (listed["returned"]["remaining"], listed["returned"]["unit"], listed["returned"]["amount"]) == (
        "0.25",
        "USD",
        None,
    )
    assert listed["returned"]["reason"] == "returned amounts"
    assert cli.ok("balance", "acme").out.strip() == "acme: 0.25 USD"
    assert cli.ok("sync", "--json").json()["written"] == 0


def test_void_of_an_unknown_grant_is_an_error(cli: Cli) -> None:
    result = cli("void", "acme", "nope")
    assert result.code == 1
    assert result.err.strip() == "tollway: customer 'acme' has no grant 'nope'"


def test_the_unit_comes_from_the_catalog(cli: Cli, tmp_path: Path) -> None:
    from tests.support.admin_api import write_catalog

    catalog = write_catalog(tmp_path)  # plan basic priced in EUR
    made = cli.ok("grant", "acme", "3.25", "--catalog", str(catalog), "--json").json()
    assert made["unit"] == "EUR"


def test_the_command_line(subscribed: ValkeyServer, tmp_path: Path) -> None:
    """The real ``tollway credits`` in a process of its own (with its own chdb path)."""
    env = {"TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}", "TOLLWAY_CLICKHOUSE_DATABASE": "tollway"}
    bad = run_cli(subscribed.url, "credits", "grant", "acme", "0", "--unit", "USD", env=env)
    assert (bad.code, bad.stderr.strip()) == (2, "tollway: an amount of USD must be above 0 (got 0)")
    made = run_cli(subscribed.url, "credits", "grant", "acme", "2.50", "--unit", "USD", "--json", env=env)
    assert made.code == 0, made.stderr
    assert made.json()["ledger"] == "recorded"
    recon = run_cli(subscribed.url, "credits", "reconcile", env=env)
    assert (recon.code, recon.stdout.strip()) == (0, "1 customer(s) reconciled: Redis and the ledger agree")


def test_the_ledger_counts_a_rewritten_entry_once(ledger_db: ChdbDatabase) -> None:
    from tollway.credits.ledger import LedgerEntry, customer_rows, insert_entries

    entry = LedgerEntry("grant:g1", "acme", NOW_MS, "grant", "g1", Decimal("1.000001"), "USD", actor="ops")
    for _ in range(3):
        insert_entries(ledger_db.client, ledger_db.name, [entry])
    rows = customer_rows(ledger_db.client, ledger_db.name, "acme")
    assert [(r.entry_id, r.amount) for r in rows] == [("grant:g1", Decimal("1.000001"))]
    total = ledger_db.client.query(f"SELECT sum(amount) FROM {ledger_db.name}.credit_ledger FINAL").result_rows
    assert total[0][0] == Decimal("1.000001")
