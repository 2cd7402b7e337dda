"""Unknown keys cannot evict known ones (issue 13 item 4): failed lookups are remembered apart from key
records, bounded and short-lived, so a flood of made-up keys — well formed, with a valid checksum, each
costing one store lookup — leaves every known key answered from memory. Revocation and creation still
reach the cache: at once when announced, within the TTLs when an announcement is lost."""

import asyncio

import pytest

from tollway.auth import apikey
from tollway.auth.authenticator import Authenticated, Authenticator, PendingLookup
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import RevokedKey, UnknownKey
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.settings import Settings

from .fakes import MemoryKeyStore

DIGESTER = KeyDigester(b"f" * 32)
FLOOD = 100_000


def unknown_key(n: int) -> str:
    """A well-formed key with a valid checksum that nobody issued (deterministic, cheap to make)."""
    return apikey.generate("live", lambda size: n.to_bytes(size, "big")).text


def make(store: MemoryKeyStore) -> tuple[Authenticator, Keyring, ManualClock]:
    clock = ManualClock()
    defaults = Settings.model_fields
    cache = KeyCache(  # the production defaults (server.build_cache)
        clock.monotonic,
        ttl=defaults["key_cache_ttl_s"].default,
        negative_ttl=defaults["key_negative_cache_ttl_s"].default,
        max_entries=defaults["key_cache_max_entries"].default,
        max_negative_entries=defaults["key_negative_cache_max_entries"].default,
    )
    return Authenticator(store, DIGESTER, cache, clock), Keyring(store, DIGESTER, clock), clock


def headers(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def test_a_flood_of_unknown_keys_does_not_evict_a_known_one() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, keys, _ = make(store)
        issued = await keys.create("acme")
        await auth.authenticate(headers(issued.secret))  # looked up once, now cached
        for start in range(0, FLOOD, 1000):  # as concurrent checks would, a thousand at a time
            batch = [auth.authenticate(headers(unknown_key(n))) for n in range(start, start + 1000)]
            outcomes = await asyncio.gather(*batch, return_exceptions=True)
            assert all(isinstance(outcome, UnknownKey) for outcome in outcomes)
        assert store.fetches == 1 + FLOOD  # each made-up key cost one lookup, as it must
        served = auth.try_cached(headers(issued.secret))
        assert isinstance(served, Authenticated), "the known key was evicted by unknown ones"
        assert served.identity.customer_id == "acme"
        assert store.fetches == 1 + FLOOD  # no store lookup for the known key
        bound = Settings.model_fields["key_negative_cache_max_entries"].default
        assert len(auth.cache) <= 1 + bound  # the failed lookups stay bounded

    asyncio.run(scenario())


def test_an_unknown_key_repeated_is_refused_from_memory_until_the_negative_ttl() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, _, clock = make(store)
        key = unknown_key(7)
        for _ in range(3):
            with pytest.raises(UnknownKey):
                await auth.authenticate(headers(key))
        assert store.fetches == 1
        clock.advance(1.0)
        with pytest.raises(UnknownKey):
            await auth.authenticate(headers(key))
        assert store.fetches == 2

    asyncio.run(scenario())


def test_a_key_created_after_a_failed_lookup_is_found() -> None:
    """At once when the creation is announced; within the negative TTL (≤ 1 s) when it is not."""

    async def scenario() -> None:
        for announced in (True, False):
            store = MemoryKeyStore()
            auth, keys, clock = make(store)
            issued = await keys.create("acme")
            digest = DIGESTER.digest(issued.secret)
            record = store.records.pop(digest)  # as if looked up just before it was created
            with pytest.raises(UnknownKey):
                await auth.authenticate(headers(issued.secret))
            store.records[digest] = record
            if announced:
                auth.cache.evict(digest)  # what the pub/sub change announcement does
            else:
                with pytest.raises(UnknownKey):  # still remembered as unknown ...
                    await auth.authenticate(headers(issued.secret))
                clock.advance(Settings.model_fields["key_negative_cache_ttl_s"].default)  # ... for the TTL only
            assert (await auth.authenticate(headers(issued.secret))).customer_id == "acme"

    asyncio.run(scenario())


def test_revocation_still_evicts_a_cached_record() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        auth, keys, _ = make(store)
        issued = await keys.create("acme")
        await auth.authenticate(headers(issued.secret))
        await keys.revoke(issued.record.key_id)
        auth.cache.evict(DIGESTER.digest(issued.secret))
        assert isinstance(auth.try_cached(headers(issued.secret)), PendingLookup)
        with pytest.raises(RevokedKey):
            await auth.authenticate(headers(issued.secret))

    asyncio.run(scenario())


def test_negative_entries_have_their_own_bound_and_ttl() -> None:
    clock = ManualClock()
    cache = KeyCache(clock.monotonic, ttl=1.0, negative_ttl=0.5, max_entries=2, max_negative_entries=3)
    cache.put("known", object())  # type: ignore[arg-type]
    for n in range(10):
        cache.put(f"unknown-{n}", None)
    assert cache.get("known") is not None
    assert len(cache) == 1 + 3
    assert cache.get("unknown-0") is None
    assert cache.get("unknown-9") is not None
    cache.put("unknown-9", object())  # type: ignore[arg-type]  # created since: the record replaces it
    hit = cache.get("unknown-9")
    assert hit is not None
    assert hit.record is not None
    cache.put("known", None)  # deleted since: no stale record behind the negative answer
    hit = cache.get("known")
    assert hit is not None
    assert hit.record is None
    clock.advance(0.5)
    assert cache.get("known") is None  # negative answers last negative_ttl
    with pytest.raises(ValueError):
        KeyCache(clock.monotonic, max_negative_entries=0)
