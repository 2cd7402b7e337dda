"""Envoy's gRPC access-log stream (``envoy.service.accesslog.v3.AccessLogService``): response facts in,
version-2 usage rows out, written to the spool as each message arrives.

Envoy batches the entries of many requests per message (measured: ~200, ~3.5 µs of Envoy per request),
which is why this, not ext_proc, is the default source of response facts. Identity, plan, feature,
route, cost, the decision time and the row id come from the ext_authz dynamic metadata Tollway set on the
admit (``dynamic_metadata_from_headers``): no second Redis lookup. The row id is Tollway's own
(``x-tollway-usage-id``), not Envoy's request id, which a client chooses when Envoy preserves it; Envoy's id
is kept in the row as a reference. Body meters (``tollway.meters``) come from the ext_proc body meter when
a route has one. Entries without Tollway's decision metadata (refusals, whose rows are final at decision
time, and requests Tollway never saw) are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import duration_pb2

from tollway.extproc.decision import (
    COST_HEADER,
    CUSTOMER_HEADER,
    DECIDED_AT_HEADER,
    FEATURE_HEADER,
    KEY_ID_HEADER,
    LIMITS_HEADER,
    PLAN_HEADER,
    PRICE_HEADER,
    ROUTE_HEADER,
    USAGE_ID_HEADER,
)
from tollway.extproc.metadata import AUTHZ_NAMESPACE, METERS_NAMESPACE
from tollway.usage.meters import NO_METERS, CatalogMeters
from tollway.usage.row import RESPONSE_VERSION, UsageRow, encode_row
from tollway.usage.settlement import ReservationSettler
from tollway.usage.spool import SpoolWriter

log = logging.getLogger(__name__)

_METHODS: Final = {value: name for name, value in base_pb2.RequestMethod.items()}


def _ms(duration: duration_pb2.Duration) -> float:
    return duration.seconds * 1000.0 + duration.nanos / 1e6


def row_from_entry(entry: accesslog_pb2.HTTPAccessLogEntry, meters: CatalogMeters) -> UsageRow | None:
    """The completed usage row of one logged request, or None when Tollway did not admit it."""
    common = entry.common_properties
    metadata = common.metadata.filter_metadata
    authz = metadata.get(AUTHZ_NAMESPACE)
    if authz is None:
        return None
    # One pass over the metadata (a handful of fields) instead of a map lookup per field.
    facts = {name: value.string_value for name, value in authz.fields.items()}
    decided = facts.get(DECIDED_AT_HEADER, "")
    if not decided.isdigit():
        return None
    request = entry.request
    response = entry.response
    feature = facts.get(FEATURE_HEADER, "")
    cost_text = facts.get(COST_HEADER, "")
    cost = int(cost_text) if cost_text.isdigit() else 1
    latency = 0.0
    if common.HasField("time_to_last_upstream_rx_byte"):
        latency = _ms(common.time_to_last_upstream_rx_byte) - _ms(common.time_to_first_upstream_tx_byte)
    request_bytes = request.request_body_bytes
    response_bytes = response.response_body_bytes
    price_micros, balance_unit = _price(facts.get(PRICE_HEADER))
    body_meters = metadata.get(METERS_NAMESPACE) if len(metadata) > 1 else None
    from_body = {k: v.string_value for k, v in body_meters.fields.items()} if body_meters is not None else None
    return UsageRow(
        # A decision made by a Tollway older than the usage id keyed its row by Envoy's request id.
        facts.get(USAGE_ID_HEADER) or request.request_id,
        int(decided),
        facts.get(CUSTOMER_HEADER, ""),
        facts.get(KEY_ID_HEADER, ""),
        facts.get(PLAN_HEADER, ""),
        feature,
        facts.get(ROUTE_HEADER, ""),
        _METHODS.get(request.request_method, ""),
        response.response_code.value,
        "admitted",
        "",
        facts.get(LIMITS_HEADER) != "unchecked",
        request_bytes,
        response_bytes,
        latency if latency > 0.0 else 0.0,
        meters.for_feature(feature).at_response(cost, request_bytes, response_bytes, from_body),
        RESPONSE_VERSION,
        request.request_id,
        price_micros,
        balance_unit,
    )


def _price(text: str | None) -> tuple[int, str]:
    """``x-tollway-price``: ``<micro-units> [<balance unit>]`` (no unit: a postpaid spend)."""
    if not text:
        return 0, ""
    micros, _, unit = text.partition(" ")
    return (int(micros), unit) if micros.isdigit() and micros.isascii() else (0, "")


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Writes each message's rows to the spool with one write. A row the spool refuses (full) is counted;
    its decision row (version 1) is already stored, so the request is still recorded."""

    def __init__(
        self,
        spool: SpoolWriter,
        meters: Callable[[], CatalogMeters] = lambda: NO_METERS,
        settler: ReservationSettler | None = None,
    ) -> None:
        """``settler``: settles the reservation of each completed row that has one, before the row is
        written, so the row carries the settled price (``usage.settlement``)."""
        self._spool = spool
        self._meters = meters
        self.settler = settler
        self.entries = 0
        self.rows_written = 0
        self.rows_refused = 0
        self.skipped = 0

    def add_to_server(self, server: grpc.aio.Server) -> None:
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self, server)

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            if self.settler is None:
                self.write(message)
            else:
                await self.write_settled(message)
        return als_pb2.StreamAccessLogsResponse()

    async def write_settled(self, message: als_pb2.StreamAccessLogsMessage) -> int:
        """``write``, each row's reservation settled first (Redis before the row: a crash in between
        leaves a settlement marker the sweeper turns into the row's correction)."""
        settler = self.settler
        if settler is None:
            return self.write(message)
        rows = self._rows(message)
        return self._append([await settler.settled_row(row) for row in rows])

    def write(self, message: als_pb2.StreamAccessLogsMessage) -> int:
        """Rows of one message into the spool; the number written."""
        return self._append(self._rows(message))

    def _rows(self, message: als_pb2.StreamAccessLogsMessage) -> list[UsageRow]:
        meters = self._meters()
        rows = []
        entries = message.http_logs.log_entry
        for entry in entries:
            try:
                row = row_from_entry(entry, meters)
            except Exception:
                log.exception("access log entry for request %s could not be read", entry.request.request_id)
                row = None
            if row is None:
                self.skipped += 1
            else:
                rows.append(row)
        self.entries += len(entries)
        return rows

    def _append(self, rows: list[UsageRow]) -> int:
        if not rows:
            return 0
        lines = [encode_row(row) for row in rows]
        if self._spool.append(b"".join(lines)):
            self.rows_written += len(lines)
            return len(lines)
        self.rows_refused += len(lines)
        return 0
