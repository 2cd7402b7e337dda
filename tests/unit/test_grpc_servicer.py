"""The gRPC ext_authz servicer's error paths under ``grpc_testing``: every check ends with status OK and a
verdict (a problem for Envoy to return), never a gRPC error that Envoy would turn into its
``status_on_error`` 503 — whatever the request, and even when deciding it fails (issue 13 item 1)."""

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc_testing
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from tests.unit.auth_jwt.test_token_decisions import Harness
from tollway.extproc.check import CheckRequest, Decision
from tollway.extproc.grpc_server import AuthorizationService, parse_check_request
from tollway.extproc.problems import Refusals

SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
CHECK = SERVICE.methods_by_name["Check"]
SECRET = "tw_live_s3cr3tS3CR3Ts3cr3tS3CR3Ts3cr3tS3C"


class LoopThread:
    """An event loop in a thread: the servicer is async, grpc_testing calls it from its own threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class Servicer:
    """What grpc_testing looks up by method name: ``Check``, running the real servicer's coroutine."""

    def __init__(self, service: AuthorizationService, loop: LoopThread) -> None:
        self._service = service
        self._loop = loop

    def Check(self, request: external_auth_pb2.CheckRequest | None, context: Any) -> bytes:
        result: bytes = self._loop.run(self._service.check(request, context))
        return result


class Failing:
    """A decision core whose every decision raises, with a secret in the exception's message."""

    refusals = Refusals()

    def __init__(self, on: str) -> None:
        self._on = on

    def decide_now(self, request: CheckRequest) -> Decision | None:
        if self._on == "now":
            raise RuntimeError(f"boom with {SECRET}")
        return None

    async def decide(self, request: CheckRequest) -> Decision:
        await asyncio.sleep(0)
        raise KeyError(SECRET)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    yield running
    running.close()


def invoke(service: AuthorizationService, loop: LoopThread, request: Any) -> external_auth_pb2.CheckResponse:
    server = grpc_testing.server_from_dictionary({SERVICE: Servicer(service, loop)}, grpc_testing.strict_real_time())
    rpc = server.invoke_unary_unary(CHECK, (), request, None)
    response, _, code, details = rpc.termination()
    assert code is grpc.StatusCode.OK, (code, details)
    return external_auth_pb2.CheckResponse.FromString(response)


def problem(response: external_auth_pb2.CheckResponse, status: int) -> dict[str, Any]:
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == status
    body: dict[str, Any] = json.loads(response.denied_response.body)
    assert body["status"] == status
    return body


def check_request(headers: dict[str, str], path: str = "/v1/items/7") -> external_auth_pb2.CheckRequest:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.id = "GET", path, "req-1"
    http.headers.update(headers)
    return message


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer a.b\u0430.c"},
        {"authorization": "Bearer \u00ff.\u00fe.\u00fd"},
        {"authorization": "Bearer " + "\u0430" * 9000},
        {"x-api-key": "tw_live_\u0430\u0430"},
        {"authorization": "Basic \u0430", "x-api-key": ""},
    ],
)
def test_a_non_ascii_or_broken_credential_is_a_401_problem(loop: LoopThread, headers: dict[str, str]) -> None:
    service = AuthorizationService(Harness(static=True).core)
    body = problem(invoke(service, loop, check_request(headers)), 401)
    assert "\u0430" not in body["detail"]


def test_raw_header_bytes_that_are_not_utf8_are_a_401_problem(loop: LoopThread) -> None:
    message = check_request({})
    entry = message.attributes.request.http.header_map.headers.add()
    entry.key, entry.raw_value = "authorization", b"Bearer a.b\xd0.c\xff"  # Envoy's encode_raw_headers form
    problem(invoke(AuthorizationService(Harness(static=True).core), loop, message), 401)


def test_an_undecodable_check_request_is_a_400_problem(loop: LoopThread) -> None:
    good = check_request({"authorization": "Bearer xx"}).SerializeToString()
    for data in (b"\xff\xff\xff", good.replace(b"xx", b"\xff\xfe"), b"\x0a" * 5):
        assert parse_check_request(data) is None
    assert parse_check_request(good) is not None
    body = problem(invoke(AuthorizationService(Harness(static=True).core), loop, None), 400)
    assert body["type"].endswith("/malformed-request")


@pytest.mark.parametrize("on", ["now", "later"])
def test_a_decision_that_raises_is_a_500_problem_logged_once_without_its_message(
    loop: LoopThread, on: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = AuthorizationService(Failing(on))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            body = problem(invoke(service, loop, check_request({"x-request-id": "r-\u0430\n"})), 500)
            assert body["type"].endswith("/internal-error")
    records = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(records) == 3  # one record per failed check
    assert "Traceback" in records[0].getMessage()
    assert all("Traceback" not in r.getMessage() for r in records[1:])  # the stack once per site
    assert SECRET not in caplog.text
    assert "\n" not in records[1].getMessage()  # a client-chosen request id cannot forge log lines
