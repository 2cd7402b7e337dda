"""The outbox writer and the lifecycle events on a real Valkey (docs/notifications.md): an event id is
appended once however often and however concurrently it is emitted; keys, subscriptions, grants and
expiries emit one event per change, and a change stands when its event cannot be emitted."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.support.tollway_cli import TEST_PEPPER, create_key, run_cli
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.auth.redis_store import RedisKeyStore
from tollway.clock import ManualClock
from tollway.credits.store import GrantInfo, GrantStore
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event, event_id
from tollway.notifications.expiry import ExpiryNotifier
from tollway.notifications.outbox import OutboxWriter

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def with_redis(valkey: ValkeyServer, scenario: Callable[["AsyncRedis[str]"], Awaitable[None]]) -> None:
    async def go() -> None:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(go())


async def outbox(redis: "AsyncRedis[str]", customer: str, prefix: str = "tw:") -> list[Event]:
    entries = await redis.xrange(keys.stream_key(prefix, customer))
    return [Event.from_stream(fields) for _, fields in entries]


def an_event(customer: str = "acme", key_id: str = "key_1") -> Event:
    return Event(event_id("key.revoked", key_id), "key.revoked", 1, customer, {"key_id": key_id})


class Refusing:
    """An emitter whose store is down."""

    async def emit(self, event: Event) -> bool:
        raise ConnectionError("Redis is down")


def test_emitting_the_same_event_twice_appends_it_once(valkey_fresh: ValkeyServer) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        writer = OutboxWriter(redis)
        assert await writer.emit(an_event()) is True
        assert await writer.emit(an_event()) is False
        assert await writer.emit_many([an_event(), an_event(key_id="key_2")]) == [False, True]
        assert [e.data["key_id"] for e in await outbox(redis, "acme")] == ["key_1", "key_2"]
        assert await redis.smembers(keys.ready_key("tw:")) == {"acme"}
        ttl = await redis.pttl(keys.once_key("tw:", "acme", an_event().id))
        assert keys.ONCE_TTL_MS - 60_000 < ttl <= keys.ONCE_TTL_MS
        assert await outbox(redis, "acme") == [an_event(), an_event(key_id="key_2")]

    with_redis(valkey_fresh, scenario)


def test_an_event_about_no_customer_goes_to_the_partition_of_none(valkey_fresh: ValkeyServer) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        event = Event(event_id("endpoint.disabled", "ep_1", 5), "endpoint.disabled", 5, "", {"endpoint_id": "ep_1"})
        assert await OutboxWriter(redis, "p:").emit(event)
        assert await outbox(redis, "", "p:") == [event]
        assert await redis.smembers("p:ev:ready") == {keys.NO_CUSTOMER}

    with_redis(valkey_fresh, scenario)


def test_concurrent_emits_of_one_id_append_it_once(valkey_fresh: ValkeyServer) -> None:
    asyncio.run(concurrent_emits(valkey_fresh))


async def concurrent_emits(valkey_fresh: ValkeyServer) -> None:
    clients: list[AsyncRedis[str]] = [AsyncRedis.from_url(valkey_fresh.url, decode_responses=True) for _ in range(8)]
    try:
        writers = [OutboxWriter(client) for client in clients]
        for round_ in range(20):
            event = an_event(key_id=f"key_{round_}")
            results = await asyncio.gather(*(writers[i % 8].emit(event) for i in range(64)))
            assert results.count(True) == 1
        assert len(await outbox(clients[0], "acme")) == 20
    finally:
        for client in clients:
            await client.aclose()


def keyring(redis: "AsyncRedis[str]", clock: ManualClock, events: Any) -> Keyring:
    return Keyring(RedisKeyStore(redis), KeyDigester(TEST_PEPPER.encode()), clock, events)


def test_a_key_created_and_revoked_emits_one_event_each_however_often_revoked(valkey_fresh: ValkeyServer) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        clock = ManualClock(NOW)
        ring = keyring(redis, clock, OutboxWriter(redis))
        issued = await ring.create("acme", "test", NOW + timedelta(days=30))
        clock.advance(timedelta(minutes=5))
        for _ in range(3):
            await ring.revoke(issued.record.key_id)
        key_id = issued.record.key_id
        found = await outbox(redis, "acme")
        assert [(e.type, e.id) for e in found] == [
            ("key.created", event_id("key.created", key_id)),
            ("key.revoked", event_id("key.revoked", key_id)),
        ]
        assert found[0].body() == {
            "customer_id": "acme",
            "key_id": key_id,
            "env": "test",
            "expires_at": "2026-03-31T12:00:00.000Z",
        }
        assert found[1].data == {"key_id": key_id, "revoked_at": "2026-03-01T12:05:00.000Z"}
        assert found[1].ts_ms == int((NOW + timedelta(minutes=5)).timestamp() * 1000)

    with_redis(valkey_fresh, scenario)


def test_a_change_stands_when_its_event_cannot_be_emitted_and_a_rerun_emits_it(
    valkey_fresh: ValkeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        clock = ManualClock(NOW)
        down = keyring(redis, clock, Refusing())
        issued = await down.create("acme")
        revoked = await down.revoke(issued.record.key_id)
        assert revoked.revoked_at is not None
        assert (await RedisKeyStore(redis).find(issued.record.key_id) or ("", None))[1] == revoked
        assert "not emitted" in caplog.text
        assert issued.secret not in caplog.text
        assert await outbox(redis, "acme") == []
        # Redis back: revoking again (a no-op for the key) emits the missing event; the expiry job's
        # catch-up emits the missing key.created
        up = keyring(redis, clock, OutboxWriter(redis))
        await up.revoke(issued.record.key_id)
        notifier = ExpiryNotifier(redis, "tw:", OutboxWriter(redis), clock)
        assert await notifier.run_once(NOW + timedelta(hours=1)) == 1
        assert sorted(e.type for e in await outbox(redis, "acme")) == ["key.created", "key.revoked"]
        assert await notifier.run_once(NOW + timedelta(hours=2)) == 0

    with_redis(valkey_fresh, scenario)


def test_the_cli_and_a_key_rotation_emit_key_events(valkey_fresh: ValkeyServer) -> None:
    created = create_key(valkey_fresh.url, "acme")
    rotated = run_cli(valkey_fresh.url, "keys", "rotate", created["key_id"], "--overlap", "1h", "--json")
    assert rotated.code == 0, rotated.stderr
    assert run_cli(valkey_fresh.url, "keys", "revoke", created["key_id"]).code == 0
    assert run_cli(valkey_fresh.url, "keys", "revoke", created["key_id"]).code == 0

    async def read() -> list[Event]:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            return await outbox(client, "acme")
        finally:
            await client.aclose()

    found = asyncio.run(read())
    assert [(e.type, e.data["key_id"]) for e in found] == [
        ("key.created", created["key_id"]),
        ("key.created", rotated.json()["key_id"]),
        ("key.revoked", created["key_id"]),
    ]


def test_subscriptions_set_emits_subscription_changed_once_per_plan_change(valkey_fresh: ValkeyServer) -> None:
    def subscribe(plan: str, *extra: str) -> None:
        done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "acme", "--plan", plan, *extra)
        assert done.code == 0, done.stderr

    subscribe("basic", "--start", "2026-01-01T00:00:00Z")
    subscribe("basic")  # the same subscription again: nothing changed
    subscribe("basic", "--override", "requests_month=5")  # overrides only: no plan change
    subscribe("pro", "--effective", "2026-02-01T00:00:00Z")
    subscribe("pro")

    async def read() -> list[Event]:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            return await outbox(client, "acme")
        finally:
            await client.aclose()

    found = asyncio.run(read())
    assert [e.type for e in found] == ["subscription.changed"] * 2
    assert [e.data for e in found] == [
        {"plan": "basic", "previous_plan": None, "effective_at": "2026-01-01T00:00:00.000Z"},
        {"plan": "pro", "previous_plan": "basic", "effective_at": "2026-02-01T00:00:00.000Z"},
    ]
    assert found[1].id == event_id("subscription.changed", "acme", 1769904000000)


def test_expiries_ahead_are_told_once_per_key_and_grant_expiry(valkey_fresh: ValkeyServer) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        clock = ManualClock(NOW - timedelta(days=30))
        ring = keyring(redis, clock, None)
        soon = await ring.create("acme", expires_at=NOW + timedelta(days=6))
        await ring.create("acme", expires_at=NOW + timedelta(days=8))  # beyond 7 days: not yet
        await ring.create("acme")  # never expires
        revoked = await ring.create("acme", expires_at=NOW + timedelta(days=1))
        await ring.revoke(revoked.record.key_id)
        grants = GrantStore(redis)
        expires_ms = int((NOW + timedelta(days=3)).timestamp() * 1000)
        start_ms = int((NOW - timedelta(days=30)).timestamp() * 1000)
        for grant_id, amount, expiry in (("g-soon", "5.00", expires_ms), ("g-later", "5.00", None)):
            info = GrantInfo(grant_id, Decimal(amount), "USD", start_ms, expiry, 0, None, "", start_ms, "test")
            await grants.make("acme", info)

        notifier = ExpiryNotifier(redis, "tw:", OutboxWriter(redis), clock, days=7)
        assert await notifier.run_once(NOW) == 2
        assert await notifier.run_once(NOW + timedelta(hours=6)) == 0
        found = {e.type: e for e in await outbox(redis, "acme")}
        assert set(found) == {"key.expiring", "grant.expiring"}
        assert found["key.expiring"].data == {"key_id": soon.record.key_id, "expires_at": "2026-03-07T12:00:00.000Z"}
        assert found["key.expiring"].id == event_id(
            "key.expiring", soon.record.key_id, int((NOW + timedelta(days=6)).timestamp() * 1000)
        )
        assert found["grant.expiring"].data == {
            "grant_id": "g-soon",
            "unit": "USD",
            "remaining": "5",
            "expires_at": "2026-03-04T12:00:00.000Z",
        }
        assert found["grant.expiring"].id == event_id("grant.expiring", "acme", "g-soon", expires_ms)

    with_redis(valkey_fresh, scenario)


def test_the_expiry_job_loop_stops_when_told(valkey_fresh: ValkeyServer) -> None:
    async def scenario(redis: "AsyncRedis[str]") -> None:
        clock = ManualClock(NOW)
        stop = asyncio.Event()
        notifier = ExpiryNotifier(redis, "tw:", OutboxWriter(redis), clock, interval_s=0.05)
        task = asyncio.create_task(notifier.run(stop))
        await asyncio.sleep(0.12)
        stop.set()
        await asyncio.wait_for(task, 2)

    with_redis(valkey_fresh, scenario)
