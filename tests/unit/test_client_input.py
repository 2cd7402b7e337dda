"""No client input produces a 5xx: any header names and values, any path, through the decision core with
token issuers, a plan catalog and a query-string credential configured (issue 13 item 1).

The servers decode header bytes as latin-1 (HTTP) or receive UTF-8 text (gRPC), so the values here are
both: each byte Envoy passes (visible ASCII, obs-text 0x80-0xFF, tab) as one character, and any text.
"""

import asyncio
import json
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.auth_jwt.test_token_decisions import CATALOG, DIGESTER, Harness
from tollway.auth import apikey
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.errors import MalformedKey
from tollway.auth.jwt.errors import MalformedToken
from tollway.auth.jwt.token_cache import token_digest
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.decision import DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import load_compiled_catalog
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
HEADER_BYTES = [*range(0x20, 0x7F), *range(0x80, 0x100), 0x09]  # what Envoy passes in a header value

header_names = st.one_of(
    st.sampled_from(["authorization", "x-api-key", "x-request-id", "x-tollway-customer-id", "x-tollway-plan"]),
    st.text(TOKEN_CHARS, min_size=1, max_size=40).map(str.lower),
)
latin1_values = st.lists(st.sampled_from(HEADER_BYTES), max_size=300).map(lambda b: bytes(b).decode("latin-1"))
credential_like = st.builds(
    lambda scheme, body: f"{scheme} {body}",
    st.sampled_from(["Bearer", "bearer", "Basic", "BEARER", ""]),
    st.one_of(
        latin1_values,
        st.text(max_size=200),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=40), st.text(max_size=40), st.text(max_size=40)),
        st.builds(lambda tail: "tw_live_" + tail, st.text(max_size=40)),
    ),
)
header_values = st.one_of(latin1_values, st.text(max_size=300), credential_like)
paths = st.one_of(
    st.sampled_from(["/v1/items/7", "/v1/status", "//[x?api_key=a", "/tollway/v1/usage", "/?api_key=%ff%00"]),
    st.text(max_size=200).map(lambda t: "/" + t),
    st.builds(lambda p, q: f"/{p}?api_key={q}", st.text(max_size=50), header_values),
)
methods = st.one_of(st.sampled_from(["GET", "POST", "HEAD", "DELETE"]), st.text(max_size=20))


def harness() -> Harness:
    """Token issuers (static keys) and the JWT test catalog, plus a query-string credential."""
    built = Harness(static=True)
    auth = Authenticator(
        built.keys,
        DIGESTER,
        KeyCache(built.clock.monotonic),
        built.clock,
        CredentialSource(query_param="api_key"),
        tokens=built.tokens,
    )
    gate = EntitlementGate(
        LiveCatalog(load_compiled_catalog(CATALOG)),
        SubscriptionResolver(built.subscriptions, SubscriptionCache(built.clock.monotonic)),
        MemoryLimiter(),
        built.clock,
    )
    built.core = DecisionCore(auth, Refusals(), gate=gate)
    return built


def assert_client_answer(decision: Decision) -> None:
    if isinstance(decision, Allow):
        return
    assert 400 <= decision.status < 500, (decision.status, decision.body)
    assert json.loads(decision.body)["status"] == decision.status


async def decide_both_ways(core: DecisionCore, request: CheckRequest) -> list[Decision]:
    now = core.decide_now(request)
    return [*([now] if now is not None else []), await core.decide(request)]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(header_names, header_values, max_size=8),
    method=methods,
    path=paths,
)
def test_any_headers_path_and_method_get_a_2xx_or_4xx(headers: Mapping[str, str], method: str, path: str) -> None:
    built = harness()

    async def scenario() -> None:
        request = CheckRequest(method, path, headers, headers.get("x-request-id", ""))
        for decision in await decide_both_ways(built.core, request):
            assert_client_answer(decision)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer a.b\u0430.c"},  # the reported one: a Cyrillic a (gRPC: UTF-8 text)
        {"authorization": "Bearer a.b\xd0\xb0.c"},  # the same bytes as the HTTP server decodes them
        {"authorization": "Bearer \xff.\xfe.\xfd"},
        {"authorization": "Bearer tw_live_\u0430"},
        {"x-api-key": "a.b\u0430.c"},
    ],
)
def test_a_non_ascii_credential_is_a_401(headers: Mapping[str, str]) -> None:
    built = harness()

    async def scenario() -> None:
        for decision in await decide_both_ways(built.core, CheckRequest("GET", "/v1/items/7", headers, "r-1")):
            assert not isinstance(decision, Allow)
            assert decision.status == 401
            assert json.loads(decision.body)["type"].endswith(("/malformed-token", "/malformed-api-key"))

    asyncio.run(scenario())


def test_a_non_ascii_token_is_malformed_before_it_is_hashed() -> None:
    tokens = Harness(static=True).tokens
    assert tokens is not None
    with pytest.raises(MalformedToken):
        tokens.try_cached("a.b\u0430.c", "authorization")
    assert len(token_digest("a.b\u0430.c\ud800")) == 16  # defined for any text, lone surrogates too


def test_a_query_credential_is_read_from_any_path() -> None:
    source = CredentialSource(query_param="api_key")
    key = apikey.generate("live").text
    assert source.extract({}, f"//[x?api_key={key}").text == key  # urlsplit would raise "Invalid IPv6 URL"
    assert source.extract({}, f"/v1?api_key={key}#frag").text == key
    with pytest.raises(MalformedKey):
        source.extract({}, "//[x?api_key=")
