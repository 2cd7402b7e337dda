"""Verified tokens by digest: until expiry (capped), least recently used evicted first."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.auth.jwt.token_cache import TokenCache, token_digest
from tollway.clock import ManualClock


def test_entries_live_until_the_token_expires_or_the_cap() -> None:
    clock = ManualClock()
    cache: TokenCache[str] = TokenCache(clock.monotonic, max_entries=10, max_ttl_s=300)
    cache.put(b"a", "alice", valid_for_s=60)
    cache.put(b"b", "bob", valid_for_s=10_000)
    cache.put(b"c", "carol", valid_for_s=0)  # already expired: not cached
    assert cache.get(b"c") is None
    clock.advance(59.9)
    assert cache.get(b"a") == "alice"
    clock.advance(0.1)
    assert cache.get(b"a") is None
    clock.advance(240)
    assert cache.get(b"b") is None  # the cap, not the token's exp
    assert len(cache) == 0


def test_the_least_recently_used_goes_first() -> None:
    clock = ManualClock()
    cache: TokenCache[int] = TokenCache(clock.monotonic, max_entries=3)
    for n in range(3):
        cache.put(bytes([n]), n, 100)
    assert cache.get(b"\x00") == 0  # used: now the most recent
    cache.put(b"\x03", 3, 100)
    assert cache.get(b"\x01") is None
    assert [cache.get(bytes([n])) for n in (0, 2, 3)] == [0, 2, 3]


def test_digests_are_fixed_size_and_do_not_contain_the_token() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2ln"
    digest = token_digest(token)
    assert len(digest) == 16
    assert token.encode() not in digest
    assert token_digest(token) == digest != token_digest(token + "x")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.integers(1, 50)), max_size=200))
def test_the_cache_never_exceeds_its_bound(puts: list[tuple[bytes, int]]) -> None:
    clock = ManualClock()
    cache: TokenCache[int] = TokenCache(clock.monotonic, max_entries=16)
    for digest, ttl in puts:
        cache.put(digest, ttl, ttl)
        assert len(cache) <= 16
        assert cache.get(digest) == ttl
