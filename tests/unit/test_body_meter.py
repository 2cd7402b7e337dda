"""The body-meter ext_proc servicer without Envoy: messages in, serialized answers out."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from tollway.extproc.body_meter import BodyMeterService
from tollway.extproc.metadata import METERS_NAMESPACE
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.loader import compile_catalog_text

Mode = processing_mode_pb2.ProcessingMode

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: t, version: "1"}
meters:
  tokens: {unit: response_json, field: usage.total_tokens, features: [chat]}
  rows: {unit: response_json, field: meta.rows, features: [reports, chat]}
features:
  chat: {routes: [{methods: [POST], prefix: /v1/chat/}]}
  reports: {routes: [{methods: [GET], prefix: /v1/reports/}]}
  items: {routes: [{methods: [GET], prefix: /v1/items/}]}
plans:
  pro: {features: [chat, reports, items]}
"""


def compiled(text: str = CATALOG) -> CompiledCatalog:
    return compile_catalog_text(text, "c.yaml")


def body(
    data: bytes,
    *,
    end: bool = True,
    feature: str | None = "chat",
    status: float | None = 200,
    mode: int | None = None,
) -> pb.ProcessingRequest:
    message = pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end))
    if feature is not None:
        authz = struct_pb2.Struct()
        authz.update({"x-tollway-feature": feature, "x-tollway-plan": "pro"})
        message.metadata_context.filter_metadata["envoy.filters.http.ext_authz"].CopyFrom(authz)
    attributes = struct_pb2.Struct()
    attributes.update({"request.id": "req-1", **({"response.code": status} if status is not None else {})})
    message.attributes["envoy.filters.http.ext_proc"].CopyFrom(attributes)
    if mode is not None:
        message.protocol_config.response_body_mode = mode
    return message


def headers(status: str, content_type: str | None = "application/json", length: int | None = None) -> Any:
    pairs = [(":status", status)]
    if content_type is not None:
        pairs.append(("content-type", content_type))
    if length is not None:
        pairs.append(("content-length", str(length)))
    message = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])
        )
    )
    authz = struct_pb2.Struct()
    authz.update({"x-tollway-feature": "chat"})
    message.metadata_context.filter_metadata["envoy.filters.http.ext_authz"].CopyFrom(authz)
    return message


def run(service: BodyMeterService, messages: Iterable[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
    async def requests() -> AsyncIterator[pb.ProcessingRequest]:
        for message in messages:
            yield message

    async def collect() -> list[pb.ProcessingResponse]:
        return [pb.ProcessingResponse.FromString(raw) async for raw in service.process(requests(), None)]

    return asyncio.run(collect())


def meters(response: pb.ProcessingResponse) -> dict[str, Any] | None:
    if METERS_NAMESPACE not in response.dynamic_metadata.fields:
        return None
    found: dict[str, Any] = json.loads(
        json.dumps(dict(response.dynamic_metadata.fields[METERS_NAMESPACE].struct_value.items()))
    )
    return found


def test_one_body_gives_every_meter_of_the_feature_as_strings() -> None:
    service = BodyMeterService(compiled)
    (answer,) = run(service, [body(b'{"usage": {"total_tokens": 1234}, "meta": {"rows": 2.50}}')])
    assert answer.WhichOneof("response") == "response_body"
    assert not answer.response_body.HasField("response")  # no mutation of any kind
    assert meters(answer) == {"tokens": "1234", "rows": "2.5"}
    assert service.stats.metered == {"tokens": 1, "rows": 1}


def test_only_the_meters_listing_the_feature_apply() -> None:
    service = BodyMeterService(compiled)
    (answer,) = run(service, [body(b'{"usage": {"total_tokens": 5}, "meta": {"rows": 3}}', feature="reports")])
    assert meters(answer) == {"rows": "3"}


@pytest.mark.parametrize(
    ("message", "skipped"),
    [
        (body(b'{"usage": {"total_tokens": 5}}', feature="items"), "no_meter"),
        (body(b'{"usage": {"total_tokens": 5}}', feature=None), "no_feature"),
        (body(b'{"usage": {"total_tokens": 5}}', status=503), "not_2xx"),
        (body(b'{"usage": {"total_tokens": 5}}', status=304), "not_2xx"),
    ],
)
def test_responses_without_meters_pass_through(message: pb.ProcessingRequest, skipped: str) -> None:
    service = BodyMeterService(compiled)
    (answer,) = run(service, [message])
    assert meters(answer) is None
    assert answer.WhichOneof("response") == "response_body"
    assert service.stats.skipped == {skipped: 1}
    assert not service.stats.absent


def test_a_missing_status_attribute_is_an_absence_not_a_guess() -> None:
    service = BodyMeterService(compiled)
    (answer,) = run(service, [body(b'{"usage": {"total_tokens": 5}}', status=None)])
    assert meters(answer) is None
    assert service.stats.absent == {("tokens", "status_unknown"): 1, ("rows", "status_unknown"): 1}


def test_streamed_chunks_are_gathered_until_the_end() -> None:
    service = BodyMeterService(compiled)
    answers = run(
        service,
        [
            body(b'{"usage": {"total', end=False, mode=Mode.STREAMED),
            body(b'_tokens": 4', end=False),
            body(b"2}}", end=False),
            body(b"", end=True),
        ],
    )
    assert [meters(a) for a in answers] == [None, None, None, {"tokens": "42"}]
    assert service.stats.absent == {("rows", "missing"): 1}


def test_a_body_over_the_limit_is_not_kept_and_its_meters_are_absent() -> None:
    service = BodyMeterService(compiled, max_body_bytes=10)
    answers = run(
        service,
        [body(b'{"usage": ', end=False, mode=Mode.STREAMED), body(b'{"total_tokens": 1}}', end=False), body(b"")],
    )
    assert [meters(a) for a in answers] == [None, None, None]
    assert service.stats.absent == {("tokens", "too_large"): 1, ("rows", "too_large"): 1}


def test_a_partial_buffered_body_is_truncated() -> None:
    service = BodyMeterService(compiled)
    (answer,) = run(service, [body(b'{"usage": {"total_tokens": 1}', end=False, mode=Mode.BUFFERED_PARTIAL)])
    assert meters(answer) is None
    assert service.stats.absent[("tokens", "truncated")] == 1


def test_a_stream_that_ends_before_the_body_does_is_counted() -> None:
    service = BodyMeterService(compiled)
    run(service, [body(b'{"usage": ', end=False, mode=Mode.STREAMED)])
    assert service.stats.absent[("tokens", "no_end_of_body")] == 1


def test_headers_first_mode_skips_bodies_it_will_not_meter() -> None:
    service = BodyMeterService(compiled, max_body_bytes=1000)
    for message, reason in [
        (headers("500"), None),
        (headers("200", "text/plain; charset=utf-8"), ("tokens", "not_json")),
        (headers("200", length=5000), ("tokens", "too_large")),
    ]:
        (answer,) = run(service, [message])
        assert answer.WhichOneof("response") == "response_headers"
        assert answer.mode_override.response_body_mode == Mode.NONE
        if reason is not None:
            assert service.stats.absent[reason] == 1
    assert service.stats.skipped == {"not_2xx": 1}


def test_headers_first_mode_meters_the_body_that_follows() -> None:
    service = BodyMeterService(compiled)
    head, tail = run(
        service,
        [headers("200", "application/vnd.api+json", length=31), body(b'{"usage": {"total_tokens": 7}}', status=None)],
    )
    assert not head.HasField("mode_override")
    assert meters(tail) == {"tokens": "7"}


def test_a_catalog_reload_applies_to_the_next_response() -> None:
    catalogs = [compiled()]
    service = BodyMeterService(lambda: catalogs[-1])
    payload = b'{"usage": {"total_tokens": 9}, "meta": {"rows": 1}}'
    assert meters(run(service, [body(payload)])[0]) == {"tokens": "9", "rows": "1"}
    catalogs.append(compiled(CATALOG.replace("features: [reports, chat]", "features: [reports]")))
    assert meters(run(service, [body(payload)])[0]) == {"tokens": "9"}


def test_a_failure_in_the_server_passes_the_response_through() -> None:
    def broken() -> CompiledCatalog:
        raise RuntimeError("catalog store on fire")

    service = BodyMeterService(broken)
    answers = run(service, [body(b'{"usage": ', end=False, mode=Mode.STREAMED), body(b"1}")])
    assert [a.WhichOneof("response") for a in answers] == ["response_body", "response_body"]
    assert [meters(a) for a in answers] == [None, None]
    assert service.stats.errors == 1


def test_other_messages_get_their_own_pass_through_answer() -> None:
    service = BodyMeterService(compiled)
    messages = [
        pb.ProcessingRequest(request_headers=pb.HttpHeaders()),
        pb.ProcessingRequest(request_body=pb.HttpBody()),
        pb.ProcessingRequest(request_trailers=pb.HttpTrailers()),
        pb.ProcessingRequest(response_trailers=pb.HttpTrailers()),
    ]
    kinds = [a.WhichOneof("response") for a in run(service, messages)]
    assert kinds == ["request_headers", "request_body", "request_trailers", "response_trailers"]


def test_absences_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    service = BodyMeterService(compiled, log_interval=3600)
    for _ in range(5):
        run(service, [body(b"not json")])
    lines = [r.getMessage() for r in caplog.records if "tokens absent" in r.getMessage()]
    assert len(lines) == 1
    assert "invalid_json" in lines[0]
    assert "req-1" in lines[0]
    assert service.stats.absent[("tokens", "invalid_json")] == 5


def test_max_body_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BodyMeterService(compiled, max_body_bytes=0)
