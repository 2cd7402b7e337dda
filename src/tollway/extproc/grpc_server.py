"""Envoy ext_authz over gRPC (``envoy.service.auth.v3.Authorization``) with ``grpc.aio``, plus the
standard gRPC health service. Same decision core as the HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tollway.extproc.check import Allow, CheckRequest, Decision, Headers
from tollway.extproc.decision import Decider
from tollway.extproc.faults import log_unexpected
from tollway.listen import ListenError

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "envoy.service.auth.v3.Authorization"
_OVERWRITE: Final = base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE_FOR_STATUS: Final = {
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


def to_check_request(message: external_auth_pb2.CheckRequest) -> CheckRequest:
    http = message.attributes.request.http
    headers: Mapping[str, str]
    if http.headers:
        headers = http.headers  # the protobuf map itself: read-only, lower-case names, no copy
    else:  # Envoy sends header_map instead when encode_raw_headers is on
        headers = {
            h.key.lower(): h.raw_value.decode("latin-1") if h.raw_value else h.value for h in http.header_map.headers
        }
    path = http.path
    if http.query and "?" not in path:
        path = f"{path}?{http.query}"
    return CheckRequest(http.method, path, headers, headers.get("x-request-id") or http.id)


def _metadata(headers: Headers) -> struct_pb2.Struct:
    metadata = struct_pb2.Struct()
    for name, value in headers:
        metadata.fields[name].string_value = value
    return metadata


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def to_check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if isinstance(decision, Allow):
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(n, v) for n, v in decision.upstream_headers],
                headers_to_remove=list(decision.remove_headers),
                query_parameters_to_remove=list(decision.remove_query_params),
                response_headers_to_add=[_header(n, v) for n, v in decision.client_headers],
            ),
            # The same names and values the HTTP variant puts there via dynamic_metadata_from_headers
            # (namespace envoy.filters.http.ext_authz): the access log completes usage rows from them.
            dynamic_metadata=_metadata(decision.upstream_headers),
        )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE_FOR_STATUS.get(decision.status, code_pb2.PERMISSION_DENIED)),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),
            headers=[_header(n, v) for n, v in decision.headers],
            body=decision.body.decode("utf-8"),
        ),
    )


@lru_cache(maxsize=8192)
def _serialized_allow(decision: Allow) -> bytes:
    """An admit repeats for every request of a caller: build and serialize it once."""
    return bytes(to_check_response(decision).SerializeToString())


def serialize_verdict(decision: Decision) -> bytes:
    if isinstance(decision, Allow) and decision.repeats:
        return _serialized_allow(decision)
    return bytes(to_check_response(decision).SerializeToString())


def parse_check_request(data: bytes) -> external_auth_pb2.CheckRequest | None:
    """The request deserializer: ``None`` for bytes that are not a ``CheckRequest`` (corrupt, or a string
    field that is not UTF-8), which the servicer answers with a 400 problem rather than a gRPC error."""
    try:
        return external_auth_pb2.CheckRequest.FromString(data)
    except Exception:  # DecodeError, or whatever else a parser may raise on hostile bytes
        return None


class AuthorizationService:
    """``Check`` answers with serialized bytes (see :meth:`GrpcAuthzServer.__init__`): always an OK
    status carrying the verdict, never a gRPC error (Envoy would turn it into its ``status_on_error``)."""

    def __init__(self, core: Decider) -> None:
        self._core = core

    async def check(self, request: external_auth_pb2.CheckRequest | None, context: grpc.aio.ServicerContext) -> bytes:
        if request is None:
            return serialize_verdict(
                self._core.refusals.bad_request(
                    400, "malformed-request", "Malformed request", "The check request could not be decoded."
                )
            )
        request_id = ""
        try:
            check = to_check_request(request)
            request_id = check.request_id
            decision = self._core.decide_now(check)
            if decision is None:
                decision = await self._core.decide(check)
            return serialize_verdict(decision)
        except Exception as error:  # the last-resort guard: a fault of Tollway's, answered and logged once
            log_unexpected(error, request_id)
            return serialize_verdict(self._core.refusals.internal_error(request_id))


def _identity(data: bytes) -> bytes:
    return data


class GrpcAuthzServer:
    def __init__(self, core: Decider) -> None:
        # SO_REUSEPORT off: a stale server on the same port must not silently take traffic.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._health = health.aio.HealthServicer()
        # Registered by hand (not add_AuthorizationServicer_to_server) so responses can be pre-serialized.
        handler = grpc.unary_unary_rpc_method_handler(
            AuthorizationService(core).check,
            request_deserializer=parse_check_request,
            response_serializer=_identity,
        )
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": handler}),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    async def start(self, host: str, port: int) -> int:
        bound = int(self._server.add_insecure_port(f"{host}:{port}"))
        if bound == 0:
            raise ListenError(f"cannot listen on {host}:{port} (gRPC)")
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return bound

    async def set_serving(self, serving: bool) -> None:
        """gRPC health for both names: SERVING, or NOT_SERVING while a dependency (Redis) is away."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def shutdown(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
