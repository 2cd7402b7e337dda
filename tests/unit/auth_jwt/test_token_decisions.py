"""Bearer tokens through the decision core (no Envoy): identity, scopes, limits, every refusal as a
problem, the JWKS outage policy, and API keys unchanged beside them."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.support.jwt_issuer import LocalIssuer, SigningKey, issuers_yaml
from tests.unit.auth_jwt.fakes import FakeFetcher
from tests.unit.fakes import MemoryKeyStore
from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.jwt.authenticator import TokenAuthenticator
from tollway.auth.jwt.issuers import load_issuers_text
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Decision, Deny
from tollway.extproc.decision import DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import load_compiled_catalog
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

CATALOG = Path(__file__).parents[2] / "fixtures" / "jwt" / "catalog.yaml"
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RSA = SigningKey.rsa("k1")
ROTATED = SigningKey.ec("k2")
DIGESTER = KeyDigester(b"j" * 32)


class Harness:
    def __init__(self, fetcher: FakeFetcher | None = None, *, static: bool = False, issuers: bool = True) -> None:
        self.clock = ManualClock(START)
        self.idp = LocalIssuer([RSA], now=START.timestamp())
        self.fetcher = fetcher or FakeFetcher(RSA)
        self.keys = MemoryKeyStore()
        self.subscriptions = MemorySubscriptionStore()
        text = issuers_yaml(pem=RSA.public_pem()) if static else issuers_yaml(jwks_url="https://idp.example/jwks")
        self.tokens = (
            TokenAuthenticator.build(load_issuers_text(text, "issuers.yaml", {}), self.clock, self.fetcher)
            if issuers
            else None
        )
        gate = EntitlementGate(
            LiveCatalog(load_compiled_catalog(CATALOG)),
            SubscriptionResolver(self.subscriptions, SubscriptionCache(self.clock.monotonic)),
            MemoryLimiter(),
            self.clock,
        )
        auth = Authenticator(self.keys, DIGESTER, KeyCache(self.clock.monotonic), self.clock, tokens=self.tokens)
        self.core = DecisionCore(auth, Refusals(), gate=gate)
        self.bare = DecisionCore(auth, Refusals())  # stage 1 only

    async def subscribe(self, customer: str, plan: str = "standard") -> None:
        await self.subscriptions.put(Subscription.new(customer, plan, START))

    async def decide(self, token: str, path: str = "/v1/items/7", method: str = "GET") -> Decision:
        request = CheckRequest(method, path, {"authorization": f"Bearer {token}"}, "req-1")
        return await self.core.decide(request)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def problem(decision: Decision, status: int, slug: str) -> dict[str, Any]:
    assert isinstance(decision, Deny), decision
    assert decision.status == status, decision.body
    body: dict[str, Any] = json.loads(decision.body)
    assert body["type"].endswith("/" + slug), body
    return body


def test_a_valid_token_is_its_customer_with_plan_limits_and_no_credential_upstream() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("acme")
        token = h.idp.token("acme", scope="items:read")
        decision = await h.decide(token)
        assert isinstance(decision, Allow), decision
        upstream = dict(decision.upstream_headers)
        assert upstream["x-tollway-customer-id"] == "acme"
        assert upstream["x-tollway-key-id"] == "jwt:test-idp:acme"
        assert upstream["x-tollway-plan"] == "standard"
        assert upstream["x-tollway-feature"] == "items-read"
        assert "authorization" in decision.remove_headers
        assert dict(decision.client_headers)["ratelimit"]
        assert h.fetcher.calls == 1

    run(scenario)


def test_a_verified_token_is_cached_and_answered_without_io() -> None:
    async def scenario() -> None:
        h = Harness()
        token = h.idp.token("acme")
        request = CheckRequest("GET", "/anything", {"authorization": f"Bearer {token}"}, "r")
        assert h.bare.decide_now(request) is None  # the issuer's JWKS is not fetched yet
        assert isinstance(await h.bare.decide(request), Allow)
        assert h.tokens is not None
        assert len(h.tokens.cache) == 1
        h.fetcher.down = True
        for _ in range(3):  # from the cache: no fetch, no signature check
            assert isinstance(h.bare.decide_now(request), Allow)
        assert h.fetcher.calls == 1
        h.clock.advance(600 + 30)  # exp + leeway: the cached entry ends with the token
        assert problem(h.bare.decide_now(request) or Deny(0, b""), 401, "expired-token")

    run(scenario)


def test_static_keys_verify_on_the_synchronous_path() -> None:
    h = Harness(static=True)
    request = CheckRequest("GET", "/x", {"authorization": f"Bearer {h.idp.token('acme')}"}, "r")
    assert isinstance(h.bare.decide_now(request), Allow)


def test_every_attack_is_a_401_problem_that_never_echoes_the_token() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("acme")
        idp = h.idp
        attacker = SigningKey.rsa("k1")
        pem = RSA.public_pem().encode()
        cases = {
            "alg-none": (jwt.encode(idp.claims(), None, algorithm="none"), "token-algorithm-not-allowed"),
            "hs256-with-public-key": (_hs256_with(pem, idp.claims()), "token-algorithm-not-allowed"),
            "expired": (idp.token(lifetime_s=-100), "expired-token"),
            "nbf-future": (idp.token(nbf=int(START.timestamp()) + 3600), "token-not-yet-valid"),
            "wrong-iss": (idp.token(iss="https://evil.example/"), "untrusted-token-issuer"),
            "wrong-aud": (idp.token(aud="https://not-us.example"), "invalid-token-audience"),
            "unknown-kid": (idp.token(key=SigningKey.rsa("nobody-knows")), "unknown-token-key"),
            "no-customer": (idp.token(sub=None), "missing-customer-claim"),
            "bad-base64": ("eyJhbGciOiJSUzI1NiJ9.e30.!!!", "malformed-token"),
            "64kB": ("eyJ" + "A" * 65536 + ".e30.c2ln", "token-too-large"),
            "jku-elsewhere": (
                idp.token(key=attacker, headers={"jku": "https://evil.example/jwks.json"}),
                "invalid-token-signature",
            ),
        }
        for name, (token, slug) in cases.items():
            decision = await h.decide(token)
            body = problem(decision, 401, slug)
            assert isinstance(decision, Deny)
            assert token not in decision.body.decode(), name
            assert token.split(".")[1][:40] not in decision.body.decode(), name
            challenge = dict(decision.headers)["www-authenticate"]
            assert 'error="invalid_token"' in challenge, name
            assert body["detail"], name
        assert h.fetcher.calls <= 2  # the unknown kid may cost one refetch; nothing else fetches

    run(scenario)


def _hs256_with(secret: bytes, claims: dict[str, Any]) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode()) + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()


def test_unknown_kids_do_not_hammer_the_jwks_endpoint() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("acme")
        assert isinstance(await h.decide(h.idp.token("acme", scope="items:read")), Allow)
        made_up = [h.idp.token("acme", key=SigningKey.ec(f"made-up-{n}")) for n in range(30)]
        for token in made_up:  # within the refetch interval of the first fetch: no refetch at all
            problem(await h.decide(token), 401, "unknown-token-key")
        assert h.fetcher.calls == 1
        h.clock.advance(5)
        for token in made_up:  # the next interval: one refetch, whatever the flood
            problem(await h.decide(token), 401, "unknown-token-key")
        assert h.fetcher.calls == 2

    run(scenario)


def test_a_rotated_key_is_picked_up_without_a_restart() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("acme")
        assert isinstance(await h.decide(h.idp.token("acme", scope="items:read")), Allow)
        h.clock.advance(10)  # past the refetch interval
        h.fetcher.document = LocalIssuer([RSA, ROTATED]).jwks()
        rotated = LocalIssuer([ROTATED], now=h.clock.now().timestamp())
        decision = await h.decide(rotated.token("acme", scope="items:read"))
        assert isinstance(decision, Allow), decision
        assert h.fetcher.calls == 2

    run(scenario)


def test_jwks_down_known_keys_keep_working_and_none_fetched_is_503() -> None:
    async def scenario() -> None:
        down = FakeFetcher(RSA)
        down.down = True
        h = Harness(down)
        await h.subscribe("acme")
        token = h.idp.token("acme", scope="items:read")
        body = problem(await h.decide(token), 503, "authorization-unavailable")
        assert "signing keys could not be fetched" in body["detail"]
        h.clock.advance(5)
        down.down = False
        assert isinstance(await h.decide(token), Allow)
        down.down = True
        h.clock.advance(4000)  # the set is stale and cannot be refreshed: the last good one is used
        fresh = LocalIssuer([RSA], now=h.clock.now().timestamp()).token("acme", scope="items:read")
        assert isinstance(await h.decide(fresh), Allow)

    run(scenario)


def test_a_missing_scope_is_a_403_naming_it_and_api_keys_carry_no_scopes() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("acme")
        reader = h.idp.token("acme", scope="items:read")
        assert isinstance(await h.decide(reader, "/v1/items/7"), Allow)
        decision = await h.decide(reader, "/v1/items/7", "PUT")
        body = problem(decision, 403, "insufficient-scope")
        assert "'items:write'" in body["detail"]
        assert body["required-scopes"] == ["items:write"]
        assert isinstance(decision, Deny)
        assert dict(decision.headers)["www-authenticate"].endswith('error="insufficient_scope", scope="items:write"')
        assert isinstance(await h.decide(reader, "/v1/status"), Allow)  # a feature without scopes
        listed = h.idp.token("acme", scp=["items:read", "items:write"])
        assert isinstance(await h.decide(listed, "/v1/items/7", "PUT"), Allow)
        issued = await Keyring(h.keys, DIGESTER, h.clock).create("acme")
        request = CheckRequest("PUT", "/v1/items/7", {"x-api-key": issued.secret}, "r")
        assert isinstance(await h.core.decide(request), Allow)

    run(scenario)


def test_limits_apply_to_token_callers_as_to_keys() -> None:
    async def scenario() -> None:
        h = Harness()
        await h.subscribe("tiny-co", "tiny")
        token = h.idp.token("tiny-co", scope="items:read")
        for _ in range(3):
            assert isinstance(await h.decide(token), Allow)
        decision = await h.decide(token)
        assert isinstance(decision, Deny)
        assert decision.status == 429
        problem(await h.decide(h.idp.token("nobody", scope="items:read")), 403, "no-subscription")

    run(scenario)


def test_without_issuers_keys_behave_as_before() -> None:
    async def scenario() -> None:
        h = Harness(issuers=False)
        token = h.idp.token("acme")
        request = CheckRequest("GET", "/x", {"authorization": f"Bearer {token}"}, "r")
        problem(await h.bare.decide(request), 401, "malformed-api-key")
        assert h.fetcher.calls == 0

    run(scenario)


@pytest.mark.parametrize("header", ["x-api-key"])
def test_tokens_only_travel_in_the_authorization_header(header: str) -> None:
    async def scenario() -> None:
        h = Harness()
        request = CheckRequest("GET", "/x", {header: h.idp.token("acme")}, "r")
        body = problem(await h.bare.decide(request), 401, "malformed-token")
        assert "Authorization: Bearer" in body["detail"]

    run(scenario)
