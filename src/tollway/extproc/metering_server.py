"""The metering gRPC server: Envoy's access-log stream and, when configured, the ext_proc body meter,
on one ``grpc.aio`` server and port (``TOLLWAY_METERING_PORT``), with the standard health service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tollway.listen import ListenError

ACCESS_LOG_SERVICE = "envoy.service.accesslog.v3.AccessLogService"


class GrpcService(Protocol):
    def add_to_server(self, server: grpc.aio.Server) -> None: ...


class MeteringServer:
    def __init__(self, services: Sequence[tuple[str, GrpcService]]) -> None:
        """``services``: (full service name, servicer) pairs; the names are reported SERVING on health."""
        # SO_REUSEPORT off: a stale server on the same port must not silently take the log stream.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._health = health.aio.HealthServicer()
        self._names = [name for name, _ in services]
        for _, service in services:
            service.add_to_server(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    async def start(self, host: str, port: int) -> int:
        bound = int(self._server.add_insecure_port(f"{host}:{port}"))
        if bound == 0:
            raise ListenError(f"cannot listen on {host}:{port} (metering gRPC)")
        await self._server.start()
        for name in ("", *self._names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def shutdown(self, grace: float) -> None:
        """Stop taking streams, and give open ones ``grace`` seconds to deliver what Envoy still flushes."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
