"""The JWKS cache: single flight, Cache-Control lifetimes clamped, rate-limited refetches, the last good
set kept through an outage; and the HTTP fetcher against an httpx mock transport."""

import asyncio
import json

import httpx
import pytest

from tests.support.jwt_issuer import LocalIssuer, SigningKey
from tests.unit.auth_jwt.fakes import FakeFetcher
from tollway.auth.jwt.issuer import JwksPolicy
from tollway.auth.jwt.jwks import FetchedJwks, HttpJwksFetcher, JwksCache, JwksFetchError, cache_max_age
from tollway.auth.jwt.keys import parse_jwks
from tollway.clock import ManualClock

K1 = SigningKey.rsa("k1")
K2 = SigningKey.ec("k2")
POLICY = JwksPolicy("https://idp.example/jwks.json", min_ttl_s=60, max_ttl_s=3600, refetch_interval_s=5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("public, max-age=600", 600.0),
        ("max-age=600, s-maxage=120", 120.0),
        ('max-age="30"', 30.0),
        ("no-store", 0.0),
        ("private, no-cache", 0.0),
        ("must-revalidate", None),
        ("max-age=abc", None),
    ],
)
def test_cache_control_max_age(header: str | None, expected: float | None) -> None:
    assert cache_max_age(header) == expected


def test_lifetimes_are_clamped_to_the_floor_and_ceiling() -> None:
    assert POLICY.ttl(None) == 300
    assert POLICY.ttl(0) == 60
    assert POLICY.ttl(10**9) == 3600
    assert POLICY.ttl(900) == 900


def test_one_fetch_however_many_wait() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fetcher = FakeFetcher(K1)
        fetcher.delay = 0.01
        cache = JwksCache("idp", POLICY, fetcher, clock.monotonic)
        assert cache.current() is None
        results = await asyncio.gather(*(cache.refresh() for _ in range(50)))
        assert fetcher.calls == 1
        assert all(r is not None and r.kids == ("k1",) for r in results)

    asyncio.run(scenario())


def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fetcher = FakeFetcher(K1)
        cache = JwksCache("idp", POLICY, fetcher, clock.monotonic)
        await cache.refresh()
        for _ in range(100):  # a flood of made-up kids
            assert not cache.may_refetch()
            await cache.refresh()
            clock.advance(0.01)
        assert fetcher.calls == 1
        clock.advance(5)
        fetcher.document = LocalIssuer([K1, K2]).jwks()  # the issuer rotated in a new key
        assert cache.may_refetch()
        keys = await cache.refresh()
        assert keys is not None
        assert keys.kids == ("k1", "k2")
        assert fetcher.calls == 2

    asyncio.run(scenario())


def test_the_last_good_set_survives_an_outage_and_none_is_none() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fetcher = FakeFetcher(K1)
        fetcher.down = True
        cache = JwksCache("idp", POLICY, fetcher, clock.monotonic)
        assert await cache.refresh() is None
        assert cache.last_error == "connection refused"
        clock.advance(5)
        fetcher.down = False
        assert await cache.refresh() is not None
        clock.advance(400)
        assert cache.stale()
        fetcher.down = True
        kept = await cache.refresh()
        assert kept is not None
        assert kept.kids == ("k1",)
        assert cache.describe()["failures"] == 2

    asyncio.run(scenario())


def test_a_slow_fetch_is_waited_for_only_so_long_and_finishes_anyway() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fetcher = FakeFetcher(K1)
        fetcher.delay = 0.2
        cache = JwksCache("idp", POLICY, fetcher, clock.monotonic)
        assert await cache.refresh(wait_s=0.01) is None
        assert cache.fetching
        assert await cache.refresh(wait_s=None) is not None
        assert fetcher.calls == 1

    asyncio.run(scenario())


def test_the_lifetime_follows_cache_control() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        fetcher = FakeFetcher(K1, max_age=120)
        cache = JwksCache("idp", POLICY, fetcher, clock.monotonic)
        await cache.refresh()
        clock.advance(119)
        assert not cache.stale()
        clock.advance(1)
        assert cache.stale()

    asyncio.run(scenario())


def test_private_symmetric_and_weak_keys_are_left_out_of_a_set() -> None:
    weak = SigningKey.rsa("weak", bits=1024)
    private = K1.public_jwk() | {"kid": "private", "d": "AQAB"}
    document = {
        "keys": [
            K1.public_jwk(),
            weak.public_jwk(),
            private,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            "not a key",
        ]
    }
    keys = parse_jwks(json.dumps(document).encode())
    assert keys.kids == ("k1",)
    assert len(keys.skipped) == 5
    assert any("2048" in reason for reason in keys.skipped)


def http_fetcher(handler: object) -> HttpJwksFetcher:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return HttpJwksFetcher(httpx.AsyncClient(transport=transport), max_bytes=10_000)


def test_http_fetcher_reads_the_body_and_cache_control() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=LocalIssuer([K1]).jwks(), headers={"cache-control": "max-age=900"})

    async def scenario() -> FetchedJwks:
        fetcher = http_fetcher(handler)
        try:
            return await fetcher.fetch("https://idp.example/jwks.json", 1.0)
        finally:
            await fetcher.aclose()

    fetched = asyncio.run(scenario())
    assert fetched.max_age == 900
    assert parse_jwks(fetched.body).kids == ("k1",)
    assert seen == ["https://idp.example/jwks.json"]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503), "HTTP 503"),
        (httpx.Response(302, headers={"location": "https://evil.example/jwks.json"}), "HTTP 302"),
        (httpx.Response(200, content=b"x" * 20_000), "larger than 10000 bytes"),
    ],
)
def test_http_fetcher_refuses_errors_redirects_and_huge_sets(response: httpx.Response, message: str) -> None:
    async def scenario() -> None:
        fetcher = http_fetcher(lambda request: response)
        try:
            with pytest.raises(JwksFetchError, match=message):
                await fetcher.fetch("https://idp.example/jwks.json", 1.0)
        finally:
            await fetcher.aclose()

    asyncio.run(scenario())


def test_http_fetcher_reports_transport_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def scenario() -> None:
        fetcher = http_fetcher(handler)
        try:
            with pytest.raises(JwksFetchError, match="ConnectError"):
                await fetcher.fetch("https://idp.example/jwks.json", 1.0)
        finally:
            await fetcher.aclose()

    asyncio.run(scenario())
