"""A sample upstream API that echoes what reached it, for demos and tests.

Every request is answered ``200`` with JSON::

    {"method": "GET", "path": "/v1/x?q=1", "headers": {"x-tollway-customer": "..."}, "body_length": 0}

``path`` is the request target exactly as received (query included); header names are lowercased
and repeated headers joined with ", ". Keep-alive and pipelining are supported.

For tests and demos of metering, query parameters shape the answer: ``status=503`` (any 200–599),
``pad=N`` (N extra bytes in a ``pad`` member), ``chunked=1`` (Transfer-Encoding: chunked, in
several chunks). With ``--served-log FILE`` the x-request-id of every answered request is appended
to FILE (one write per request, before the answer), so a test can compare what was served with what
was metered.

Run: ``python -m tollway.demo.upstream --host 127.0.0.1 --port 8080``. Stops cleanly on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import Sequence
from typing import NamedTuple, cast
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop

from tollway.listen import bind_tcp

logger = logging.getLogger("tollway.demo.upstream")

_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class EchoProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer each request with its echo."""

    def __init__(self, connections: set["EchoProtocol"], served_log: int = -1) -> None:
        self._connections = connections
        self._served_log = served_log
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body_length = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(_BAD_REQUEST)
        except httptools.HttpParserError:
            self._reply_and_close(_BAD_REQUEST)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body_length = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_body(self, body: bytes) -> None:
        self._body_length += len(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        method = self._parser.get_method().decode("latin-1")
        path = self._url.decode("latin-1")
        options = _options(path)
        echo: dict[str, object] = {
            "method": method,
            "path": path,
            "headers": self._headers,
            "body_length": self._body_length,
        }
        if options.pad:
            echo["pad"] = "x" * options.pad
        payload = json.dumps(echo, separators=(",", ":")).encode()
        keep_alive = self._parser.should_keep_alive()
        framing = "Transfer-Encoding: chunked" if options.chunked else f"Content-Length: {len(payload)}"
        head = (
            f"HTTP/1.1 {options.status} {_REASONS.get(options.status, 'Status')}\r\n"
            "Content-Type: application/json\r\n"
            f"{framing}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        if self._served_log >= 0:
            request_id = self._headers.get("x-request-id", "")
            os.write(self._served_log, f"{request_id}\n".encode())
        if method == "HEAD":
            transport.write(head)
        elif options.chunked:
            transport.write(head + _chunked(payload))
        else:
            transport.write(head + payload)
        if not keep_alive:
            transport.close()

    def _reply_and_close(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class _Options(NamedTuple):
    status: int = 200
    pad: int = 0
    chunked: bool = False


def _options(target: str) -> _Options:
    query = urlsplit(target).query
    if not query:
        return _Options()
    values = parse_qs(query)

    def number(name: str, low: int, high: int, default: int) -> int:
        text = values.get(name, [""])[0]
        return min(max(int(text), low), high) if text.isdigit() else default

    return _Options(
        status=number("status", 200, 599, 200),
        pad=number("pad", 0, 1 << 24, 0),
        chunked=values.get("chunked", [""])[0] == "1",
    )


def _chunked(payload: bytes, pieces: int = 3) -> bytes:
    size = max(1, -(-len(payload) // pieces))
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def serve(host: str, port: int, served_log: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then close the listener and every open connection."""
    loop = asyncio.get_running_loop()
    connections: set[EchoProtocol] = set()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log_fd = -1
    if served_log:
        log_fd = os.open(served_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    server = await loop.create_server(lambda: EchoProtocol(connections, log_fd), sock=bind_tcp(host, port))
    logger.info("demo upstream listening on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        for connection in list(connections):
            connection.close()
        await server.wait_closed()
        if log_fd >= 0:
            os.close(log_fd)
    logger.info("demo upstream stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollway.demo.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--served-log", help="append the x-request-id of every answered request to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port, args.served_log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
