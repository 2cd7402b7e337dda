import asyncio
from datetime import timedelta

import pytest

from tollway.auth import apikey
from tollway.auth.authenticator import Authenticator, PendingLookup
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import (
    CredentialStoreUnavailable,
    ExpiredKey,
    MalformedKey,
    MissingCredential,
    RevokedKey,
    UnknownKey,
)
from tollway.auth.keyring import Keyring
from tollway.auth.records import Identity
from tollway.clock import ManualClock

from .fakes import MemoryKeyStore

DIGESTER = KeyDigester(b"k" * 32)


def make(store: MemoryKeyStore | None = None, timeout: float = 0.1) -> tuple[Authenticator, Keyring, ManualClock]:
    clock = ManualClock()
    store = store or MemoryKeyStore()
    cache = KeyCache(clock.monotonic, ttl=1.0, negative_ttl=1.0)
    return Authenticator(store, DIGESTER, cache, clock, store_timeout=timeout), Keyring(store, DIGESTER, clock), clock


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_valid_key_identifies_the_customer_and_is_then_cached() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, keys, _ = make(store)
        issued = await keys.create("acme")
        identity = await auth.authenticate(bearer(issued.secret))
        assert identity == Identity("acme", issued.record.key_id, "live")
        cached = auth.try_cached(bearer(issued.secret))
        assert not isinstance(cached, PendingLookup)
        assert cached.identity == identity
        assert cached.header == "authorization"
        assert store.fetches == 1

    asyncio.run(scenario())


def test_refusals_on_their_face_need_no_lookup() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, keys, _ = make(store)
        issued = await keys.create("acme")
        typo = issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B")
        with pytest.raises(MalformedKey):
            auth.try_cached(bearer(typo))
        with pytest.raises(MissingCredential):
            auth.try_cached({})
        assert store.fetches == 0

    asyncio.run(scenario())


def test_unknown_key() -> None:
    async def scenario() -> None:
        auth, _, _ = make()
        with pytest.raises(UnknownKey):
            await auth.authenticate(bearer(apikey.generate("live").text))

    asyncio.run(scenario())


def test_revoked_key_is_refused_after_cache_eviction() -> None:
    async def scenario() -> None:
        auth, keys, _ = make()
        issued = await keys.create("acme")
        await auth.authenticate(bearer(issued.secret))
        await keys.revoke(issued.record.key_id)
        auth.cache.evict(DIGESTER.digest(issued.secret))  # what the change announcement does
        with pytest.raises(RevokedKey):
            await auth.authenticate(bearer(issued.secret))

    asyncio.run(scenario())


def test_revocation_without_announcement_is_bounded_by_the_ttl() -> None:
    async def scenario() -> None:
        auth, keys, clock = make()
        issued = await keys.create("acme")
        await auth.authenticate(bearer(issued.secret))
        await keys.revoke(issued.record.key_id)
        clock.advance(1.0)
        with pytest.raises(RevokedKey):
            await auth.authenticate(bearer(issued.secret))

    asyncio.run(scenario())


def test_expiry_is_exact_even_for_cached_keys() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        store = MemoryKeyStore()
        auth = Authenticator(store, DIGESTER, KeyCache(clock.monotonic, ttl=1.0), clock)
        keys = Keyring(store, DIGESTER, clock)
        issued = await keys.create("acme", expires_at=clock.now() + timedelta(seconds=10))
        await auth.authenticate(bearer(issued.secret))
        clock._now += timedelta(seconds=10)  # wall clock only: the cache entry is still fresh
        with pytest.raises(ExpiredKey):
            auth.try_cached(bearer(issued.secret))

    asyncio.run(scenario())


def test_rotation_overlap() -> None:
    async def scenario() -> None:
        auth, keys, clock = make()
        old = await keys.create("acme")
        rotation = await keys.rotate(old.record.key_id, timedelta(hours=24))
        assert rotation.new.record.customer_id == "acme"
        assert rotation.old.rotated_to == rotation.new.record.key_id
        assert (await auth.authenticate(bearer(old.secret))).key_id == old.record.key_id
        clock.advance(timedelta(hours=23, minutes=59))
        await auth.authenticate(bearer(old.secret))
        clock.advance(timedelta(minutes=1))
        with pytest.raises(ExpiredKey):
            await auth.authenticate(bearer(old.secret))
        assert (await auth.authenticate(bearer(rotation.new.secret))).key_id == rotation.new.record.key_id

    asyncio.run(scenario())


def test_only_active_keys_rotate() -> None:
    async def scenario() -> None:
        _, keys, _ = make()
        issued = await keys.create("acme")
        await keys.revoke(issued.record.key_id)
        with pytest.raises(ValueError, match="revoked"):
            await keys.rotate(issued.record.key_id, timedelta(hours=1))

    asyncio.run(scenario())


def test_concurrent_misses_share_one_lookup() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        store.delay = 0.01
        auth, keys, _ = make(store)
        issued = await keys.create("acme")
        results = await asyncio.gather(*(auth.authenticate(bearer(issued.secret)) for _ in range(50)))
        assert {r.customer_id for r in results} == {"acme"}
        assert store.fetches == 1

    asyncio.run(scenario())


def test_slow_store_becomes_unavailable_within_the_timeout() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, keys, _ = make(store, timeout=0.05)
        issued = await keys.create("acme")
        store.delay = 5
        pending = auth.try_cached(bearer(issued.secret))
        assert isinstance(pending, PendingLookup)
        with pytest.raises(CredentialStoreUnavailable):
            await asyncio.wait_for(auth.resolve(pending), 1)

    asyncio.run(scenario())


def test_invalid_customer_ids_and_expiry_are_refused() -> None:
    async def scenario() -> None:
        _, keys, clock = make()
        with pytest.raises(ValueError, match="customer id"):
            await keys.create("bad id\r\nx-evil: 1")
        with pytest.raises(ValueError, match="future"):
            await keys.create("acme", expires_at=clock.now())

    asyncio.run(scenario())
