"""A sample upstream API that echoes what reached it, for demos and tests.

Every request is answered ``200`` with JSON::

    {"method": "GET", "path": "/v1/x?q=1", "headers": {"x-tollway-customer": "..."}, "body_length": 0}

``path`` is the request target exactly as received (query included); header names are lowercased
and repeated headers joined with ", ". Keep-alive and pipelining are supported.

Run: ``python -m tollway.demo.upstream --host 127.0.0.1 --port 8080``. Stops cleanly on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from typing import cast

import httptools
import uvloop

from tollway.listen import bind_tcp

logger = logging.getLogger("tollway.demo.upstream")

_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class EchoProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer each request with its echo."""

    def __init__(self, connections: set["EchoProtocol"]) -> None:
        self._connections = connections
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
        payload = json.dumps(
            {
                "method": method,
                "path": self._url.decode("latin-1"),
                "headers": self._headers,
                "body_length": self._body_length,
            },
            separators=(",", ":"),
        ).encode()
        keep_alive = self._parser.should_keep_alive()
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode()
        transport.write(head if method == "HEAD" else head + payload)
        if not keep_alive:
            transport.close()

    def _reply_and_close(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then close the listener and every open connection."""
    loop = asyncio.get_running_loop()
    connections: set[EchoProtocol] = set()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(lambda: EchoProtocol(connections), sock=bind_tcp(host, port))
    logger.info("demo upstream listening on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        for connection in list(connections):
            connection.close()
        await server.wait_closed()
    logger.info("demo upstream stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollway.demo.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
