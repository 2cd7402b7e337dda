"""Run ``python -m tollway serve`` (or ``meter``, the metering process) as a managed process on loopback
ports.

Configuration goes through the environment (``TOLLWAY_*``), never argv, so secrets such as the
pepper do not show up in ``ps`` output or in logged command lines.
"""

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.processes import ManagedProcess, ProcessService


class TollwayServer(ProcessService):
    """One Tollway process serving the HTTP check API and the gRPC Authorization service; with
    ``command="meter"``, the metering process instead (access log, body meter, loader; no check)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        redis_url: str,
        pepper: str,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metering_port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        name: str = "tollway",
        command: Literal["serve", "meter"] = "serve",
    ) -> None:
        if http_port is None or grpc_port is None:
            fresh_http, fresh_grpc = free_ports(2)
            http_port = fresh_http if http_port is None else http_port
            grpc_port = fresh_grpc if grpc_port is None else grpc_port
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._admin_port, fresh_metering, self._usage_port = free_ports(3)
        self._metering_port = fresh_metering if metering_port is None else metering_port
        env = {
            "TOLLWAY_REDIS_URL": redis_url,
            "TOLLWAY_PEPPER": pepper,
            "TOLLWAY_HOST": LOOPBACK,
            "TOLLWAY_HTTP_PORT": str(http_port),
            "TOLLWAY_GRPC_PORT": str(grpc_port),
            "TOLLWAY_ADMIN_PORT": str(self._admin_port),
            "TOLLWAY_METERING_PORT": str(self._metering_port),
            "TOLLWAY_USAGE_PORT": str(self._usage_port),
        }
        env.update(extra_env or {})
        self._checks = command == "serve"
        self._metering = bool(env.get("TOLLWAY_SPOOL_DIR")) and env["TOLLWAY_METERING_PORT"] != "0"
        argv = [sys.executable, "-m", "tollway", command]
        self._process = ManagedProcess(argv, log_dir=Path(work_dir), name=name, env=env)

    @property
    def usage_endpoint(self) -> tuple[str, int]:
        """The caller usage endpoint (served when this process loads usage into ClickHouse)."""
        return (LOOPBACK, self._usage_port)

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def grpc_port(self) -> int:
        return self._grpc_port

    @property
    def admin_port(self) -> int:
        return self._admin_port

    @property
    def metering_port(self) -> int:
        """Access-log stream and body meter (listening only when TOLLWAY_SPOOL_DIR is set)."""
        return self._metering_port

    @property
    def metering_endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self._metering_port)

    @property
    def http_endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self._http_port)

    @property
    def grpc_endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self._grpc_port)

    def start(self, timeout: float = 15.0) -> Self:
        """Start and wait until the HTTP and the gRPC port (``serve``) and the metering port (with a spool
        and a metering port) accept connections."""

        def ready() -> None:
            if self._checks:
                self._process.wait_for_tcp(LOOPBACK, self._http_port, timeout=timeout)
                self._process.wait_for_tcp(LOOPBACK, self._grpc_port, timeout=timeout)
            if self._metering:
                self._process.wait_for_tcp(LOOPBACK, self._metering_port, timeout=timeout)

        return self._start_then(ready)
