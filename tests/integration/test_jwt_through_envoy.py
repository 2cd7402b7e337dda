"""OAuth 2.0 bearer tokens end to end: real Envoy (HTTP and gRPC ext_authz) → real Tollway processes → real
Valkey, with a local JWKS HTTP server (a thread in this test process, on a free loopback port, counting its
hits) publishing keys made here with ``cryptography``.

Covered: a valid token reaches the upstream as its customer, with the plan's limits shared with the
customer's API keys and every decision metered; a key rotation at the issuer works without restarting
Tollway; every classic attack is a 401 problem and the server stays up; unknown kids do not hammer the
JWKS endpoint; a JWKS outage keeps known keys working and, with no key ever fetched, answers 503; a
missing scope is a 403 naming it.
"""

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.chdb_engine import ChdbDatabase
from tests.support.jwt_issuer import JwksServer, LocalIssuer, SigningKey, issuers_yaml, write_issuers
from tests.support.metering import SpoolLoader
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "jwt" / "catalog.yaml"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance"}
REFETCH_INTERVAL_S = 1.0
ITEM = "/v1/items/7"


def gateway_config(cfg: envoy_config.EnvoyConfig) -> envoy_config.EnvoyConfig:
    """The product config with two changes for these tests: Envoy returns its request id (so a problem's
    ``instance`` can be compared with it), and it accepts request headers up to 96 KiB (its default is 60),
    as a gateway in front of clients with big tokens would: a 64 KB token then reaches Tollway, which must
    refuse it itself."""
    result: envoy_config.EnvoyConfig = copy.deepcopy(cfg)
    for listener in result["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == envoy_config.HCM_FILTER:
                    network_filter["typed_config"]["always_set_request_id_in_response"] = True
                    network_filter["typed_config"]["max_request_headers_kb"] = 96
    return result


@dataclass
class Stack:
    protocol: str
    valkey: ValkeyServer
    idp: LocalIssuer
    jwks: JwksServer
    tollway: TollwayServer
    envoy: EnvoyProcess
    client: httpx.Client
    usage: SpoolLoader

    def call(self, token: str, path: str = ITEM, method: str = "GET") -> httpx.Response:
        return self.client.request(method, path, headers={"authorization": f"Bearer {token}"})

    def subscribe(self, customer: str, plan: str = "standard") -> None:
        done = run_cli(self.valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json")
        assert done.code == 0, done.stderr


def start_tollway(
    tollway_factory: TollwayFactory, tmp_path: Path, jwks_url: str, spool: Path, name: str = "issuers.yaml"
) -> TollwayServer:
    issuers = write_issuers(
        tmp_path,
        issuers_yaml(jwks_url=jwks_url, jwks_extra=f"refetch_interval_s: {REFETCH_INTERVAL_S}"),
        name,
    )
    env = {
        "TOLLWAY_CATALOG": str(CATALOG),
        "TOLLWAY_JWT_ISSUERS": str(issuers),
        "TOLLWAY_SPOOL_DIR": str(spool),
        "TOLLWAY_LOADER": "off",
        "TOLLWAY_MAX_HEADER_BYTES": str(128 * 1024),
    }
    return tollway_factory(env)


def start_envoy(envoy_factory: EnvoyFactory, protocol: str, tollway: TollwayServer) -> EnvoyProcess:
    cluster, endpoint = (
        ("tollway_http", tollway.http_endpoint) if protocol == "http" else ("tollway_grpc", tollway.grpc_endpoint)
    )
    endpoints = {cluster: [endpoint], "tollway_metering": [tollway.metering_endpoint]}
    return envoy_factory(protocol, endpoints=endpoints, transform=gateway_config)


@pytest.fixture(params=["http", "grpc"])
def stack(
    request: pytest.FixtureRequest,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    chdb_db: ChdbDatabase,
    tmp_path: Path,
) -> Iterator[Stack]:
    idp = LocalIssuer([SigningKey.rsa("k1")])
    with JwksServer(idp.jwks()) as jwks:
        spool = tmp_path / "spool"
        tollway = start_tollway(tollway_factory, tmp_path, jwks.url, spool)
        envoy = start_envoy(envoy_factory, request.param, tollway)
        usage = SpoolLoader(chdb_db, spool)
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
            yield Stack(request.param, valkey_fresh, idp, jwks, tollway, envoy, client, usage)
        usage.close()


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    assert str(body["type"]).endswith("/" + slug), body
    assert body["instance"] == response.headers["x-request-id"]
    return body


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_a_valid_token_reaches_the_upstream_as_its_customer_with_limits_and_metering(stack: Stack) -> None:
    stack.subscribe("tiny-co", "tiny")  # 3 requests an hour, whatever the credential
    token = stack.idp.token("tiny-co", scope="items:read")
    first = stack.call(token)
    assert first.status_code == 200, first.text
    seen = first.json()["headers"]
    assert seen["x-tollway-customer-id"] == "tiny-co"
    assert seen["x-tollway-key-id"] == "jwt:test-idp:tiny-co"
    assert seen["x-tollway-plan"] == "tiny"
    assert seen["x-tollway-feature"] == "items-read"
    assert "authorization" not in seen  # the token is kept from the upstream
    assert token not in first.text
    assert first.headers["ratelimit-policy"] == '"hourly";q=3;w=3600'
    key = create_key(stack.valkey.url, "tiny-co")
    by_key = stack.client.get(ITEM, headers={"x-api-key": key["api_key"]})
    assert by_key.status_code == 200  # the same customer by API key: the same counters
    assert stack.call(token).status_code == 200
    refused = stack.call(token)
    assert refused.status_code == 429, refused.text
    assert refused.json()["violated-policies"] == ["hourly"]

    ids = [first, by_key, refused]
    rows = stack.usage.wait_for(lambda r: all(x.headers["x-request-id"] in r for x in ids))
    token_row, key_row, refused_row = (rows[x.headers["x-request-id"]] for x in ids)
    assert (token_row["customer_id"], token_row["subject"], token_row["outcome"]) == (
        "tiny-co",
        "jwt:test-idp:tiny-co",
        "admitted",
    )
    assert (key_row["customer_id"], key_row["subject"]) == ("tiny-co", key["key_id"])
    assert (refused_row["subject"], refused_row["reason"], refused_row["status"]) == (
        "jwt:test-idp:tiny-co",
        "quota-exceeded",
        429,
    )
    assert stack.jwks.hit_count() == 1  # fetched once at start; the token was then verified once


def test_every_attack_gets_a_401_problem_and_the_server_stays_up(stack: Stack) -> None:
    stack.subscribe("acme")
    idp = stack.idp
    rsa_key = idp.keys[0]
    attacker = SigningKey.rsa("k1")  # the issuer's kid, the attacker's key
    with JwksServer(LocalIssuer([attacker]).jwks()) as elsewhere:
        cases = {
            "alg none": (jwt.encode(idp.claims(), None, algorithm="none"), "token-algorithm-not-allowed"),
            "HS256 signed with the RSA public key": (
                hs256(rsa_key.public_pem().encode(), idp.claims()),
                "token-algorithm-not-allowed",
            ),
            "expired": (idp.token(lifetime_s=-120), "expired-token"),
            "nbf in the future": (idp.token(nbf=int(time.time()) + 3600), "token-not-yet-valid"),
            "wrong iss": (idp.token(iss="https://evil.example/"), "untrusted-token-issuer"),
            "wrong aud": (idp.token(aud="https://someone-else.example"), "invalid-token-audience"),
            "unknown kid": (idp.token(key=SigningKey.ec("nobody-knows")), "unknown-token-key"),
            "missing customer claim": (idp.token(sub=None), "missing-customer-claim"),
            "bad base64": ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIi*.c2ln", "malformed-token"),
            "64 KB token": ("eyJ" + "A" * (64 * 1024) + ".e30.c2ln", "token-too-large"),
            "jku pointing elsewhere": (
                idp.token(key=attacker, headers={"jku": elsewhere.url, "x5u": elsewhere.url}),
                "invalid-token-signature",
            ),
        }
        for name, (token, slug) in cases.items():
            response = stack.call(token)
            body = assert_problem(response, 401, slug)
            for part in token.split("."):  # no part of the token comes back
                assert len(part) < 8 or part[-30:] not in response.text, name
            assert response.headers["www-authenticate"].startswith('Bearer realm="tollway", error="invalid_token"')
            assert body["detail"], name
        assert elsewhere.hit_count() == 0  # a jku/x5u header is never fetched

    # Repeated unknown kids: at most one refetch per interval, not one per token.
    hits_before, started = stack.jwks.hit_count(), time.monotonic()
    for n in range(40):
        assert_problem(stack.call(idp.token(key=SigningKey.ec(f"kid-{n}"))), 401, "unknown-token-key")
    elapsed = time.monotonic() - started
    assert stack.jwks.hit_count() - hits_before <= 1 + elapsed / REFETCH_INTERVAL_S

    # Still up, still right.
    assert stack.tollway.process.is_running()
    assert stack.call(idp.token("acme", scope="items:read")).status_code == 200


def hs256(secret: bytes, claims: dict[str, Any]) -> str:
    """A token signed HS256 with ``secret`` (here: the issuer's public key, as in the confusion attack)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode()) + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()


def test_a_missing_scope_is_a_403_naming_it(stack: Stack) -> None:
    stack.subscribe("acme")
    reader = stack.idp.token("acme", scope="items:read")
    assert stack.call(reader).status_code == 200
    response = stack.call(reader, ITEM, "PUT")
    body = assert_problem(response, 403, "insufficient-scope")
    assert "'items:write'" in body["detail"]
    assert body["required-scopes"] == ["items:write"]
    assert 'error="insufficient_scope", scope="items:write"' in response.headers["www-authenticate"]
    writer = stack.idp.token("acme", scope="items:read items:write")
    assert stack.call(writer, ITEM, "PUT").status_code == 200
    key = create_key(stack.valkey.url, "acme")["api_key"]  # scopes do not apply to API keys
    assert stack.client.put(ITEM, headers={"x-api-key": key}).status_code == 200


@pytest.mark.parametrize("stack", ["http"], indirect=True)
def test_a_key_rotation_at_the_issuer_needs_no_restart(stack: Stack) -> None:
    stack.subscribe("acme")
    old = stack.idp.keys[0]
    assert stack.call(stack.idp.token("acme", scope="items:read")).status_code == 200
    new = SigningKey.ec("k2")
    stack.jwks.publish(LocalIssuer([old, new]).jwks())  # the issuer rotates in a new key
    rotated = LocalIssuer([new])
    token = rotated.token("acme", scope="items:read")
    # The first token with the new kid may arrive within the refetch interval of the start-up fetch.
    assert eventually(lambda: stack.call(token).status_code == 200)
    stack.jwks.publish(LocalIssuer([new]).jwks())  # and retires the old one: new tokens keep working
    assert stack.call(rotated.token("acme", scope="items:read")).status_code == 200
    # /healthz shows each issuer's key ids (never key material) and its fetches.
    health = httpx.get(f"http://127.0.0.1:{stack.tollway.admin_port}/healthz", timeout=5).json()
    [issuer] = health["token_issuers"].values()
    assert "k2" in issuer["kids"]
    assert issuer["fetches"] >= 2
    shown = json.dumps(health)
    assert "BEGIN" not in shown, "no PEM"
    assert '"d"' not in shown, "no private JWK member"


@pytest.mark.parametrize("stack", ["http"], indirect=True)
def test_jwks_down_known_keys_keep_working_and_no_key_ever_fetched_is_503(
    stack: Stack, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    stack.subscribe("acme")
    seen = stack.idp.token("acme", scope="items:read")
    assert stack.call(seen).status_code == 200
    stack.jwks.stop()  # the issuer's JWKS endpoint goes away
    assert stack.call(seen).status_code == 200  # a verified token, from the cache
    fresh = stack.idp.token("acme", scope="items:read", jti="fresh")
    assert stack.call(fresh).status_code == 200  # a new token, with the key fetched before

    # A Tollway that never fetched the key set: 503 (the outage policy), API keys unaffected.
    second = start_tollway(tollway_factory, tmp_path, stack.jwks.url, tmp_path / "spool-2", "issuers-2.yaml")
    envoy = start_envoy(envoy_factory, "http", second)
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        response = client.get(ITEM, headers={"authorization": f"Bearer {fresh}"})
        assert_problem(response, 503, "authorization-unavailable")
        assert response.headers["retry-after"] == "1"
        # Tollway itself answered 503 in time (Envoy's HTTP ext_authz replaces the body of any 5xx answer
        # with its local reply), rather than Envoy giving up on a silent Tollway.
        stats = envoy.stats("tollway_http.upstream_rq")
        assert stats.get("cluster.tollway_http.upstream_rq_503", 0) >= 1
        assert not stats.get("cluster.tollway_http.upstream_rq_timeout", 0)
        key = create_key(stack.valkey.url, "acme")["api_key"]
        assert client.get(ITEM, headers={"x-api-key": key}).status_code == 200
        stack.jwks.start()  # back on the same port: picked up without a restart
        assert eventually(lambda: client.get(ITEM, headers={"authorization": f"Bearer {fresh}"}).status_code == 200)
    assert second.process.is_running()
