"""Envoy ext_authz over HTTP (``http_service``): a lean asyncio HTTP/1.1 server on httptools (llhttp).

Envoy sends one check per downstream request on pooled keep-alive connections; a 200 admits (headers
named in ``allowed_upstream_headers`` go upstream), anything else is returned to the client as is.
A verdict that needs no I/O is written straight from the parser callback; others go through a
per-connection worker task that keeps responses in request order (HTTP/1.1 pipelining).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import lru_cache
from http import HTTPStatus
from typing import Final, cast

import httptools

from tollway.extproc.check import Allow, CheckRequest, Decision, Deny
from tollway.extproc.decision import Decider
from tollway.extproc.faults import log_unexpected
from tollway.listen import bind_tcp

log = logging.getLogger(__name__)

# Envoy's HTTP ext_authz client: headers to strip from the original request before it goes upstream.
HEADERS_TO_REMOVE: Final = "x-envoy-auth-headers-to-remove"
_MAX_QUEUED: Final = 64
_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


def _safe(value: str) -> str:
    """Header values we emit never contain CR/LF (identifiers are validated; this is the backstop)."""
    if "\r" in value or "\n" in value:
        return value.replace("\r", "").replace("\n", "")
    return value


def render_response(decision: Decision, keep_alive: bool, head: bool) -> bytes:
    """Serialize a verdict as an HTTP/1.1 response. An admit without per-request client headers repeats
    for every request of a caller, so it comes from a cache; one carrying RateLimit state is unique."""
    if isinstance(decision, Allow) and decision.repeats and not decision.client_headers:
        return _render_allow(decision, keep_alive)
    return _render(decision, keep_alive, head)


@lru_cache(maxsize=8192)
def _render_allow(decision: Allow, keep_alive: bool) -> bytes:
    return _render(decision, keep_alive, False)


def _render(decision: Decision, keep_alive: bool, head: bool) -> bytes:
    parts: list[str] = []
    if isinstance(decision, Allow):
        status, body = 200, b""
        for name, value in decision.upstream_headers:
            parts.append(f"{name}: {_safe(value)}\r\n")
        for name, value in decision.client_headers:
            parts.append(f"{name}: {_safe(value)}\r\n")
        if decision.remove_headers:
            parts.append(f"{HEADERS_TO_REMOVE}: {','.join(decision.remove_headers)}\r\n")
    else:
        status, body = decision.status, decision.body
        for name, value in decision.headers:
            parts.append(f"{name}: {_safe(value)}\r\n")
    parts.append(f"content-length: {len(body)}\r\n")
    if not keep_alive:
        parts.append("connection: close\r\n")
    parts.append("\r\n")
    head_bytes = _status_line(status) + "".join(parts).encode("latin-1")
    return head_bytes if head else head_bytes + body


class _Connection(asyncio.Protocol):
    """One Envoy connection. Parser callbacks are invoked by httptools."""

    def __init__(self, server: HttpAuthzServer) -> None:
        self._server = server
        self._core = server.core
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body_bytes = 0
        self._oversize: Deny | None = None
        self._in_message = False
        self._queue: deque[tuple[CheckRequest, bool, bool]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self._closing = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        if self._worker is not None:
            self._worker.cancel()
        self._server.connection_closed()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrade-not-supported", "Upgrade not supported", "Protocol upgrades are refused.")
        except httptools.HttpParserError:
            self._fail(400, "malformed-request", "Malformed request", "The request is not valid HTTP/1.1.")

    # -- httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body_bytes = 0
        self._oversize = None

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes <= self._server.max_header_bytes:
            self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._server.max_header_bytes:
            if self._oversize is None:
                self._oversize = self._core.refusals.bad_request(
                    431,
                    "headers-too-large",
                    "Request headers too large",
                    "The request headers are too large.",
                )
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous},{text}"

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._server.max_body_bytes and self._oversize is None:
            self._oversize = self._core.refusals.bad_request(
                413, "body-too-large", "Request body too large", "The request body is too large."
            )

    def on_message_complete(self) -> None:
        self._in_message = False
        parser = self._parser
        method = parser.get_method().decode("latin-1")
        keep_alive = parser.should_keep_alive() and not self._closing
        head = method == "HEAD"
        if self._oversize is not None:
            self._respond(self._oversize, False, head)
            return
        headers = self._headers
        request = CheckRequest(method, self._url.decode("latin-1"), headers, headers.get("x-request-id", ""))
        if self._worker is None:
            decision = self._decide_now(request)
            if decision is not None:
                self._respond(decision, keep_alive, head)
                return
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        self._queue.append((request, keep_alive, head))
        if len(self._queue) >= _MAX_QUEUED and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    # -- internals -------------------------------------------------------------------------------------
    async def _drain(self) -> None:
        tried = True  # the request that started the worker was just tried in process
        try:
            while self._queue:
                request, keep_alive, head = self._queue[0]
                # A request queued behind one that waited may well be decidable in process (a cached key,
                # a capacity lease): try that first, and only then the path that may await Redis.
                decision = None if tried else self._decide_now(request)
                tried = False
                if decision is None:
                    try:
                        decision = await self._core.decide(request)
                    except Exception as error:  # the last-resort guard: answer, keep the connection
                        log_unexpected(error, request.request_id)
                        decision = self._core.refusals.internal_error(request.request_id)
                self._queue.popleft()
                if not self._respond(decision, keep_alive and not self._closing, head):
                    return
                if self._paused and len(self._queue) < _MAX_QUEUED // 2 and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
        finally:
            self._worker = None
            if self._closing and not self._in_message and self._transport is not None:
                self._transport.close()

    def _decide_now(self, request: CheckRequest) -> Decision | None:
        try:
            return self._core.decide_now(request)
        except Exception as error:  # the last-resort guard: answer, keep the connection
            log_unexpected(error, request.request_id)
            return self._core.refusals.internal_error(request.request_id)

    def _respond(self, decision: Decision, keep_alive: bool, head: bool) -> bool:
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(render_response(decision, keep_alive, head))
        if not keep_alive:
            transport.close()
            return False
        return True

    def _fail(self, status: int, slug: str, title: str, detail: str) -> None:
        self._respond(self._core.refusals.bad_request(status, slug, title, detail), False, False)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def begin_shutdown(self) -> None:
        """Finish what has been received, then close; idle connections close at once."""
        self._closing = True
        if self._worker is None and not self._in_message and self._transport is not None:
            self._transport.close()


class HttpAuthzServer:
    def __init__(self, core: Decider, max_header_bytes: int = 65536, max_body_bytes: int = 1 << 20) -> None:
        self.core = core
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()

    async def start(self, host: str, port: int) -> int:
        """Listen (no SO_REUSEPORT: one process per port) and return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=bind_tcp(host, port))
        return int(self._server.sockets[0].getsockname()[1])

    def connection_closed(self) -> None:
        if not self.connections:
            self._all_closed.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight checks finish (up to ``grace`` seconds), then close the rest."""
        if self._server is not None:
            self._server.close()
        if self.connections:
            self._all_closed.clear()
            for connection in list(self.connections):
                connection.begin_shutdown()
            if self.connections:
                try:
                    async with asyncio.timeout(grace):
                        await self._all_closed.wait()
                except TimeoutError:
                    log.warning("closing %d connection(s) after the %.1fs grace", len(self.connections), grace)
            for connection in list(self.connections):
                connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
