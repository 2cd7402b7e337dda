"""/livez and /readyz against a real Valkey: in process (the checks ``serve`` injects) and on ``tollway serve``."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TollwayFactory
from tollway.admin_server import readiness_checks
from tollway.harness.valkey import ValkeyServer
from tollway.redis_client import hot_path_client
from tollway.settings import Settings
from tollway.usage.spool import SpoolWriter

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _image_healthcheck(admin_port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command (its ``python`` is the image's venv; here, this one)."""
    found = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert found is not None, "no exec-form HEALTHCHECK in the Dockerfile"
    argv = json.loads(found.group(1))
    assert argv[0] == "python"
    env = {**os.environ, "TOLLWAY_ADMIN_PORT": str(admin_port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30).returncode


def _check(url: str, spool: SpoolWriter | None = None) -> dict[str, str | None]:
    async def go() -> dict[str, str | None]:
        redis = hot_path_client(Settings(redis_url=url))
        try:
            return dict(await readiness_checks(redis, spool, refuse_when_spool_full=True)())
        finally:
            await redis.aclose()

    return asyncio.run(go())


def test_checks_pass_with_valkey_up_and_a_writable_spool(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path / "spool")
    try:
        assert _check(valkey_fresh.url, spool) == {"redis": None, "spool": None}
    finally:
        spool.close()


def test_redis_check_names_a_stopped_valkey(valkey_fresh: ValkeyServer) -> None:
    valkey_fresh.stop()
    try:
        result = _check(valkey_fresh.url)
    finally:
        valkey_fresh.start()
    reason = result["redis"]
    assert reason is not None
    assert reason.startswith("PING failed: ConnectionError")


def test_redis_check_is_bounded_when_valkey_hangs(valkey_fresh: ValkeyServer) -> None:
    valkey_fresh.pause()
    try:
        result = _check(valkey_fresh.url)
    finally:
        valkey_fresh.resume()
    reason = result["redis"]
    assert reason is not None
    assert "Timeout" in reason or "no answer to PING" in reason


def test_spool_check_refuses_a_full_spool_under_fail_closed(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path / "spool", segment_bytes=1 << 20, max_bytes=1 << 16)
    try:
        while spool.full is False:
            spool.append(b'{"pad":"' + b"x" * 4000 + b'"}\n')
        assert _check(valkey_fresh.url, spool)["spool"] == (
            "the spool is full (TOLLWAY_SPOOL_MAX_BYTES) and the policy is fail_closed"
        )
    finally:
        spool.close()


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _grpc_health_when(port: int, wanted: int) -> int:
    """The gRPC health status of the ext_authz service once it is ``wanted`` (it follows the readiness
    checks every second), or the last one seen after 15 s."""
    deadline = time.monotonic() + 15
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            request = health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization")
            status = int(stub.Check(request, timeout=2).status)
            if status == wanted or time.monotonic() > deadline:
                return status
            time.sleep(0.2)


def _wait_status(port: int, path: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 15
    while True:
        response = _get(port, path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_serve_probes_and_the_image_healthcheck_follow_valkey(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, tmp_path: Path
) -> None:
    # Without last-known records (TOLLWAY_STALE_MAX_S=0) a process that cannot reach Redis is not ready.
    server = tollway_factory(
        {"TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"), "TOLLWAY_LOADER": "off", "TOLLWAY_STALE_MAX_S": "0"}
    )
    port = server.admin_port
    ready = _wait_status(port, "/readyz", 200)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"listeners": "ok", "redis": "ok", "spool": "ok"}}
    assert _get(port, "/livez").json() == {"status": "alive"}
    assert _image_healthcheck(port) == 0

    assert _grpc_health_when(server.grpc_port, SERVING) == SERVING

    valkey_fresh.stop()
    try:
        refused = _get(port, "/readyz")
        assert _get(port, "/livez").status_code == 200  # alive, just not ready
        assert _image_healthcheck(port) == 1  # Docker: unhealthy
        assert _grpc_health_when(server.grpc_port, NOT_SERVING) == NOT_SERVING  # gRPC health agrees
    finally:
        valkey_fresh.start()
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = refused.json()
    assert problem["type"] == "https://tollway.dev/problems/not-ready"
    assert problem["status"] == 503
    assert problem["detail"].startswith("redis: PING failed")
    assert problem["checks"]["spool"] == "ok"

    back = _wait_status(port, "/readyz", 200)  # no restart needed
    assert back.status_code == 200, back.text
    assert _grpc_health_when(server.grpc_port, SERVING) == SERVING


def test_a_redis_outage_within_the_staleness_bound_keeps_the_process_ready(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, tmp_path: Path
) -> None:
    """Every replica loses the same Redis at once: readiness failing would empty the Service, and the
    last-known keys and subscriptions that keep fail_open customers admitted would serve nobody."""
    server = tollway_factory({"TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"), "TOLLWAY_LOADER": "off"})
    port = server.admin_port
    assert _wait_status(port, "/readyz", 200).status_code == 200
    assert _grpc_health_when(server.grpc_port, SERVING) == SERVING

    valkey_fresh.stop()
    try:
        during = _get(port, "/readyz")
        assert _image_healthcheck(port) == 0
        time.sleep(2.5)  # gRPC health re-reads the checks every second
        assert _grpc_health_when(server.grpc_port, SERVING) == SERVING
    finally:
        valkey_fresh.start()
    assert during.status_code == 200, during.text
    body = during.json()
    assert body["checks"] == {"listeners": "ok", "spool": "ok"}
    assert body["reported"]["redis"].startswith("unreachable for ")
    assert "tolerated up to 300 s" in body["reported"]["redis"]

    back = _wait_status(port, "/readyz", 200)
    assert back.json()["checks"] == {"listeners": "ok", "redis": "ok", "spool": "ok"}
    assert "reported" not in back.json()
