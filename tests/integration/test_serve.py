"""``tollway serve`` as a process: graceful shutdown, several workers, gRPC health, bad settings."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TollwayFactory
from tests.support.tollway_cli import TEST_PEPPER, create_key
from tollway.harness.processes import ManagedProcess
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def consecutive_pairs(count: int) -> list[int]:
    """Base ports p with p and p + 1 both free, below the kernel's ephemeral range so an outgoing
    connection cannot take p + 1 between this check and the worker binding it."""
    rng = random.Random()
    bases: list[int] = []
    while len(bases) < count:
        base = rng.randrange(20000, 32000, 2)
        if base not in bases and bindable(base) and bindable(base + 1):
            bases.append(base)
    return bases


def wait_exit(process: ManagedProcess, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while process.is_running():
        assert time.monotonic() < deadline, f"{process.name} did not exit"
        time.sleep(0.02)
    return process.returncode


def test_grpc_health_service_reports_serving(valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory) -> None:
    server = tollway_factory()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.auth.v3.Authorization"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_sigterm_lets_in_flight_checks_finish(valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory) -> None:
    server = tollway_factory()
    key = create_key(valkey_fresh.url, "acme")["api_key"].encode()
    valkey_fresh.pause()  # the uncached key's lookup now takes the full 100 ms store timeout
    try:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=3) as sock:
            sock.sendall(b"GET /v1/x HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n\r\n")
            time.sleep(0.02)  # the check is in flight
            server.process.send_signal(signal.SIGTERM)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        valkey_fresh.resume()
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]  # answered, not dropped
    assert b"connection: close" in answer
    assert wait_exit(server.process, 5) == 0
    assert "stopped" in server.log_tail()


def test_workers_listen_on_consecutive_ports(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    base_http, base_grpc, base_admin = consecutive_pairs(3)
    env = {
        "TOLLWAY_REDIS_URL": valkey_fresh.url,
        "TOLLWAY_PEPPER": TEST_PEPPER,
        "TOLLWAY_HTTP_PORT": str(base_http),
        "TOLLWAY_GRPC_PORT": str(base_grpc),
        "TOLLWAY_ADMIN_PORT": str(base_admin),
        "TOLLWAY_WORKERS": "2",
    }
    process = ManagedProcess(
        [sys.executable, "-m", "tollway", "serve"], log_dir=tmp_path, name="workers", env={**os.environ, **env}
    )
    with process:
        key = create_key(valkey_fresh.url, "acme")["api_key"]
        for port in (base_http, base_http + 1):
            process.wait_for_tcp("127.0.0.1", port, timeout=30)
            response = httpx.get(f"http://127.0.0.1:{port}/", headers={"x-api-key": key}, timeout=2)
            assert response.headers["x-tollway-customer-id"] == "acme"
        process.wait_for_tcp("127.0.0.1", base_grpc + 1, timeout=30)
        for port in (base_admin, base_admin + 1):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["status"] == "serving"
        process.send_signal(signal.SIGTERM)
        assert wait_exit(process, 10) == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TOLLWAY_HTTP_PORT": "seventy"}, "TOLLWAY_HTTP_PORT"),
        ({"TOLLWAY_REDIS_TIMEOUT_MS": "0"}, "TOLLWAY_REDIS_TIMEOUT_MS"),
        ({"TOLLWAY_CHECK_DEADLINE_MS": "1"}, "TOLLWAY_CHECK_DEADLINE_MS"),
        ({"TOLLWAY_PEPPER": "short"}, "at least 32 bytes"),
        ({"TOLLWAY_PEPPER": "", "TOLLWAY_PEPPER_FILE": "/nonexistent/pepper"}, "cannot read TOLLWAY_PEPPER_FILE"),
    ],
)
def test_bad_settings_fail_fast_with_a_clear_message(env: dict[str, str], message: str) -> None:
    environment = {
        **os.environ,
        "TOLLWAY_PEPPER": TEST_PEPPER,
        "TOLLWAY_HTTP_PORT": "0",
        "TOLLWAY_GRPC_PORT": "0",
        "TOLLWAY_ADMIN_PORT": "0",
    }
    environment.update(env)
    if environment.get("TOLLWAY_PEPPER") == "":
        del environment["TOLLWAY_PEPPER"]
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "serve"], env=environment, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_health_shows_the_live_catalog(valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory) -> None:
    catalog = Path(__file__).parents[2] / "plans" / "catalog.yaml"
    server = tollway_factory({"TOLLWAY_CATALOG": str(catalog)})
    health = httpx.get(f"http://127.0.0.1:{server.admin_port}/healthz", timeout=2).json()
    assert health["status"] == "serving"
    assert health["catalog"]["name"] == "acme-data-api"
    assert health["catalog"]["digest"].startswith("sha256:")
    assert health["catalog"]["last_change_refused"] is None
    assert httpx.get(f"http://127.0.0.1:{server.admin_port}/other", timeout=2).status_code == 404
    assert "is live" in server.log_tail()


def test_invalid_catalog_at_start_is_refused_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text("apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: x, version: '1'}\nplans: {}\n")
    environment = {**os.environ, "TOLLWAY_PEPPER": TEST_PEPPER, "TOLLWAY_CATALOG": str(bad), "TOLLWAY_ADMIN_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "serve"], env=environment, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 2
    assert f"{bad}:4:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_named_in_the_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = {
            **os.environ,
            "TOLLWAY_PEPPER": TEST_PEPPER,
            "TOLLWAY_HTTP_PORT": str(port),
            "TOLLWAY_GRPC_PORT": "0",
            "TOLLWAY_ADMIN_PORT": "0",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tollway", "serve"], env=environment, capture_output=True, text=True, timeout=20
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
