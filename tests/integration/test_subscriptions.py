"""Subscriptions on a real Valkey: the store's layout, change announcements, outages, and the CLI."""

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from tollway.cli import subscriptions as cli
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer
from tollway.redis_client import hot_path_client, subscriber_client
from tollway.settings import Settings
from tollway.subscriptions import (
    MISS,
    Subscription,
    SubscriptionCache,
    SubscriptionResolver,
    SubscriptionStoreUnavailable,
    UnreadableSubscription,
)
from tollway.subscriptions.redis_store import RedisSubscriptionStore

pytestmark = pytest.mark.integration

T = TypeVar("T")
START = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def settings_for(valkey: ValkeyServer, **extra: object) -> Settings:
    return Settings(redis_url=valkey.url, **extra)  # type: ignore[arg-type]


# --- the store ----------------------------------------------------------------------------------------


def test_store_round_trip_layout_and_indexes(valkey_fresh: ValkeyServer) -> None:
    async def scenario() -> None:
        client = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        store = RedisSubscriptionStore(client)
        try:
            acme = Subscription.new(
                "acme",
                "pro",
                START,
                timezone="Europe/Paris",
                alignment="anniversary",
                interval="year",
                overrides={"rpm": 600},
            )
            beta = Subscription.new("beta@corp", "free", START)
            assert await store.get("acme") is None
            await store.put(acme)
            await store.put(beta)
            assert await store.get("acme") == acme
            # The customer id is a hash tag: a customer's keys share a cluster slot.
            assert await client.exists("tw:subscription:{acme}") == 1
            assert await client.hget("tw:subscription:{acme}", "overrides") == '{"rpm":600}'
            assert await client.smembers("tw:subscriptions") == {"acme", "beta@corp"}
            assert [s.customer_id for s in await store.list()] == ["acme", "beta@corp"]
            assert await store.list("pro") == [acme]
            assert await store.list("nope") == []
            # A plan change moves the customer between plan indexes.
            await store.put(Subscription.new("acme", "free", START))
            assert [s.customer_id for s in await store.list("free")] == ["acme", "beta@corp"]
            assert await store.list("pro") == []
            assert await client.smembers("tw:plan-subscriptions:pro") == set()
            # Index entries with no record (an interrupted write) are skipped.
            await client.sadd("tw:subscriptions", "ghost")
            assert [s.customer_id for s in await store.list()] == ["acme", "beta@corp"]
            assert await store.delete("acme") is True
            assert await store.delete("acme") is False
            assert await store.get("acme") is None
            assert await client.smembers("tw:plan-subscriptions:free") == {"beta@corp"}
            # A record this version cannot read fails closed, with its own reason.
            await client.hset("tw:subscription:{bad}", mapping={"customer_id": "bad", "plan_id": "pro"})
            with pytest.raises(UnreadableSubscription, match="'bad'"):
                await store.get("bad")
        finally:
            await client.aclose()

    run_async(scenario)


def test_a_custom_prefix_is_used_throughout(valkey_fresh: ValkeyServer) -> None:
    async def scenario() -> None:
        client = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            await RedisSubscriptionStore(client, "app1:").put(Subscription.new("acme", "pro", START))
            assert sorted(await client.keys("*")) == [
                "app1:plan-subscriptions:pro",
                "app1:subscription:{acme}",
                "app1:subscriptions",
            ]
        finally:
            await client.aclose()

    run_async(scenario)


def test_an_announced_change_evicts_another_process_cache_within_a_second(valkey_fresh: ValkeyServer) -> None:
    settings = settings_for(valkey_fresh)

    async def scenario() -> None:
        hot, subscriber, admin = hot_path_client(settings), subscriber_client(settings), settings_client(settings)
        # The cache's clock never moves: only the announcement can evict the entry.
        cache = SubscriptionCache(ManualClock().monotonic, ttl=1.0, negative_ttl=1.0)
        resolver = SubscriptionResolver(RedisSubscriptionStore(hot, subscriber=subscriber), cache, timeout_s=0.5)
        watcher = asyncio.create_task(resolver.follow_changes())
        other_process = RedisSubscriptionStore(admin)
        try:
            await other_process.put(Subscription.new("acme", "free", START))
            await asyncio.sleep(0.2)  # subscribed (and the initial resync done)
            assert (await resolver.get("acme")).plan_id == "free"  # type: ignore[union-attr]
            assert resolver.cached("acme") is not MISS
            changed_at = time.monotonic()
            await other_process.put(Subscription.new("acme", "pro", START))
            while resolver.cached("acme") is not MISS:
                assert time.monotonic() - changed_at < 1.0, "the change did not reach the resolver within 1 s"
                await asyncio.sleep(0.005)
            assert (await resolver.get("acme")).plan_id == "pro"  # type: ignore[union-attr]
            # Deletion is announced too.
            await other_process.delete("acme")
            while resolver.cached("acme") is not MISS:
                assert time.monotonic() - changed_at < 2.0
                await asyncio.sleep(0.005)
            assert await resolver.get("acme") is None
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            for client in (hot, subscriber, admin):
                await client.aclose()

    run_async(scenario)


def settings_client(settings: Settings) -> AsyncRedis:
    return AsyncRedis.from_url(settings.redis_url, decode_responses=True)


@pytest.mark.parametrize("outage", ["stopped", "paused"])
def test_redis_down_is_unavailable_within_the_timeout(valkey_fresh: ValkeyServer, outage: str) -> None:
    settings = settings_for(valkey_fresh, redis_timeout_ms=100)

    async def scenario() -> None:
        client = hot_path_client(settings)
        clock = ManualClock()
        resolver = SubscriptionResolver(
            RedisSubscriptionStore(client), SubscriptionCache(clock.monotonic), timeout_s=0.1
        )
        try:
            await RedisSubscriptionStore(client).put(Subscription.new("acme", "pro", START))
            if outage == "stopped":
                valkey_fresh.stop()
            else:
                valkey_fresh.pause()
            began = time.monotonic()
            results = await asyncio.gather(*(resolver.resolve("acme") for _ in range(5)), return_exceptions=True)
            elapsed = time.monotonic() - began
            assert all(isinstance(r, SubscriptionStoreUnavailable) for r in results), results
            assert elapsed < 0.3, f"took {elapsed:.3f} s"
            assert resolver.cached("acme") is MISS
            print(f"{outage}: unavailable after {elapsed * 1000:.0f} ms")
        finally:
            if outage == "stopped":
                valkey_fresh.start()
            else:
                valkey_fresh.resume()
            await client.aclose()

    run_async(scenario)
    # And it recovers once Redis is back (an empty one, after a restart: no subscription).
    recovered = SubscriptionResolver(
        RedisSubscriptionStore(AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)),
        SubscriptionCache(ManualClock().monotonic),
    )
    found = run_async(lambda: recovered.resolve("acme"))
    assert (found is None) if outage == "stopped" else (found is not None and found.plan_id == "pro")


# --- the CLI, through run() -----------------------------------------------------------------------------


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tollway")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["subscriptions", *argv])


def run_cli(valkey: ValkeyServer, *argv: str, now: datetime | None = None) -> int:
    clock = ManualClock(now or datetime(2026, 5, 3, 12, tzinfo=UTC))
    return asyncio.run(cli.run(cli_args(*argv), settings_for(valkey), clock=clock))


def test_cli_set_show_list_delete(valkey_fresh: ValkeyServer, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime(2026, 11, 15, 12, tzinfo=UTC)
    code = run_cli(
        valkey_fresh,
        "set", "--customer", "acme", "--plan", "pro", "--start", "2026-01-31T10:00", "--timezone", "Europe/Paris",
        "--alignment", "anniversary", "--override", "rpm=600", "--override", "monthly-calls=0", "--json",
        now=now,
    )  # fmt: skip
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["action"] == "created"
    assert created["started_at"] == created["anchor"] == "2026-01-31T09:00:00Z"
    assert created["anchor_local"] == "2026-01-31T10:00:00+01:00"
    assert created["overrides"] == {"monthly-calls": 0, "rpm": 600}
    # Anniversary on the 31st: Oct 31 10:00 CET (after fall-back) to Nov 30 10:00 CET.
    assert created["current_period"] == {
        "index": 2026 * 12 + 9,
        "start": "2026-10-31T09:00:00Z",
        "end": "2026-11-30T09:00:00Z",
        "start_local": "2026-10-31T10:00:00+01:00",
        "end_local": "2026-11-30T10:00:00+01:00",
    }

    assert run_cli(valkey_fresh, "show", "--customer", "acme", "--json", now=now) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {k: v for k, v in created.items() if k != "action"}
    assert run_cli(valkey_fresh, "show", "--customer", "acme", now=now) == 0
    text = capsys.readouterr().out
    assert "2026-10-31T09:00:00Z .. 2026-11-30T09:00:00Z (UTC)" in text
    assert "2026-10-31T10:00:00+01:00 .. 2026-11-30T10:00:00+01:00 (Europe/Paris)" in text
    assert "monthly-calls=0, rpm=600" in text

    # A plan change keeps the billing cycle; overrides given replace the old ones.
    assert run_cli(valkey_fresh, "set", "--customer", "acme", "--plan", "enterprise", "--json", now=now) == 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["action"] == "updated"
    assert changed["plan_id"] == "enterprise"
    assert changed["overrides"] == {}
    assert changed["current_period"] == created["current_period"]

    assert run_cli(valkey_fresh, "set", "--customer", "beta", "--plan", "free", "--start", "now") == 0
    assert "created the subscription of beta" in capsys.readouterr().out
    assert run_cli(valkey_fresh, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["customer_id"], s["plan_id"]) for s in listed] == [("acme", "enterprise"), ("beta", "free")]
    assert listed[1]["started_at"] == "2026-05-03T12:00:00Z"  # the injected clock's "now"
    assert run_cli(valkey_fresh, "list", "--plan", "free") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("CUSTOMER")
    assert len(table) == 2
    assert table[1].split()[:2] == ["beta", "free"]

    assert run_cli(valkey_fresh, "delete", "--customer", "acme") == 0
    assert "deleted the subscription of acme" in capsys.readouterr().out
    assert run_cli(valkey_fresh, "show", "--customer", "acme") == 1
    assert capsys.readouterr().err == "tollway: customer 'acme' has no subscription\n"
    assert run_cli(valkey_fresh, "delete", "--customer", "acme") == 1
    assert "has no subscription" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
        (["--override", "x=abc"], "--override 'x=abc' is not NAME=LIMIT"),
        (["--start", "31/01/2026"], "--start '31/01/2026' is not 'now' or an ISO 8601 date or time"),
        (["--anchor", "2026-02-30"], "--anchor '2026-02-30' is not 'now' or an ISO 8601"),
        (["--catalog", "/nonexistent/plans.yaml"], "catalog"),
    ],
)
def test_cli_errors_are_clean_messages(valkey_fresh: ValkeyServer, argv: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        run_cli(valkey_fresh, "set", "--customer", "acme", "--plan", "pro", *argv)
    assert message in str(info.value)
    assert "Traceback" not in str(info.value)
    # Nothing was written.
    client = redis.Redis.from_url(valkey_fresh.url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_cli_bad_identifiers_are_clean_messages(valkey_fresh: ValkeyServer) -> None:
    with pytest.raises(ValueError, match="customer id 'a b' is not valid"):
        run_cli(valkey_fresh, "show", "--customer", "a b")
    with pytest.raises(ValueError, match=r"plan id '\{x\}' is not valid"):
        run_cli(valkey_fresh, "list", "--plan", "{x}")


CATALOG = """\
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


def test_cli_set_with_a_catalog(valkey_fresh: ValkeyServer, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("tollway.plans.loader", reason="the catalog loader (tollway.plans) is not available yet")
    path = tmp_path / "plans.yaml"
    path.write_text(CATALOG)
    base = ["set", "--customer", "acme", "--catalog", str(path), "--json"]
    assert run_cli(valkey_fresh, *base, "--plan", "pro", "--override", "monthly-calls=5000") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["interval"] == "year"  # from the plan's pricing
    assert created["overrides"] == {"monthly-calls": 5000}
    with pytest.raises(ValueError, match="plan 'pro' has no limit or quota named 'burst'"):
        run_cli(valkey_fresh, *base, "--plan", "pro", "--override", "burst=1")
    with pytest.raises(ValueError, match="plan 'gold' is not in the catalog"):
        run_cli(valkey_fresh, *base, "--plan", "gold")
