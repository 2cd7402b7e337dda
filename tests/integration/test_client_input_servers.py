"""Any header names and values Envoy would pass, straight at both real ext_authz servers (the HTTP one over
a socket, the gRPC one with CheckRequests), with token issuers, a plan catalog, metering and a query-string
credential configured: every answer is a 2xx or 4xx, and the servers still admit a valid caller after
(issue 13 item 1: no client input may produce a 5xx).

Header values are what Envoy forwards: visible ASCII, obs-text (0x80-0xFF) and tab, up to its 60 KiB of
request headers; names are tokens. Over gRPC Envoy sends text (non-UTF-8 bytes sanitized) or, with
``encode_raw_headers``, the raw bytes in ``header_map``: both are generated.
"""

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.inprocess_tollway import InProcessTollway, inprocess_tollway
from tests.support.jwt_issuer import LocalIssuer, SigningKey, issuers_yaml
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "jwt" / "catalog.yaml"
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SIGNER = SigningKey.ec("k1")
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
ENVOY_MAX_HEADERS = 60 * 1024
TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
VALUE_BYTES = [*range(0x20, 0x7F), *range(0x80, 0x100), 0x09]
FRAMING = {"content-length", "transfer-encoding", "host"}  # Envoy frames its check requests itself

names = st.one_of(
    st.sampled_from(["authorization", "x-api-key", "x-request-id", "x-tollway-customer-id", "cookie"]),
    st.text(TCHAR, min_size=1, max_size=64),
).filter(lambda name: name.lower() not in FRAMING)
plain_values = st.lists(st.sampled_from(VALUE_BYTES), max_size=400).map(bytes)
big_values = st.builds(lambda b, n: bytes([b]) * n, st.sampled_from(VALUE_BYTES), st.integers(1, 50_000))
utf8_like = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=100).map(lambda t: t.encode())
values = st.one_of(
    plain_values,
    utf8_like,
    st.builds(lambda v: b"Bearer " + v, st.one_of(plain_values, utf8_like)),
    st.builds(lambda a, b: b"Bearer " + a + b"." + b + b".c", plain_values, utf8_like),
    big_values,
).map(lambda v: v.strip(b" \t"))  # a field value has no leading or trailing whitespace on the wire
header_lists = st.lists(st.tuples(names, values), max_size=12).filter(
    lambda hs: sum(len(n) + len(v) + 4 for n, v in hs) <= ENVOY_MAX_HEADERS - 512
)
path_chars = st.sampled_from([chr(c) for c in range(0x21, 0x7F)])
paths = st.one_of(
    st.sampled_from(
        ["/v1/items/7", "//[x?api_key=a", "/tollway/v1/usage", "/tollway/v1/usage/budgets", "/v1/status?api_key=%ff"]
    ),
    st.lists(path_chars, max_size=300).map(lambda cs: "/" + "".join(cs)),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])


@pytest.fixture
def servers(valkey_fresh: ValkeyServer, tmp_path: Path) -> Iterator[InProcessTollway]:
    issuers = tmp_path / "issuers.yaml"
    issuers.write_text(issuers_yaml(pem=SIGNER.public_pem()))
    with inprocess_tollway(
        valkey_fresh.url,
        CATALOG,
        clock=ManualClock(START),
        grpc=True,
        jwt_issuers=issuers,
        spool_dir=tmp_path / "spool",
        loader="off",
        key_query_param="api_key",
    ) as tollway:
        yield tollway


def http_status(port: int, method: str, path: str, headers: list[tuple[str, bytes]]) -> int:
    head = f"{method} {path} HTTP/1.1\r\nhost: tollway\r\n".encode()
    head += b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data[:200]!r}"
            data += chunk
        response_head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in response_head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length and method != "HEAD":
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(response_head.split(b" ", 2)[1])


def grpc_verdict(check: grpc.UnaryUnaryMultiCallable, message: external_auth_pb2.CheckRequest) -> int:
    """The HTTP status the verdict carries (200: admitted); the call itself must end OK."""
    response: external_auth_pb2.CheckResponse = check(message, timeout=5)
    if response.WhichOneof("http_response") == "denied_response":
        return int(response.denied_response.status.code)
    assert response.status.code == 0
    return 200


def check_request(
    method: str, path: str, headers: list[tuple[str, bytes]], raw: bool
) -> external_auth_pb2.CheckRequest:
    message = external_auth_pb2.CheckRequest()
    http = message.attributes.request.http
    http.method, http.path, http.id = method, path, "grpc-1"
    for name, value in headers:
        if raw:  # encode_raw_headers: the bytes as they came
            entry = http.header_map.headers.add()
            entry.key, entry.raw_value = name.lower(), value
        else:  # Envoy's default: UTF-8 text, other bytes replaced ('!'); repeated names joined with ','
            text = value.decode("utf-8", "replace").replace("\ufffd", "!")
            key = name.lower()
            http.headers[key] = f"{http.headers[key]},{text}" if key in http.headers else text
    return message


def test_any_headers_get_a_2xx_or_4xx_from_both_servers(servers: InProcessTollway) -> None:
    token = LocalIssuer([SIGNER], now=START.timestamp()).token("acme")
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        raw_check = channel.unary_unary(CHECK_METHOD, response_deserializer=external_auth_pb2.CheckResponse.FromString)

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )
        @given(method=methods, path=paths, headers=header_lists, raw=st.booleans())
        def each(method: str, path: str, headers: list[tuple[str, bytes]], raw: bool) -> None:
            status = http_status(servers.http_port, method, path, headers)
            assert 200 <= status < 500, status
            status = grpc_verdict(check, check_request(method, path, headers, raw))
            assert 200 <= status < 500, status

        each()

        # Bytes that are no CheckRequest at all: a 400 problem, not a gRPC error.
        assert grpc_verdict(raw_check, b"\xff\xff\xff") == 400  # type: ignore[arg-type]

        # Both servers are alive and still admit a valid caller.
        usage = "/tollway/v1/usage"
        assert http_status(servers.http_port, "GET", usage, [("authorization", f"Bearer {token}".encode())]) == 200
        message = check_request("GET", usage, [("authorization", f"Bearer {token}".encode())], raw=False)
        assert grpc_verdict(check, message) == 200


@pytest.mark.parametrize("value", [b"Bearer a.b\xd0\xb0.c", b"Bearer a.b\xff.c", b"Bearer \xd0\xb0", b"x.\xd0\xb0.y"])
def test_a_non_ascii_bearer_token_is_a_401_from_both_servers(servers: InProcessTollway, value: bytes) -> None:
    assert http_status(servers.http_port, "GET", "/v1/items/7", [("authorization", value)]) == 401
    with grpc.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        for raw in (False, True):
            assert grpc_verdict(check, check_request("GET", "/v1/items/7", [("authorization", value)], raw)) == 401
