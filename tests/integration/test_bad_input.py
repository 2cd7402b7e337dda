"""Hostile and broken input, through Envoy and straight at Tollway's HTTP server: always a clean 4xx,
never a crash, and the server still answers a valid request afterwards."""

import asyncio
import random
import re
import socket
import string

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key
from tollway.auth import apikey
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def raw_exchange(port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"connection: close" not in b"".join(chunks).lower():
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def tollway(valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory) -> TollwayServer:
    return tollway_factory()


def assert_still_serving(server: TollwayServer, url: str) -> None:
    key = create_key(url, "acme")["api_key"]
    response = httpx.get(f"http://127.0.0.1:{server.http_port}/v1/x", headers={"x-api-key": key}, timeout=2)
    assert response.status_code == 200
    assert server.process.is_running()


def test_direct_malformed_http_gets_400_problem(tollway: TollwayServer, valkey_fresh: ValkeyServer) -> None:
    for payload in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x00\xff\xfe garbage \r\n\r\n",
    ):
        response = raw_exchange(tollway.http_port, payload)
        assert status_of(response) == 400, response[:200]
        assert b"application/problem+json" in response
    assert_still_serving(tollway, valkey_fresh.url)


def test_direct_oversized_headers_get_431(tollway: TollwayServer, valkey_fresh: ValkeyServer) -> None:
    big = b"a" * (64 * 1024)
    response = raw_exchange(tollway.http_port, b"GET / HTTP/1.1\r\nHost: x\r\nx-api-key: " + big + b"\r\n\r\n")
    assert status_of(response) == 431
    assert b'"title":"Request headers too large"' in response
    assert big[:100] not in response
    assert_still_serving(tollway, valkey_fresh.url)


def test_direct_non_utf8_and_empty_keys_get_401(tollway: TollwayServer, valkey_fresh: ValkeyServer) -> None:
    for header in (b"x-api-key: tw_live_\xff\xfe\x80abc", b"authorization: Bearer \xc3\x28", b"x-api-key: "):
        response = raw_exchange(tollway.http_port, b"GET / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
        assert status_of(response) in (400, 401), response[:300]
        assert b"problem+json" in response
    assert_still_serving(tollway, valkey_fresh.url)


def test_pipelined_requests_are_answered_in_order(tollway: TollwayServer, valkey_fresh: ValkeyServer) -> None:
    key = create_key(valkey_fresh.url, "acme")["api_key"].encode()
    good = b"GET /a HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n\r\n"
    bad = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", tollway.http_port), timeout=3) as sock:
        sock.sendall(good + bad + good + bad)
        data = b""
        while data.count(b"HTTP/1.1 ") < 4:
            data += sock.recv(65536)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses == [200, 401, 200, 401]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_through_envoy(
    protocol: str, valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    server = tollway_factory()
    cluster, endpoint = (
        ("tollway_http", server.http_endpoint) if protocol == "http" else ("tollway_grpc", server.grpc_endpoint)
    )
    envoy = envoy_factory(protocol, endpoints={cluster: [endpoint]})
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        big = client.get("/", headers={"x-api-key": "a" * (64 * 1024)})
        assert 400 <= big.status_code < 500
        for value in (b"tw_live_\xff\xfe\x80", b"\xc3\x28", b""):
            response = client.get("/", headers={"x-api-key": value})
            assert response.status_code == 401, (value, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        empty_bearer = client.get("/", headers={"authorization": "Bearer"})
        assert empty_bearer.status_code == 401
        key = create_key(valkey_fresh.url, "acme")["api_key"]
        assert client.get("/", headers={"x-api-key": key}).status_code == 200
    assert server.process.is_running()


def random_key(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:  # well-formed with a valid checksum, but unknown: reaches Redis
        return apikey.generate(rng.choice(("live", "test")), random_bytes=rng.randbytes).text
    if kind == 1:  # right shape, wrong checksum
        return "tw_live_" + "".join(rng.choices(string.ascii_letters + string.digits, k=33))
    if kind == 2:
        return "".join(rng.choices(string.printable.strip(), k=rng.randrange(1, 200)))
    return "tw_test_" + "".join(rng.choices(string.ascii_letters, k=rng.randrange(0, 60)))


@pytest.mark.parametrize(("protocol", "count"), [("http", 10_000), ("grpc", 2_000)])
def test_many_random_keys_each_get_a_clean_4xx(
    protocol: str,
    count: int,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
) -> None:
    server = tollway_factory()
    cluster, endpoint = (
        ("tollway_http", server.http_endpoint) if protocol == "http" else ("tollway_grpc", server.grpc_endpoint)
    )
    envoy = envoy_factory(protocol, endpoints={cluster: [endpoint]})
    rng = random.Random(20261125)
    keys = [random_key(rng) for _ in range(count)]

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(base_url=envoy.base_url, timeout=10, limits=limits) as client:
            queue: asyncio.Queue[str] = asyncio.Queue()
            for key in keys:
                queue.put_nowait(key)
            statuses: list[int] = []

            async def worker() -> None:
                while not queue.empty():
                    key = queue.get_nowait()
                    response = await client.get("/v1/items", headers={"x-api-key": key})
                    statuses.append(response.status_code)
                    assert response.headers.get("content-type") == "application/problem+json"

            await asyncio.gather(*(worker() for _ in range(16)))
            return statuses

    statuses = asyncio.run(fire())
    assert len(statuses) == count
    assert set(statuses) == {401}
    valid = create_key(valkey_fresh.url, "acme")["api_key"]
    assert httpx.get(f"{envoy.base_url}/v1/items", headers={"x-api-key": valid}).status_code == 200
    assert server.process.is_running()
