"""Response-body meters: an Envoy ext_proc server (``envoy.service.ext_proc.v3.ExternalProcessor``, grpc.aio).

Envoy opens one stream per response of a metered route (``envoy/ext-proc-body-meters.yaml``) and streams
the response body to it, chunk by chunk (``response_body_mode: STREAMED``), together with

* the ext_authz dynamic metadata (``metadata_context``, namespace ``envoy.filters.http.ext_authz``), where
  Tollway's verdict put ``x-tollway-feature``, ``-plan``, ``-route`` and ``-customer-id``;
* the attributes ``response.code`` and ``request.id`` (response headers are skipped: no extra message).

For every ``response_json`` meter of the live catalog whose ``features`` include the request's feature, the
server gathers the body (up to ``max_body_bytes``), reads the meter's ``field`` from the JSON and answers the
end-of-body message with dynamic metadata::

    tollway.meters: {"export-rows": "42", "tokens": "1234.5"}

— the meter name as key, the quantity as a decimal STRING (exact, never a float; see
``tollway.usage.json_field``). Envoy keeps it on the stream (``receiving_namespaces``) and the access log
carries it as ``filter_metadata["tollway.meters"]``.

A meter is absent (never zero, never a guess) when the body cannot give it: not a 2xx response, not JSON,
larger than ``max_body_bytes``, or the field missing or not a valid quantity. Every absence is counted in
``BodyMeterService.stats`` and logged (rate-limited) with its reason. The body is never changed, and nothing
here can fail the client's request: Envoy runs the filter with ``failure_mode_allow: true``, and every
message gets a pass-through answer even when this code breaks.

Also understood, for other Envoy settings: ``response_header_mode: SEND`` (the headers then give status,
content type and length, and a response that cannot be metered is switched to ``response_body_mode: NONE``
by ``mode_override``), and the ``BUFFERED`` / ``BUFFERED_PARTIAL`` body modes (a partial body is
"truncated"). With a body over Envoy's buffer limit, Envoy 1.40's BUFFERED breaks the client's response (a
500 or a cut-off body) and BUFFERED_PARTIAL can leave it unfinished: use STREAMED.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc_pb2
from google.protobuf import struct_pb2

from tollway.extproc.decision import FEATURE_HEADER
from tollway.extproc.metadata import AUTHZ_NAMESPACE, METERS_NAMESPACE
from tollway.plans.catalog import CompiledCatalog
from tollway.usage.json_field import FieldPath, NotQuantity, extract, format_quantity, parse_body

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "envoy.service.ext_proc.v3.ExternalProcessor"
STATUS_ATTRIBUTE: Final = "response.code"
REQUEST_ID_ATTRIBUTE: Final = "request.id"
DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
LOG_INTERVAL_S: Final = 10.0

_Mode = processing_mode_pb2.ProcessingMode
_PARTIAL: Final = _Mode.BUFFERED_PARTIAL


def _serialized(response: ext_proc_pb2.ProcessingResponse) -> bytes:
    return bytes(response.SerializeToString())


# Pass-through answers (no mutation, no metadata) never change: built and serialized once.
_CONTINUE: Final[Mapping[str, bytes]] = {
    "request_headers": _serialized(ext_proc_pb2.ProcessingResponse(request_headers=ext_proc_pb2.HeadersResponse())),
    "response_headers": _serialized(ext_proc_pb2.ProcessingResponse(response_headers=ext_proc_pb2.HeadersResponse())),
    "request_body": _serialized(ext_proc_pb2.ProcessingResponse(request_body=ext_proc_pb2.BodyResponse())),
    "response_body": _serialized(ext_proc_pb2.ProcessingResponse(response_body=ext_proc_pb2.BodyResponse())),
    "request_trailers": _serialized(ext_proc_pb2.ProcessingResponse(request_trailers=ext_proc_pb2.TrailersResponse())),
    "response_trailers": _serialized(
        ext_proc_pb2.ProcessingResponse(response_trailers=ext_proc_pb2.TrailersResponse())
    ),
}
_SKIP_BODY: Final = _serialized(
    ext_proc_pb2.ProcessingResponse(
        response_headers=ext_proc_pb2.HeadersResponse(),
        mode_override=_Mode(response_body_mode=_Mode.NONE),
    )
)


def _continue(kind: str | None) -> bytes:
    return _CONTINUE.get(kind or "", _CONTINUE["response_body"])


@dataclass(frozen=True, slots=True)
class BodyMeter:
    name: str
    path: FieldPath


@dataclass(slots=True)
class BodyMeterStats:
    """Counters since start: ``streams`` opened by Envoy; ``bodies`` read to the end for some meter;
    ``skipped`` responses no meter applies to, by reason (``no_feature``, ``no_meter``, ``not_2xx``);
    ``absent`` meters that applied yet got no quantity, by (meter, reason); ``metered`` quantities returned,
    by meter; ``errors`` messages this code failed on (answered with a pass-through)."""

    streams: int = 0
    bodies: int = 0
    errors: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    absent: Counter[tuple[str, str]] = field(default_factory=Counter)
    metered: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, object]:
        return {
            "streams": self.streams,
            "bodies": self.bodies,
            "errors": self.errors,
            "skipped": dict(self.skipped),
            "absent": {f"{meter}/{reason}": n for (meter, reason), n in self.absent.items()},
            "metered": dict(self.metered),
        }


class _MeterIndex:
    """A catalog's ``response_json`` meters by feature (rebuilt when the live catalog object changes)."""

    __slots__ = ("by_feature", "catalog")

    def __init__(self, catalog: CompiledCatalog) -> None:
        self.catalog = catalog
        by_feature: dict[str, list[BodyMeter]] = {}
        for name, meter in catalog.catalog.meters.items():
            if meter.unit != "response_json" or meter.field is None:
                continue
            try:
                path = FieldPath.parse(meter.field)
            except ValueError:  # the schema validates paths: only a hand-built catalog gets here
                log.error("meter %s: unusable field path %r; it is not metered", name, meter.field)
                continue
            for feature in dict.fromkeys(meter.features or ()):
                by_feature.setdefault(feature, []).append(BodyMeter(name, path))
        self.by_feature: dict[str, tuple[BodyMeter, ...]] = {f: tuple(m) for f, m in by_feature.items()}


class _ThrottledLog:
    """At most one line per key and interval, with the number of lines held back since the last one."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: Counter[tuple[str, str]] = Counter()

    def warning(self, key: tuple[str, str], message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] += 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        log.warning(message + (f" ({held} more since the last such line)" if held else ""), *args)


@dataclass(slots=True)
class Exchange:
    """What one stream (one HTTP response) has told the server so far."""

    status: int | None = None
    content_type: str | None = None
    request_id: str = "-"
    feature: str | None = None
    body_mode: int = _Mode.STREAMED
    meters: tuple[BodyMeter, ...] | None = None  # None: not decided yet; (): nothing to meter
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False


class BodyMeterService:
    """The ext_proc servicer. ``catalog`` returns the catalog in force (e.g. ``lambda: live.current``);
    it is called once per response, so a reload applies to the next response."""

    def __init__(
        self,
        catalog: Callable[[], CompiledCatalog],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        log_interval: float = LOG_INTERVAL_S,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self._catalog = catalog
        self._max_body_bytes = max_body_bytes
        self._index: _MeterIndex | None = None
        self._log = _ThrottledLog(log_interval)
        self.stats = BodyMeterStats()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register ``ExternalProcessor/Process`` on ``server`` (before it starts)."""
        handler = grpc.stream_stream_rpc_method_handler(
            self.process,
            request_deserializer=ext_proc_pb2.ProcessingRequest.FromString,
            response_serializer=_identity,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": handler}),))

    async def process(
        self, requests: AsyncIterator[ext_proc_pb2.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One stream: one serialized ``ProcessingResponse`` per message, in order."""
        self.stats.streams += 1
        exchange = Exchange()
        async for message in requests:
            kind = message.WhichOneof("request")
            try:
                answer = self.answer(exchange, message, kind)
            except Exception:  # a bug here must cost a meter, never the client's response
                self.stats.errors += 1
                log.exception("body meter failed on %s of request %s; passing it through", kind, exchange.request_id)
                exchange.done = True
                answer = _continue(kind)
            yield answer
        if not exchange.done and exchange.meters:
            # Envoy closed the stream before the end of the body (response trailers, a reset, a timeout).
            self._absent(exchange, exchange.meters, "no_end_of_body", "the stream ended before the body did")

    def answer(self, exchange: Exchange, message: ext_proc_pb2.ProcessingRequest, kind: str | None) -> bytes:
        """The serialized answer to one message of a stream (``exchange`` carries the stream's state)."""
        _learn(exchange, message)
        if kind == "response_body":
            return self._on_body(exchange, message.response_body)
        if kind == "response_headers":
            return self._on_headers(exchange, message.response_headers)
        return _continue(kind)

    # --- messages -----------------------------------------------------------------------------------

    def _on_headers(self, exchange: Exchange, headers: ext_proc_pb2.HttpHeaders) -> bytes:
        length: int | None = None
        for header in headers.headers.headers:
            name = header.key.lower()
            if name in (":status", "content-type", "content-length"):
                value = header.raw_value.decode("latin-1") if header.raw_value else header.value
                if name == ":status":
                    exchange.status = _int(value)
                elif name == "content-type":
                    exchange.content_type = value
                else:
                    length = _int(value)
        meters = self._decide(exchange)
        if meters and length is not None and length > self._max_body_bytes:
            self._absent(exchange, meters, "too_large", f"content-length {length}")
            meters = ()
        elif meters and headers.end_of_stream:
            self._absent(exchange, meters, "no_body", "the response has no body")
            meters = ()
        if meters:
            return _CONTINUE["response_headers"]
        # Nothing to read: Envoy need neither buffer nor send the body (honoured with allow_mode_override).
        exchange.done = True
        return _SKIP_BODY

    def _on_body(self, exchange: Exchange, body: ext_proc_pb2.HttpBody) -> bytes:
        if exchange.done:
            return _CONTINUE["response_body"]
        meters = self._decide(exchange)
        if not meters:
            exchange.done = True
            return _CONTINUE["response_body"]
        if not body.end_of_stream:
            if exchange.body_mode == _PARTIAL:  # Envoy's buffer filled up: the rest is never sent
                exchange.done = True
                self._absent(exchange, meters, "truncated", f"over Envoy's buffer limit ({len(body.body)}+ bytes)")
            else:  # a chunk of a streamed body: gather until the end
                self._keep(exchange, body.body)
            return _CONTINUE["response_body"]
        exchange.done = True
        self.stats.bodies += 1
        self._keep(exchange, body.body)
        if exchange.size > self._max_body_bytes:
            self._absent(exchange, meters, "too_large", f"{exchange.size} bytes")
            return _CONTINUE["response_body"]
        data = exchange.chunks[0] if len(exchange.chunks) == 1 else b"".join(exchange.chunks)
        exchange.chunks.clear()
        quantities = self._measure(exchange, meters, data)
        if not quantities:
            return _CONTINUE["response_body"]
        metadata = struct_pb2.Struct()
        metadata.fields[METERS_NAMESPACE].struct_value.update(quantities)
        return _serialized(
            ext_proc_pb2.ProcessingResponse(response_body=ext_proc_pb2.BodyResponse(), dynamic_metadata=metadata)
        )

    # --- decisions ----------------------------------------------------------------------------------

    def _decide(self, exchange: Exchange) -> tuple[BodyMeter, ...]:
        """The meters this response should give, decided once per stream (skips and absences counted once)."""
        if exchange.meters is None:
            exchange.meters = self._meters_for(exchange)
        return exchange.meters

    def _meters_for(self, exchange: Exchange) -> tuple[BodyMeter, ...]:
        if exchange.feature is None:
            return self._skip("no_feature")
        meters = self._index_now().by_feature.get(exchange.feature, ())
        if not meters:
            return self._skip("no_meter")
        if exchange.status is None:
            self._absent(exchange, meters, "status_unknown", f"Envoy sent no {STATUS_ATTRIBUTE} attribute")
            return ()
        if not 200 <= exchange.status < 300:
            return self._skip("not_2xx")
        if exchange.content_type is not None and not _is_json(exchange.content_type):
            self._absent(exchange, meters, "not_json", f"content-type {exchange.content_type!r}")
            return ()
        return meters

    def _measure(self, exchange: Exchange, meters: Sequence[BodyMeter], data: bytes) -> dict[str, str]:
        document = parse_body(data)
        if isinstance(document, NotQuantity):
            self._absent(exchange, meters, document.reason, document.detail)
            return {}
        quantities: dict[str, str] = {}
        for meter in meters:
            value = extract(document, meter.path)
            if isinstance(value, NotQuantity):
                self._absent(exchange, (meter,), value.reason, value.detail)
            else:
                quantities[meter.name] = format_quantity(value)
                self.stats.metered[meter.name] += 1
        return quantities

    def _index_now(self) -> _MeterIndex:
        catalog = self._catalog()
        index = self._index
        if index is None or index.catalog is not catalog:
            index = self._index = _MeterIndex(catalog)
        return index

    def _skip(self, reason: str) -> tuple[()]:
        self.stats.skipped[reason] += 1
        return ()

    def _absent(self, exchange: Exchange, meters: Sequence[BodyMeter], reason: str, detail: str) -> None:
        for meter in meters:
            self.stats.absent[(meter.name, reason)] += 1
            self._log.warning(
                (meter.name, reason),
                "meter %s absent for request %s (feature %s): %s: %s",
                meter.name,
                exchange.request_id,
                exchange.feature,
                reason,
                detail,
            )

    def _keep(self, exchange: Exchange, chunk: bytes) -> None:
        """Gather body bytes up to the size limit; past it only the size is kept (the meter will be absent)."""
        exchange.size += len(chunk)
        if exchange.size <= self._max_body_bytes:
            exchange.chunks.append(chunk)
        else:
            exchange.chunks.clear()


def _learn(exchange: Exchange, message: ext_proc_pb2.ProcessingRequest) -> None:
    """Status, request id, feature and body mode, from whichever message first carries them."""
    if message.HasField("protocol_config"):
        exchange.body_mode = message.protocol_config.response_body_mode
    for attributes in message.attributes.values():
        fields = attributes.fields
        if exchange.status is None and STATUS_ATTRIBUTE in fields:
            code = fields[STATUS_ATTRIBUTE]
            if code.WhichOneof("kind") == "number_value":
                exchange.status = int(code.number_value)
        if REQUEST_ID_ATTRIBUTE in fields and fields[REQUEST_ID_ATTRIBUTE].string_value:
            exchange.request_id = fields[REQUEST_ID_ATTRIBUTE].string_value
    if exchange.feature is None and AUTHZ_NAMESPACE in message.metadata_context.filter_metadata:
        value = message.metadata_context.filter_metadata[AUTHZ_NAMESPACE].fields.get(FEATURE_HEADER)
        if value is not None and value.string_value:
            exchange.feature = value.string_value


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and text.isascii() else None


def _identity(data: bytes) -> bytes:
    return data
