"""Response-body meters end to end: real Envoy (ext_authz → real Tollway → Valkey; ext_proc → the body-meter
server in this process) in front of a small JSON upstream, with a file access log to read what Envoy recorded.

The stack is the http template transformed by ``with_body_meters`` (the code twin of
``envoy/ext-proc-body-meters.yaml``); the access log is the only place the meters are read back from.
"""

import asyncio
import copy
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.extproc.body_meter import BodyMeterService
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess, validate
from tollway.harness.envoy_body_meters import (
    BODY_METER_CLUSTER,
    EXT_PROC_FILTER,
    ext_proc_cluster,
    with_body_meters,
)
from tollway.harness.ports import LOOPBACK, free_port
from tollway.harness.valkey import ValkeyServer
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.loader import compile_catalog_text

pytestmark = pytest.mark.integration

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: body-meters, version: "1"}
meters:
  requests: {unit: requests}
  tokens: {unit: response_json, field: usage.total_tokens, features: [completions]}
  prompt-tokens: {unit: response_json, field: usage.prompt_tokens, features: [completions]}
  export-rows: {unit: response_json, field: meta.row_count, features: [reports]}
features:
  completions:
    routes: [{methods: [GET, POST], prefix: /v1/completions/}]
  reports:
    routes: [{methods: [GET], prefix: /v1/reports/}]
  items-read:
    routes: [{methods: [GET], prefix: /v1/items/}]
plans:
  pro:
    features: [completions, reports, items-read]
    limits: [{name: burst, limit: 10000, per: minute}]
"""
METERED_PREFIXES = ["/v1/completions/", "/v1/reports/"]
EXT_PROC_STATS = "http.ingress.ext_proc."

# --- a JSON upstream ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    body: bytes
    status: int = 200
    content_type: str | None = "application/json"
    chunk: int = 0  # > 0: Transfer-Encoding chunked, in chunks of this size
    pause: float = 0.0  # seconds between chunks (so that Envoy reads them apart)


def as_json(document: object) -> bytes:
    return json.dumps(document, separators=(", ", ": ")).encode()


class JsonUpstream:
    """http.server on a free port; answers each path with the ``Reply`` registered for it."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        replies = self.replies

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._answer()

            def _answer(self) -> None:
                reply = replies.get(self.path, Reply(b'{"error": "no reply registered"}', status=404))
                self.send_response(reply.status)
                if reply.content_type is not None:
                    self.send_header("content-type", reply.content_type)
                if reply.chunk:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(reply.body), reply.chunk):
                        piece = reply.body[start : start + reply.chunk]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        if reply.pause:
                            self.wfile.flush()
                            time.sleep(reply.pause)
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, int(self._server.server_address[1]))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the body-meter server, on grpc.aio in a thread of its own ----------------------------------------------


class SlowBodyMeterService(BodyMeterService):
    """Answers every message only after ``delay`` seconds (longer than Envoy's message_timeout)."""

    delay = 0.6

    async def process(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for answer in super().process(requests, context):
            await asyncio.sleep(self.delay)
            yield answer


class MeterServer:
    def __init__(self, service: BodyMeterService) -> None:
        self.service = service
        self.port = free_port()
        self._server: grpc.aio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="body-meter", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        async def start() -> None:
            self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            self.service.add_to_server(self._server)
            assert self._server.add_insecure_port(f"{LOOPBACK}:{self.port}") == self.port
            await self._server.start()

        self._run(start())

    def stop(self) -> None:
        if self._server is not None:
            self._run(self._server.stop(0))
            self._server = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


# --- the stack ------------------------------------------------------------------------------------------------


FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
LOG_FORMAT = {
    "path": "%REQ(:PATH)%",
    "status": "%RESPONSE_CODE%",
    "bytes_sent": "%BYTES_SENT%",
    "feature": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:x-tollway-feature)%",
    "meters": "%DYNAMIC_METADATA(tollway.meters)%",
}


def file_access_log(path: Path) -> Callable[[envoy_config.EnvoyConfig], envoy_config.EnvoyConfig]:
    """Replace the HCM's access logs by one JSON line per request in ``path``, with the meters Envoy holds."""
    logger = {
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": FILE_ACCESS_LOG, "path": str(path), "log_format": {"json_format": LOG_FORMAT}},
    }

    def transform(cfg: envoy_config.EnvoyConfig) -> envoy_config.EnvoyConfig:
        result: envoy_config.EnvoyConfig = copy.deepcopy(cfg)
        for listener in result["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for network_filter in chain["filters"]:
                    if network_filter["name"] == envoy_config.HCM_FILTER:
                        network_filter["typed_config"]["access_log"] = [copy.deepcopy(logger)]
        return result

    return transform


@dataclass
class Stack:
    envoy: EnvoyProcess
    client: httpx.Client
    upstream: JsonUpstream
    meter: MeterServer
    log_path: Path
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def service(self) -> BodyMeterService:
        return self.meter.service

    def get(self, path: str, reply: Reply, **kwargs: Any) -> httpx.Response:
        """Register ``reply`` for ``path``, GET it through Envoy and check the body arrived byte for byte."""
        self.upstream.replies[path] = reply
        response = self.client.get(path, **kwargs)
        if response.status_code == reply.status:
            assert response.content == reply.body, f"{path}: body changed on the way"
        return response

    def logged(self, *paths: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The access-log entries of ``paths`` (each requested once), waiting until Envoy wrote them."""
        deadline = time.monotonic() + timeout
        while True:
            # Envoy flushes log files every 10 s unless told to; reopening the logs flushes them now.
            request = urllib.request.Request(f"http://{LOOPBACK}:{self.envoy.admin_port}/reopen_logs", method="POST")
            with urllib.request.urlopen(request, timeout=2):  # fixed loopback admin URL
                pass
            if self.log_path.exists():
                for line in self.log_path.read_text().splitlines():
                    entry = json.loads(line)
                    self.seen[entry["path"]] = entry
            if all(p in self.seen for p in paths):
                return [self.seen[p] for p in paths]
            if time.monotonic() > deadline:
                missing = [p for p in paths if p not in self.seen]
                raise AssertionError(f"no access-log entry for {missing} after {timeout} s")
            time.sleep(0.05)

    def ext_proc_stat(self, name: str) -> int:
        return self.envoy.stats(f"^{EXT_PROC_STATS}{name}$").get(EXT_PROC_STATS + name, 0)


def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "body-meters.yaml"
    path.write_text(CATALOG)
    return path


@pytest.fixture
def make_stack(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    cleanups: list[Callable[[], None]] = []
    catalog: CompiledCatalog = compile_catalog_text(CATALOG, "body-meters.yaml")

    def make(
        *,
        service: type[BodyMeterService] = BodyMeterService,
        send_response_headers: bool = False,
        body_mode: str | None = None,
    ) -> Stack:
        upstream = JsonUpstream()
        cleanups.append(upstream.close)
        meter = MeterServer(service(lambda: catalog))
        cleanups.append(meter.close)
        meter.start()
        tollway = tollway_factory({"TOLLWAY_CATALOG": str(catalog_file(tmp_path))})
        key = create_key(valkey_fresh.url, "acme")["api_key"]
        done = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "acme", "--plan", "pro", "--json")
        assert done.code == 0, done.stderr
        log_path = tmp_path / f"access-{len(cleanups)}.log"

        def transform(cfg: envoy_config.EnvoyConfig) -> envoy_config.EnvoyConfig:
            metered = with_body_meters(
                cfg, meter.endpoint, METERED_PREFIXES, send_response_headers=send_response_headers
            )
            if body_mode is not None:
                for hcm_filter in metered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]:
                    for http_filter in hcm_filter["typed_config"]["http_filters"]:
                        if http_filter["name"] == EXT_PROC_FILTER:
                            http_filter["typed_config"]["processing_mode"]["response_body_mode"] = body_mode
            return file_access_log(log_path)(metered)

        envoy = envoy_factory(
            "http",
            endpoints={"tollway_http": [tollway.http_endpoint], "upstream": [upstream.endpoint]},
            transform=transform,
        )
        client = httpx.Client(base_url=envoy.base_url, headers={"authorization": f"Bearer {key}"}, timeout=10)
        cleanups.append(client.close)
        return Stack(envoy, client, upstream, meter, log_path)

    yield make
    for cleanup in reversed(cleanups):
        cleanup()


# --- metering ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("send_response_headers", [False, True], ids=["body-only", "headers-then-body"])
def test_metered_routes_record_the_json_field_and_pass_the_body_unchanged(
    make_stack: Callable[..., Stack], send_response_headers: bool
) -> None:
    stack = make_stack(send_response_headers=send_response_headers)
    completion = as_json({"id": "c1", "usage": {"total_tokens": 1234, "prompt_tokens": 34}, "text": "é ✓"})
    assert stack.get("/v1/completions/plain", Reply(completion)).status_code == 200
    # Chunked, in 7-byte pieces, with a decimal: the body still arrives whole and the value exactly.
    chunked = b'{"usage": {"total_tokens": 77.50, "prompt_tokens": 0E+3}, "pad": "' + b"x" * 5000 + b'"}'
    response = stack.get("/v1/completions/chunked", Reply(chunked, chunk=7))
    assert response.status_code == 200
    assert "content-length" not in response.headers  # still streamed to the client, not re-framed
    # A reports response meters export-rows only: the token meters do not list the reports feature.
    report = as_json({"meta": {"row_count": 42}, "usage": {"total_tokens": 9}})
    assert stack.get("/v1/reports/r1", Reply(report)).status_code == 200

    plain, chunk, rows = stack.logged("/v1/completions/plain", "/v1/completions/chunked", "/v1/reports/r1")
    assert plain["meters"] == {"tokens": "1234", "prompt-tokens": "34"}
    assert chunk["meters"] == {"tokens": "77.5", "prompt-tokens": "0"}
    assert rows["meters"] == {"export-rows": "42"}
    assert [plain["feature"], chunk["feature"], rows["feature"]] == ["completions", "completions", "reports"]
    assert stack.service.stats.metered == {"tokens": 2, "prompt-tokens": 2, "export-rows": 1}
    assert stack.service.stats.streams == 3
    assert stack.ext_proc_stat("streams_started") == 3
    assert stack.ext_proc_stat("failure_mode_allowed") == 0


def test_a_route_without_body_meters_opens_no_stream(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    for n in range(5):
        assert stack.get(f"/v1/items/{n}", Reply(as_json({"usage": {"total_tokens": n}}))).status_code == 200
    entries = stack.logged(*(f"/v1/items/{n}" for n in range(5)))
    assert all(e["meters"] is None and e["feature"] == "items-read" for e in entries), entries
    assert stack.service.stats.streams == 0
    assert stack.ext_proc_stat("streams_started") == 0
    # A refused request on a metered route: Envoy still runs ext_proc on the local 401 reply (one stream),
    # and the server meters nothing (no feature: ext_authz admitted nothing).
    refused = stack.client.get("/v1/completions/x", headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401
    (entry,) = stack.logged("/v1/completions/x")
    assert entry["meters"] is None
    assert stack.service.stats.metered == {}
    assert stack.service.stats.streams == 1
    assert stack.service.stats.skipped == {"no_feature": 1}
    # The counter works: one metered request opens exactly one stream.
    assert stack.get("/v1/completions/ok", Reply(as_json({"usage": {"total_tokens": 1}}))).status_code == 200
    assert stack.logged("/v1/completions/ok")[0]["meters"] == {"tokens": "1"}  # no usage.prompt_tokens: absent
    assert stack.ext_proc_stat("streams_started") == stack.service.stats.streams


def test_bodies_that_give_no_quantity_leave_the_meter_absent_and_the_response_intact(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    cases = {
        "/v1/completions/malformed": Reply(b'{"usage": {"total_tokens": 12'),
        "/v1/completions/html": Reply(b"<html>upstream says hi</html>", content_type="text/html"),
        "/v1/completions/string": Reply(as_json({"usage": {"total_tokens": "1234"}})),
        "/v1/completions/negative": Reply(as_json({"usage": {"total_tokens": -3}})),
        "/v1/completions/boolean": Reply(as_json({"usage": {"total_tokens": True}})),
        "/v1/completions/error": Reply(as_json({"usage": {"total_tokens": 5}}), status=500),
        # Over the server's 1 MiB: the client gets all of it, the meter is absent. The first two are the
        # shapes that leave the client hanging with Envoy's BUFFERED_PARTIAL mode (one read, ~1-2 MiB).
        "/v1/completions/large-length": Reply(big_completion(1_100_000)),
        "/v1/completions/large-one-chunk": Reply(big_completion(1_100_000), chunk=2_000_000),
        "/v1/completions/huge": Reply(big_completion(3_000_000), chunk=65536),
    }
    for path, reply in cases.items():
        started = time.monotonic()
        response = stack.get(path, reply, timeout=5)
        assert response.status_code == reply.status, path
        assert len(response.content) == len(reply.body), path
        assert time.monotonic() - started < 2, f"{path}: the response took too long to finish"
    entries = stack.logged(*cases)
    assert [e["meters"] for e in entries] == [None] * len(cases), entries
    assert [e["status"] for e in entries] == [r.status for r in cases.values()]
    absent = stack.service.stats.absent
    assert absent[("tokens", "invalid_json")] == 2  # malformed, html (the content type is not sent: parse decides)
    assert absent[("tokens", "not_a_number")] == 2
    assert absent[("tokens", "negative")] == 1
    assert absent[("tokens", "too_large")] == 3
    assert stack.service.stats.skipped["not_2xx"] == 1
    assert stack.service.stats.errors == 0
    assert stack.ext_proc_stat("failure_mode_allowed") == 0


def test_a_body_in_many_chunks_is_gathered_up_to_the_limit(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    near_limit = big_completion(1_000_000, tokens=987654321)
    assert len(near_limit) < 1 << 20
    response = stack.get("/v1/completions/near-limit", Reply(near_limit, chunk=100_000, pause=0.02), timeout=5)
    assert response.status_code == 200
    assert stack.logged("/v1/completions/near-limit")[0]["meters"] == {"tokens": "987654321"}
    assert stack.ext_proc_stat("stream_msgs_sent") > 5  # it did arrive in several messages


def big_completion(pad: int, tokens: int = 5) -> bytes:
    return as_json({"usage": {"total_tokens": tokens}, "pad": "y" * pad})


@pytest.mark.parametrize("body_mode", ["BUFFERED", "BUFFERED_PARTIAL"])
def test_why_streamed_envoys_buffered_modes_break_responses_over_its_buffer_limit(
    make_stack: Callable[..., Stack], body_mode: str
) -> None:
    """Pins the Envoy 1.40 behaviour behind ``response_body_mode: STREAMED`` (if this starts failing after an
    Envoy upgrade, the buffered modes may have become usable: one message per response instead of two)."""
    stack = make_stack(body_mode=body_mode)
    path = "/v1/completions/just-over-1mib"
    stack.upstream.replies[path] = Reply(big_completion(1_100_000))
    if body_mode == "BUFFERED":  # the client's response breaks, failure_mode_allow notwithstanding
        # (here a cut-off body; with other sizes and timings a 500 instead of the answer)
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete"):
            stack.client.get(path, timeout=5)
    else:  # every byte arrives, but the response never ends
        with pytest.raises(httpx.ReadTimeout):
            stack.client.get(path, timeout=2)


# --- failures of the body-meter server never reach the client ----------------------------------------------------


def test_meter_server_down_the_client_still_gets_the_response(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.meter.stop()
    body = as_json({"usage": {"total_tokens": 1234}})
    started = time.monotonic()
    for n in range(3):
        assert stack.get(f"/v1/completions/down-{n}", Reply(body)).status_code == 200
    assert time.monotonic() - started < 3
    assert stack.get("/v1/completions/down-big", Reply(big_completion(2_000_000), chunk=65536)).status_code == 200
    entries = stack.logged("/v1/completions/down-0", "/v1/completions/down-1", "/v1/completions/down-2")
    assert all(e["meters"] is None for e in entries)
    assert stack.ext_proc_stat("failure_mode_allowed") >= 3


def test_a_slow_meter_server_costs_the_meter_not_the_response(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(service=SlowBodyMeterService)
    started = time.monotonic()
    response = stack.get("/v1/completions/slow", Reply(as_json({"usage": {"total_tokens": 8}})))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < SlowBodyMeterService.delay  # released at message_timeout (0.2 s), not when the server answers
    assert stack.logged("/v1/completions/slow")[0]["meters"] is None
    assert stack.ext_proc_stat("message_timeouts") == 1


# --- the documented snippet is the same config, and a valid one ---------------------------------------------------

SNIPPET = envoy_config.repo_envoy_dir() / "ext-proc-body-meters.yaml"


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_the_snippet_matches_with_body_meters_and_validates_inside_the_http_template(tmp_path: Path) -> None:
    snippet = envoy_config.load(SNIPPET)
    ok, output = validate(SNIPPET)
    assert ok, output
    endpoint = (LOOPBACK, 9194)
    template = envoy_config.load(envoy_config.template_path("http"))
    built = with_body_meters(template, endpoint, ["/v1/reports/"])

    # The same filter, per-route configs and cluster as the transform produces.
    (snippet_filter,) = [f for f in _hcm(snippet)["http_filters"] if f["name"] == EXT_PROC_FILTER]
    (built_filter,) = [f for f in _hcm(built)["http_filters"] if f["name"] == EXT_PROC_FILTER]
    assert snippet_filter == built_filter
    snippet_routes = _hcm(snippet)["route_config"]["virtual_hosts"][0]["routes"]
    built_routes = _hcm(built)["route_config"]["virtual_hosts"][0]["routes"]
    assert snippet_routes == built_routes
    (snippet_cluster,) = [c for c in snippet["static_resources"]["clusters"] if c["name"] == BODY_METER_CLUSTER]
    assert snippet_cluster == ext_proc_cluster([endpoint])

    # Filter order in the real template: ext_authz, ext_proc, router.
    names = [f["name"] for f in _hcm(built)["http_filters"]]
    assert names[names.index(envoy_config.EXT_AUTHZ_FILTER) + 1] == EXT_PROC_FILTER
    assert names[-1] == "envoy.filters.http.router"

    # Following the snippet's three steps by hand on the template gives a valid config too.
    by_hand = envoy_config.load(envoy_config.template_path("http"))
    filters = _hcm(by_hand)["http_filters"]
    filters.insert(len(filters) - 1, snippet_filter)
    _hcm(by_hand)["route_config"]["virtual_hosts"][0]["routes"] = snippet_routes
    by_hand["static_resources"]["clusters"].append(snippet_cluster)
    assert by_hand == built
    for name, cfg in (("by-hand", by_hand), ("metering-cluster", _on_metering_cluster(template))):
        ok, output = validate(envoy_config.write(cfg, tmp_path / f"{name}.yaml"))
        assert ok, f"{name}: {output}"


def _on_metering_cluster(template: dict[str, Any]) -> dict[str, Any]:
    """With the template's own metering cluster (when it has one) instead of a cluster of its own."""
    if "tollway_metering" not in envoy_config.cluster_names(template):
        return with_body_meters(template, (LOOPBACK, 9194), ["/v1/reports/"])
    cfg = with_body_meters(template, (LOOPBACK, 9195), ["/v1/reports/"], cluster="tollway_metering")
    assert BODY_METER_CLUSTER not in envoy_config.cluster_names(cfg)
    return cfg
