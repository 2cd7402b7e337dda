"""Access-log entries become response rows (version 2) keyed like their decision rows; entries Tollway did
not admit are skipped; a message's rows reach the spool in one write."""

import json
from decimal import Decimal
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from tollway.extproc.access_log import AccessLogService, row_from_entry
from tollway.extproc.metadata import AUTHZ_NAMESPACE, METERS_NAMESPACE
from tollway.usage.meters import CatalogMeters, MeterSet
from tollway.usage.spool import SpoolWriter

CHAT = MeterSet(
    requests=("requests",),
    cost=("work",),
    request_bytes=("ingress",),
    response_bytes=("egress",),
    response_json=frozenset({"tokens"}),
)
METERS = CatalogMeters.of({"chat": CHAT})


def entry(
    request_id: str,
    *,
    decided: str | None = "1795607253580",
    status: int = 200,
    tokens: str | None = None,
    usage_id: str | None = "",
) -> accesslog_pb2.HTTPAccessLogEntry:
    """An entry as Envoy sends it; ``usage_id`` is the row id Tollway minted ("": one derived from
    ``request_id``; None: none, as from a Tollway older than the usage id)."""
    log = accesslog_pb2.HTTPAccessLogEntry()
    log.request.request_id = request_id
    log.request.request_method = base_pb2.RequestMethod.POST
    log.request.request_body_bytes = 321
    log.response.response_code.value = status
    log.response.response_body_bytes = 4567
    log.common_properties.time_to_first_upstream_tx_byte.nanos = 1_000_000
    log.common_properties.time_to_last_upstream_rx_byte.nanos = 13_500_000
    if decided is not None:
        authz = log.common_properties.metadata.filter_metadata[AUTHZ_NAMESPACE]
        for name, value in {
            "x-tollway-customer-id": "acme",
            "x-tollway-key-id": "key_1",
            "x-tollway-plan": "pro",
            "x-tollway-feature": "chat",
            "x-tollway-route": "/v1/chat",
            "x-tollway-limits": "checked",
            "x-tollway-cost": "5",
            "x-tollway-decided-at": decided,
        }.items():
            authz.fields[name].string_value = value
        if usage_id is not None:
            authz.fields["x-tollway-usage-id"].string_value = usage_id or f"usage-of-{request_id}"
    if tokens is not None:
        log.common_properties.metadata.filter_metadata[METERS_NAMESPACE].fields["tokens"].string_value = tokens
    return log


def test_an_admitted_request_is_completed_with_its_response_facts() -> None:
    row = row_from_entry(entry("r1", tokens="1234"), METERS)
    assert row is not None
    assert (row.request_id, row.envoy_request_id, row.ts_ms, row.customer_id, row.subject, row.method) == (
        "usage-of-r1",
        "r1",
        1795607253580,
        "acme",
        "key_1",
        "POST",
    )
    assert (row.status, row.request_bytes, row.response_bytes, row.version) == (200, 321, 4567, 2)
    assert abs(row.upstream_latency_ms - 12.5) < 1e-9
    assert row.meters == {"requests": 1, "work": 5, "ingress": 321, "egress": 4567, "tokens": Decimal(1234)}


def test_the_row_is_keyed_by_tollways_usage_id_not_envoys_request_id() -> None:
    """Two requests a client sent with one x-request-id (Envoy preserving it) complete two rows."""
    first = row_from_entry(entry("same", usage_id="3f9c0e7a1b2d4c5e-1"), METERS)
    second = row_from_entry(entry("same", usage_id="3f9c0e7a1b2d4c5e-2"), METERS)
    assert first is not None
    assert second is not None
    assert (first.request_id, second.request_id) == ("3f9c0e7a1b2d4c5e-1", "3f9c0e7a1b2d4c5e-2")
    assert first.envoy_request_id == second.envoy_request_id == "same"
    line = json.loads(first.to_line())
    assert (line["request_id"], line["envoy_request_id"]) == ("3f9c0e7a1b2d4c5e-1", "same")


def test_a_decision_made_before_usage_ids_completes_the_row_it_wrote() -> None:
    """A Tollway older than the usage id keyed its decision row by Envoy's request id (an upgrade with
    requests in flight): the response row keeps that key, so it still completes that row."""
    row = row_from_entry(entry("r9", usage_id=None), METERS)
    assert row is not None
    assert (row.request_id, row.envoy_request_id) == ("r9", "r9")


def test_entries_without_tollways_decision_are_skipped() -> None:
    assert row_from_entry(entry("r2", decided=None), METERS) is None
    assert row_from_entry(entry("r3", decided="not-a-number"), METERS) is None


def test_a_bad_body_meter_value_is_left_out() -> None:
    for bad in ("-3", "NaN", "12abc", ""):
        row = row_from_entry(entry("r4", tokens=bad), METERS)
        assert row is not None
        assert "tokens" not in row.meters


def test_a_message_is_one_write(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path)
    service = AccessLogService(spool, lambda: METERS)
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.extend([entry("a"), entry("b", decided=None), entry("c", status=503)])
    assert service.write(message) == 2
    assert (service.entries, service.rows_written, service.skipped) == (3, 2, 1)
    assert spool.path is not None
    rows = [json.loads(line) for line in spool.path.read_bytes().splitlines()]
    assert [(r["request_id"], r["envoy_request_id"], r["status"], r["version"]) for r in rows] == [
        ("usage-of-a", "a", 200, 2),
        ("usage-of-c", "c", 503, 2),
    ]
