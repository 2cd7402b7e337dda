"""Stage 1 end to end: real Envoy (HTTP and gRPC ext_authz) → real Tollway processes → real Valkey."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.auth import apikey
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance"}


@dataclass
class Stack:
    protocol: str
    valkey: ValkeyServer
    tollway: TollwayServer
    envoy: EnvoyProcess
    client: httpx.Client

    def get(self, headers: dict[str, str] | None = None, path: str = "/v1/items/7") -> httpx.Response:
        return self.client.get(path, headers=headers or {})


def start_stack(
    protocol: str, valkey: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> Stack:
    tollway = tollway_factory()
    cluster, endpoint = (
        ("tollway_http", tollway.http_endpoint) if protocol == "http" else ("tollway_grpc", tollway.grpc_endpoint)
    )
    envoy = envoy_factory(protocol, endpoints={cluster: [endpoint]})
    return Stack(protocol, valkey, tollway, envoy, httpx.Client(base_url=envoy.base_url, timeout=5))


@pytest.fixture(params=["http", "grpc"])
def stack(
    request: pytest.FixtureRequest,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
) -> Iterator[Stack]:
    built = start_stack(request.param, valkey_fresh, tollway_factory, envoy_factory)
    yield built
    built.client.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body.keys() >= PROBLEM_MEMBERS
    assert body["status"] == status
    assert str(body["type"]).endswith("/" + slug)
    assert body["instance"], "instance carries the request id"
    return body


def test_valid_key_reaches_upstream_with_identity_headers(stack: Stack) -> None:
    key = create_key(stack.valkey.url, "acme")
    for headers in (bearer(key["api_key"]), {"x-api-key": key["api_key"]}):
        response = stack.get(headers)
        assert response.status_code == 200, response.text
        seen = response.json()["headers"]
        assert seen["x-tollway-customer-id"] == "acme"
        assert seen["x-tollway-key-id"] == key["key_id"]
        # The key itself is kept from the upstream.
        assert "authorization" not in seen
        assert "x-api-key" not in seen
        assert key["api_key"] not in response.text


def test_each_bad_credential_gets_401_with_a_problem(stack: Stack) -> None:
    url = stack.valkey.url
    good = create_key(url, "acme")["api_key"]
    revoked = create_key(url, "acme")
    assert run_cli(url, "keys", "revoke", revoked["key_id"]).code == 0
    expiring = create_key(url, "acme", "--expires", "1s")
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    cases = [
        ({}, "missing-credentials"),
        (bearer("not-a-key"), "malformed-api-key"),
        (bearer(bad_checksum), "malformed-api-key"),
        ({"x-api-key": good[:-3]}, "malformed-api-key"),
        (bearer(apikey.generate("live").text), "invalid-api-key"),
        (bearer(revoked["api_key"]), "revoked-api-key"),
    ]
    for headers, slug in cases:
        response = stack.get(headers)
        body = assert_problem(response, 401, slug)
        assert response.headers["www-authenticate"].startswith('Bearer realm="tollway"')
        for secret in (good, bad_checksum, revoked["api_key"]):
            assert secret not in json.dumps(body)
    time.sleep(1.05)
    assert_problem(stack.get(bearer(expiring["api_key"])), 401, "expired-api-key")
    assert stack.get(bearer(good)).status_code == 200


def test_spoofed_tollway_headers_never_reach_the_upstream(stack: Stack) -> None:
    key = create_key(stack.valkey.url, "acme")
    spoofed = {
        "x-api-key": key["api_key"],
        "x-tollway-customer-id": "mallory",
        "x-tollway-key-id": "key_forged",
        "x-tollway-plan": "enterprise",
        "X-Tollway-Anything": "1",
    }
    seen = stack.get(spoofed).json()["headers"]
    assert {name: value for name, value in seen.items() if name.startswith("x-tollway-")} == {
        "x-tollway-customer-id": "acme",
        "x-tollway-key-id": key["key_id"],
    }
    # Refused requests never reach the upstream at all, spoofed or not.
    refused = stack.get({"x-tollway-customer-id": "mallory"})
    assert refused.status_code == 401


def test_rotated_key_old_and_new_both_work_during_the_overlap(stack: Stack) -> None:
    old = create_key(stack.valkey.url, "acme")
    rotated = run_cli(stack.valkey.url, "keys", "rotate", old["key_id"], "--overlap", "24h", "--json")
    assert rotated.code == 0, rotated.stderr
    new = rotated.json()
    assert new["replaces"] == old["key_id"]
    assert stack.get(bearer(old["api_key"])).json()["headers"]["x-tollway-key-id"] == old["key_id"]
    assert stack.get(bearer(new["api_key"])).json()["headers"]["x-tollway-key-id"] == new["key_id"]


def tollway_answered_the_outage(stack: Stack) -> bool:
    """True when Tollway itself refused with 503 (inside Envoy's 200 ms check timeout), as opposed to
    Envoy giving up on a silent Tollway."""
    stats = stack.envoy.stats("ext_authz|tollway_http.upstream_rq")
    if stack.protocol == "http":  # Envoy's HTTP ext_authz turns any 5xx answer into status_on_error
        return stats.get("cluster.tollway_http.upstream_rq_503", 0) >= 1 and not stats.get(
            "cluster.tollway_http.upstream_rq_timeout", 0
        )
    return stats.get("http.ingress.ext_authz.denied", 0) >= 1 and not stats.get("http.ingress.ext_authz.error", 0)


def test_redis_outage_is_a_fast_503_and_recovers_without_restart(stack: Stack) -> None:
    key = create_key(stack.valkey.url, "acme")
    unseen = create_key(stack.valkey.url, "acme")  # never presented before the outage
    assert stack.get(bearer(key["api_key"])).status_code == 200
    stack.valkey.stop()
    try:
        time.sleep(1.1)  # let the cached record expire
        # A key read before the outage is served from its last-known record (TOLLWAY_STALE_MAX_S) ...
        assert stack.get(bearer(key["api_key"])).status_code == 200
        # ... a key never read has none: fail closed, fast.
        started = time.monotonic()
        response = stack.get(bearer(unseen["api_key"]))
        elapsed = time.monotonic() - started
        assert_problem(response, 503, "authorization-unavailable")
        assert response.headers["retry-after"] == "1"
        assert tollway_answered_the_outage(stack), stack.envoy.stats("ext_authz|tollway")
        print(f"503 with Redis stopped after {elapsed * 1000:.1f} ms ({stack.protocol})")
    finally:
        stack.valkey.start()
    # The restarted Valkey is empty (no persistence in tests): a key created now must work at once.
    fresh = create_key(stack.valkey.url, "acme")
    deadline = time.monotonic() + 5
    while stack.get(bearer(fresh["api_key"])).status_code != 200:
        assert time.monotonic() < deadline, "no recovery after Redis came back"
        time.sleep(0.05)


def test_hung_redis_is_a_503_within_the_timeout(stack: Stack) -> None:
    key = create_key(stack.valkey.url, "acme")
    stack.valkey.pause()
    try:
        response = stack.get(bearer(key["api_key"]))  # not cached by this Tollway yet
        assert_problem(response, 503, "authorization-unavailable")
        assert tollway_answered_the_outage(stack), stack.envoy.stats("ext_authz|tollway")
    finally:
        stack.valkey.resume()
    assert stack.get(bearer(key["api_key"])).status_code == 200


def test_tollway_down_is_a_503_problem_not_an_admit(stack: Stack) -> None:
    key = create_key(stack.valkey.url, "acme")
    stack.tollway.stop()
    response = stack.get(bearer(key["api_key"]))
    assert_problem(response, 503, "authorization-unavailable")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_credential_header_reaches_the_upstream_whichever_won(
    protocol: str, valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    """Issue 13 item 3: a second credential header (another key, another scheme) is stripped as well as the
    one that carried the admitted key."""
    stack = start_stack(protocol, valkey_fresh, tollway_factory, envoy_factory)
    winner, other = create_key(valkey_fresh.url, "acme"), create_key(valkey_fresh.url, "mallory")
    for headers in (
        {"authorization": f"Bearer {winner['api_key']}", "x-api-key": other["api_key"]},
        {"authorization": f"Basic {other['api_key']}", "x-api-key": winner["api_key"]},
        {"authorization": f"Bearer {winner['api_key']}", "x-api-key": "anything at all"},
    ):
        response = stack.get(headers)
        assert response.status_code == 200, response.text
        seen = response.json()["headers"]
        assert seen["x-tollway-customer-id"] == "acme"
        assert "authorization" not in seen
        assert "x-api-key" not in seen
        for key in (winner, other):
            assert key["api_key"] not in response.text
    stack.client.close()


def test_the_query_credential_is_stripped_over_grpc(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    """With ``TOLLWAY_KEY_QUERY_PARAM``, the key in the query is removed on admit (gRPC ext_authz; Envoy's
    HTTP ext_authz has no way to rewrite the query, see docs/authentication.md), with the headers."""
    tollway = tollway_factory({"TOLLWAY_KEY_QUERY_PARAM": "api_key"})
    envoy = envoy_factory("grpc", endpoints={"tollway_grpc": [tollway.grpc_endpoint]})
    key, other = create_key(valkey_fresh.url, "acme"), create_key(valkey_fresh.url, "mallory")
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        path = f"/v1/items/7?page=2&api_key={key['api_key']}"
        response = client.get(path, headers={"authorization": f"Basic {other['api_key']}"})  # not ours: query wins
        assert response.status_code == 200, response.text
        echoed = response.json()
        assert echoed["headers"]["x-tollway-customer-id"] == "acme"
        assert echoed["path"] == "/v1/items/7?page=2"
        assert "authorization" not in echoed["headers"]
        assert key["api_key"] not in response.text
        assert other["api_key"] not in response.text
