"""The edge: verdicts rendered for Envoy over HTTP and gRPC, and the decision core's mapping."""

import asyncio
import json

from envoy.service.auth.v3 import external_auth_pb2

from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.extproc.check import Allow, CheckRequest, Deny
from tollway.extproc.decision import DecisionCore
from tollway.extproc.grpc_server import to_check_request, to_check_response
from tollway.extproc.http_server import render_response
from tollway.extproc.problems import Refusals

from .fakes import MemoryKeyStore

DIGESTER = KeyDigester(b"e" * 32)


def make_core(store: MemoryKeyStore) -> tuple[DecisionCore, Keyring]:
    clock = ManualClock()
    auth = Authenticator(store, DIGESTER, KeyCache(clock.monotonic), clock)
    return DecisionCore(auth, Refusals()), Keyring(store, DIGESTER, clock)


def test_admitted_request_sets_identity_and_strips_spoofed_headers() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        core, keys = make_core(store)
        issued = await keys.create("acme")
        request = CheckRequest(
            "GET",
            "/v1/x",
            {
                "x-api-key": issued.secret,
                "x-tollway-customer-id": "someone-else",
                "x-tollway-plan": "enterprise",
                "x-request-id": "r-1",
            },
        )
        assert core.decide_now(request) is None  # not cached yet
        decision = await core.decide(request)
        assert isinstance(decision, Allow)
        assert dict(decision.upstream_headers) == {
            "x-tollway-customer-id": "acme",
            "x-tollway-key-id": issued.record.key_id,
        }
        assert decision.remove_headers == ("x-tollway-plan", "authorization", "x-api-key")
        assert core.decide_now(request) == decision

    asyncio.run(scenario())


def test_refusal_is_a_problem_document_with_the_request_id_and_no_key() -> None:
    core, _ = make_core(MemoryKeyStore())
    secret = "tw_live_" + "A" * 33
    decision = core.decide_now(CheckRequest("GET", "/", {"authorization": f"Bearer {secret}"}, "r-9"))
    assert isinstance(decision, Deny)
    assert decision.status == 401
    headers = dict(decision.headers)
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"].startswith("Bearer ")
    body = json.loads(decision.body)
    assert body == {
        "type": "https://tollway.dev/problems/malformed-api-key",
        "title": "Malformed API key",
        "status": 401,
        "detail": body["detail"],
        "instance": "r-9",
    }
    assert secret not in decision.body.decode()


def test_store_outage_is_a_503_problem() -> None:
    async def scenario() -> None:
        store = MemoryKeyStore()
        core, keys = make_core(store)
        issued = await keys.create("acme")
        store.down = True
        decision = await core.decide(CheckRequest("GET", "/", {"x-api-key": issued.secret}))
        assert isinstance(decision, Deny)
        assert decision.status == 503
        assert dict(decision.headers)["retry-after"] == "1"
        assert json.loads(decision.body)["type"].endswith("/authorization-unavailable")

    asyncio.run(scenario())


def test_http_rendering() -> None:
    allow = Allow((("x-tollway-customer-id", "acme"),), remove_headers=("x-tollway-plan", "x-tollway-x"))
    text = render_response(allow, keep_alive=True, head=False).decode()
    assert text.startswith("HTTP/1.1 200 OK\r\n")
    assert "x-tollway-customer-id: acme\r\n" in text
    assert "x-envoy-auth-headers-to-remove: x-tollway-plan,x-tollway-x\r\n" in text
    assert text.endswith("content-length: 0\r\n\r\n")
    deny = Deny(401, b'{"a":1}', (("content-type", "application/problem+json"),))
    full = render_response(deny, keep_alive=False, head=False)
    assert full.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"connection: close\r\n" in full
    assert full.endswith(b'\r\n\r\n{"a":1}')
    head = render_response(deny, keep_alive=True, head=True)
    assert head.endswith(b"content-length: 7\r\n\r\n")


def test_header_values_cannot_inject_lines() -> None:
    allow = Allow((("x-tollway-customer-id", "a\r\nx-evil: 1"),))
    assert b"\r\nx-evil" not in render_response(allow, True, False)


def test_grpc_conversion_roundtrip() -> None:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method = "POST"
    http.path = "/v1/items"
    http.id = "req-7"
    http.headers["x-api-key"] = "tw_live_x"
    check = to_check_request(message)
    assert check.method == "POST"
    assert check.request_id == "req-7"
    assert check.headers["x-api-key"] == "tw_live_x"

    ok = to_check_response(Allow((("x-tollway-customer-id", "acme"),), remove_headers=("x-tollway-plan",)))
    assert ok.status.code == 0
    assert ok.ok_response.headers[0].header.key == "x-tollway-customer-id"
    assert list(ok.ok_response.headers_to_remove) == ["x-tollway-plan"]

    denied = to_check_response(Deny(401, b'{"title":"x"}', (("www-authenticate", "Bearer"),)))
    assert denied.status.code == 16  # UNAUTHENTICATED
    assert denied.denied_response.status.code == 401
    assert denied.denied_response.body == '{"title":"x"}'


def test_serialized_verdicts_parse_back() -> None:
    from tollway.extproc.grpc_server import serialize_verdict

    allow = Allow((("x-tollway-customer-id", "acme"),), remove_headers=("x-api-key",))
    first = serialize_verdict(allow)
    assert serialize_verdict(Allow((("x-tollway-customer-id", "acme"),), remove_headers=("x-api-key",))) is first
    assert external_auth_pb2.CheckResponse.FromString(first) == to_check_response(allow)
    deny = Deny(503, b'{"status":503}', (("retry-after", "1"),))
    assert external_auth_pb2.CheckResponse.FromString(serialize_verdict(deny)) == to_check_response(deny)
