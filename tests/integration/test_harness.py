"""The local-stack harness: processes, Valkey, chdb, the demo upstream and Envoy."""

import asyncio
import http.client
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import EnvoyFactory
from tests.support.chdb_engine import ChdbDatabase
from tollway.harness.demo_upstream import DemoUpstream
from tollway.harness.errors import ProcessExitedError, ReadinessTimeoutError
from tollway.harness.ports import free_ports
from tollway.harness.processes import ManagedProcess
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def _ping_and_get(url: str, key: str) -> tuple[bool, Any]:
    client = aioredis.from_url(url, socket_timeout=1)
    try:
        return bool(await client.ping()), await client.get(key)
    finally:
        await client.aclose()


async def _set(url: str, key: str, value: str) -> None:
    client = aioredis.from_url(url, socket_timeout=1)
    try:
        await client.set(key, value)
    finally:
        await client.aclose()


# --- ports and processes --------------------------------------------------------------------------


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not set(ports) & set(free_ports(20))


def test_process_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('boom: bad config', flush=True); raise SystemExit(3)"]
    process = ManagedProcess(argv, log_dir=tmp_path, name="dies")
    with process, pytest.raises(ProcessExitedError, match=r"(?s)status 3.*boom: bad config"):
        process.wait_for_tcp("127.0.0.1", free_ports(1)[0], timeout=5)
    assert process.stop() == 3  # idempotent after __exit__


def test_process_that_never_listens_times_out_and_is_killed(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    process = ManagedProcess(argv, log_dir=tmp_path, name="deaf").start()
    try:
        with pytest.raises(ReadinessTimeoutError, match="timed out"):
            process.wait_for(lambda: False, timeout=0.2, description="never")
    finally:
        returncode = process.stop(timeout=0.3)  # SIGTERM is ignored: SIGKILL follows
    assert returncode == -9
    assert not process.is_running()


# --- Valkey ---------------------------------------------------------------------------------------


def test_valkey_restarts_empty_on_the_same_port(valkey_fresh: ValkeyServer) -> None:
    url = valkey_fresh.url
    asyncio.run(_set(url, "k", "v"))
    assert asyncio.run(_ping_and_get(url, "k")) == (True, b"v")

    valkey_fresh.stop()
    with pytest.raises(RedisConnectionError):
        asyncio.run(_ping_and_get(url, "k"))

    valkey_fresh.start()
    assert valkey_fresh.url == url
    assert asyncio.run(_ping_and_get(url, "k")) == (True, None)  # no persistence


def test_valkey_pause_hangs_clients_until_resumed(valkey_fresh: ValkeyServer) -> None:
    valkey_fresh.pause()
    try:
        with pytest.raises(RedisTimeoutError):
            asyncio.run(asyncio.wait_for(_ping_and_get_short_timeout(valkey_fresh.url), 5))
    finally:
        valkey_fresh.resume()
    assert asyncio.run(_ping_and_get(valkey_fresh.url, "k")) == (True, None)


async def _ping_and_get_short_timeout(url: str) -> bool:
    client = aioredis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


# --- chdb -----------------------------------------------------------------------------------------


def test_chdb_db_isolates_a_database(chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    client.command(f"CREATE TABLE {database}.usage (customer String, qty UInt64) ENGINE = MergeTree ORDER BY customer")
    client.insert("usage", [["c1", 3], ["c2", 5], ["c1", 4]], column_names=["customer", "qty"], database=database)
    rows = client.query(f"SELECT customer, sum(qty) FROM {database}.usage GROUP BY customer ORDER BY customer")
    assert rows.result_rows == [("c1", 7), ("c2", 5)]


# --- demo upstream and Envoy -------------------------------------------------------------------------


def test_upstream_echoes_headers_through_envoy(upstream: DemoUpstream, envoy_factory: EnvoyFactory) -> None:
    envoy = envoy_factory("http", ext_authz=False)
    status, body = _get(envoy.listener_port, "/v1/x?q=1", {"X-Api-Key": "k", "X-Tollway-Hint": "h"})
    assert status == 200
    echoed = json.loads(body)
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/v1/x?q=1"
    assert echoed["headers"]["x-api-key"] == "k"
    assert echoed["headers"]["x-tollway-hint"] == "h"
    assert echoed["headers"]["x-request-id"]  # generated by Envoy
    assert envoy.stats(r"^cluster\.upstream\.upstream_rq_2xx$") == {"cluster.upstream.upstream_rq_2xx": 1}


def test_direct_response_envoy_needs_no_upstream(envoy_factory: EnvoyFactory) -> None:
    envoy = envoy_factory("grpc", ext_authz=False, direct_response=True)
    assert _get(envoy.listener_port, "/anything") == (200, b"ok")


def test_envoy_with_ext_authz_fails_closed_with_503_when_tollway_is_down(envoy_factory: EnvoyFactory) -> None:
    (dead_port,) = free_ports(1)
    envoy = envoy_factory("http", endpoints={"tollway_http": [("127.0.0.1", dead_port)]}, direct_response=True)
    status, _ = _get(envoy.listener_port, "/v1/x", {"X-Api-Key": "k"})
    assert status == 503
    assert envoy.stats(r"ext_authz\.error$")["http.ingress.ext_authz.error"] == 1


def test_demo_upstream_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with DemoUpstream(tmp_path) as server:
        status, body = _get(server.port, "/health")
        assert status == 200
        assert json.loads(body)["path"] == "/health"
    assert server.process.returncode == 0
