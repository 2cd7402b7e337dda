"""The webhook endpoint store on a real Valkey: layout (no plain secret anywhere), listing and pages,
updates, deletion, secret rotation with its overlap, races (rotation, update, the dispatcher's marks),
and bad input refused before anything is written."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster

from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer
from tollway.harness.valkey_cluster import ValkeyCluster
from tollway.notifications.endpoint_store import (
    MAX_ENDPOINTS,
    EndpointConflict,
    EndpointNotFound,
    EndpointStore,
    TooManyEndpoints,
)
from tollway.notifications.endpoints import (
    STRICT,
    EndpointError,
    SecretBox,
    SecretUnreadable,
    UnsafeAddress,
    UrlPolicy,
)
from tollway.notifications.keys import endpoint_key, endpoints_key

pytestmark = pytest.mark.integration

PEPPER = b"7e57" * 16
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
URL = "https://hooks.example.com/tollway"

Scenario = Callable[[EndpointStore, AsyncRedis, ManualClock], Awaitable[None]]


@asynccontextmanager
async def opened(url: str, policy: UrlPolicy = STRICT) -> AsyncIterator[tuple[EndpointStore, AsyncRedis, ManualClock]]:
    redis = AsyncRedis.from_url(url, decode_responses=True)
    clock = ManualClock(NOW)
    try:
        yield EndpointStore(redis, SecretBox(PEPPER), "tw:", clock=clock, policy=policy), redis, clock
    finally:
        await redis.aclose()


def run(valkey: ValkeyServer, scenario: Scenario, policy: UrlPolicy = STRICT) -> None:
    async def go() -> None:
        async with opened(valkey.url, policy) as (store, redis, clock):
            await scenario(store, redis, clock)

    asyncio.run(go())


async def dump(redis: AsyncRedis) -> str:
    parts = []
    for key in await redis.keys("*"):
        kind = await redis.type(key)
        parts.append(key)
        if kind == "hash":
            parts.append(repr(await redis.hgetall(key)))
        elif kind == "set":
            parts.append(repr(await redis.smembers(key)))
        elif kind == "string":
            parts.append(repr(await redis.get(key)))
    return "\n".join(parts)


def test_create_get_list_delete_and_no_plain_secret_stored(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        issued = await store.create(URL, description="crm", event_types=["balance.low", "key.created", "balance.low"])
        endpoint = issued.endpoint
        assert endpoint.id.startswith("ep_")
        assert endpoint.event_types == ("balance.low", "key.created")  # catalogue order, once each
        assert issued.secret.startswith("whsec_")
        assert "whsec_" not in repr(issued)
        assert await store.get(endpoint.id) == endpoint
        assert await redis.smembers(endpoints_key("tw:")) == {endpoint.id}
        stored = await redis.hgetall(endpoint_key("tw:", endpoint.id))
        assert stored["version"] == "1"
        everything = await dump(redis)
        assert issued.secret not in everything
        assert issued.secret.removeprefix("whsec_") not in everything
        assert endpoint.signing_secrets(store.box, clock.now()) == [issued.secret]

        clock.advance(1)
        second = (await store.create("https://b.example.com/")).endpoint
        assert [e.id for e in await store.all()] == [endpoint.id, second.id]  # oldest first
        assert await store.delete(endpoint.id)
        assert not await store.delete(endpoint.id)
        assert await store.get(endpoint.id) is None
        assert await redis.exists(endpoint_key("tw:", endpoint.id)) == 0
        assert [e.id for e in await store.all()] == [second.id]

    run(valkey_fresh, scenario)


def test_bad_input_writes_nothing(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        for url in ("http://hooks.example.com/", "https://10.0.0.1/", "https://localhost/", "not a url"):
            with pytest.raises(EndpointError):
                await store.create(url)
        with pytest.raises(EndpointError, match="unknown event type"):
            await store.create(URL, event_types=["quota.crossed"])
        with pytest.raises(EndpointError, match="description"):
            await store.create(URL, description="x" * 501)
        assert await redis.keys("*") == []
        endpoint = (await store.create(URL)).endpoint
        with pytest.raises(UnsafeAddress):
            await store.update(endpoint.id, url="https://[::1]/")
        with pytest.raises(EndpointError):
            await store.rotate_secret(endpoint.id, timedelta(days=8))
        assert await store.get(endpoint.id) == endpoint
        with pytest.raises(EndpointNotFound):
            await store.update("ep_" + "0" * 24, description="x")
        with pytest.raises(EndpointNotFound):
            await store.rotate_secret("ep_" + "0" * 24)
        assert await redis.exists(endpoint_key("tw:", "ep_" + "0" * 24)) == 0

    run(valkey_fresh, scenario)


def test_development_settings_allow_http_and_private_addresses(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        endpoint = (await store.create("http://127.0.0.1:8080/hook")).endpoint
        assert endpoint.url == "http://127.0.0.1:8080/hook"

    run(valkey_fresh, scenario, UrlPolicy(allow_http=True, allow_private=True))


def test_pages_follow_creation_order_to_the_end(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        made = []
        for n in range(7):
            made.append((await store.create(f"https://h{n}.example.com/")).endpoint.id)
            clock.advance(0.001 * (n % 2))  # some share a millisecond: ties go by id
        seen: list[str] = []
        after = None
        while True:
            page, after = await store.page(3, after)
            seen.extend(e.id for e in page)
            if after is None:
                break
        assert sorted(seen) == sorted(made)
        assert len(seen) == len(set(seen)) == 7
        assert seen == [e.id for e in await store.all()]

    run(valkey_fresh, scenario)


def test_the_number_of_endpoints_is_bounded(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        await asyncio.gather(*(store.create(f"https://h{n}.example.com/") for n in range(MAX_ENDPOINTS)))
        with pytest.raises(TooManyEndpoints):
            await store.create(URL)
        assert await redis.scard(endpoints_key("tw:")) == MAX_ENDPOINTS

    run(valkey_fresh, scenario)


def test_update_changes_what_is_given_and_enabling_clears_the_failure(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        endpoint = (await store.create(URL, description="crm", event_types=["balance.low"])).endpoint
        before, after = await store.update(endpoint.id)
        assert before == after == endpoint
        clock.advance(60)
        before, after = await store.update(endpoint.id, url="https://other.example.com/x", event_types=[])
        assert (after.url, after.event_types, after.description) == ("https://other.example.com/x", (), "crm")
        assert after.updated_at == NOW + timedelta(seconds=60)
        assert after.secret == endpoint.secret
        assert await store.get(endpoint.id) == after

        assert await store.mark_failing(endpoint.id, clock.now())
        assert not await store.mark_failing(endpoint.id, clock.now() + timedelta(hours=1))  # not news
        failing = await store.require(endpoint.id)
        assert failing.state() == "failing"
        assert failing.failing_since == clock.now()
        assert await store.mark_recovered(endpoint.id)
        assert not await store.mark_recovered(endpoint.id)
        assert (await store.require(endpoint.id)).state() == "enabled"

        await store.mark_failing(endpoint.id, clock.now())
        assert await store.mark_disabled(endpoint.id, clock.now(), "failing for 3 days")
        disabled = await store.require(endpoint.id)
        assert disabled.state() == "disabled"
        assert disabled.disabled_reason == "failing for 3 days"
        _, enabled = await store.update(endpoint.id, enabled=True)
        assert enabled.enabled
        assert (enabled.failing_since, enabled.disabled_at, enabled.disabled_reason) == (None, None, None)
        assert await store.get(endpoint.id) == enabled
        _, off = await store.update(endpoint.id, enabled=False)
        assert off.disabled_reason == "disabled by an operator"

        assert await store.delete(endpoint.id)
        for mark in (
            store.mark_failing(endpoint.id, clock.now()),
            store.mark_recovered(endpoint.id),
            store.mark_disabled(endpoint.id, clock.now(), "x"),
        ):
            assert not await mark
        assert await redis.exists(endpoint_key("tw:", endpoint.id)) == 0  # a mark never recreates a record

    run(valkey_fresh, scenario)


def test_only_one_of_racing_dispatchers_disables_an_endpoint(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        endpoint = (await store.create(URL)).endpoint
        won = await asyncio.gather(*(store.mark_disabled(endpoint.id, clock.now(), f"d{n}") for n in range(8)))
        assert won.count(True) == 1

    run(valkey_fresh, scenario)


def test_racing_updates_all_apply_without_a_lost_field(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        endpoint = (await store.create(URL)).endpoint
        await asyncio.gather(
            store.update(endpoint.id, description="first"),
            store.update(endpoint.id, event_types=["key.revoked"]),
            store.update(endpoint.id, url="https://new.example.com/"),
        )
        final = await store.require(endpoint.id)
        assert (final.description, final.event_types, final.url) == (
            "first",
            ("key.revoked",),
            "https://new.example.com/",
        )

    run(valkey_fresh, scenario)


def test_rotation_keeps_the_old_secret_signing_for_the_overlap(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        issued = await store.create(URL)
        first = issued.secret
        clock.advance(10)
        rotated, before = await store.rotate_secret(issued.endpoint.id, timedelta(hours=2))
        assert before == issued.endpoint
        second = rotated.secret
        assert second != first
        stored = await store.require(issued.endpoint.id)
        assert stored == rotated.endpoint
        assert stored.signing_secrets(store.box, clock.now()) == [second, first]
        assert stored.view(clock.now())["previous_secret_expires_at"] == "2026-12-07T12:00:10.000Z"
        assert second not in await dump(redis)
        clock.advance(timedelta(hours=2))
        assert stored.signing_secrets(store.box, clock.now()) == [second]
        # A second rotation inside an overlap drops the oldest: two secrets sign at most.
        third, _ = await store.rotate_secret(issued.endpoint.id)
        assert (await store.require(issued.endpoint.id)).signing_secrets(store.box, clock.now()) == [
            third.secret,
            second,
        ]
        other = EndpointStore(redis, SecretBox(b"another pepper, 32 bytes or more!"), "tw:", clock=clock)
        with pytest.raises(SecretUnreadable):
            (await other.require(issued.endpoint.id)).signing_secrets(other.box, clock.now())

    run(valkey_fresh, scenario)


def test_racing_rotations_never_hand_out_a_secret_that_does_not_sign(valkey_fresh: ValkeyServer) -> None:
    async def scenario(store: EndpointStore, redis: AsyncRedis, clock: ManualClock) -> None:
        endpoint = (await store.create(URL)).endpoint
        results = await asyncio.gather(*(store.rotate_secret(endpoint.id) for _ in range(6)), return_exceptions=True)
        assert all(isinstance(r, tuple | EndpointConflict) for r in results), results
        successes = [r for r in results if isinstance(r, tuple)]
        assert successes
        # Each success replaced the secret current at the time: they form one chain from the first secret
        # to the current one, so no rotation's secret was overwritten unseen.
        replaced = {before.secret.sealed: issued.endpoint.secret.sealed for issued, before in successes}
        assert len(replaced) == len(successes)
        link, steps = endpoint.secret.sealed, 0
        while link in replaced:
            link, steps = replaced[link], steps + 1
        current = await store.require(endpoint.id)
        assert steps == len(successes)
        assert link == current.secret.sealed
        last = next(issued for issued, _ in successes if issued.endpoint.secret.sealed == link)
        assert current.signing_secrets(store.box, clock.now())[0] == last.secret

    run(valkey_fresh, scenario)


def test_the_store_works_on_a_redis_cluster(valkey_cluster: ValkeyCluster) -> None:
    """Every key in the {wh} slot: the scripts and the listing pipeline run on a cluster unchanged."""

    async def scenario() -> None:
        redis = RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=2)
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        store = EndpointStore(redis, SecretBox(PEPPER), prefix, clock=ManualClock(NOW))
        try:
            made = [(await store.create(f"https://h{n}.example.com/")).endpoint for n in range(3)]
            assert {e.id for e in await store.all()} == {e.id for e in made}
            _, after = await store.update(made[0].id, event_types=["key.created"])
            assert after.event_types == ("key.created",)
            rotated, _ = await store.rotate_secret(made[1].id)
            assert (await store.require(made[1].id)).signing_secrets(store.box, NOW)[0] == rotated.secret
            assert await store.mark_disabled(made[2].id, NOW, "failing")
            for endpoint in made:
                assert await store.delete(endpoint.id)
            assert await store.all() == []
        finally:
            await redis.aclose()

    asyncio.run(scenario())
