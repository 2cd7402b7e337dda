"""The admin endpoint: ``GET /healthz`` with what an operator needs to see — the live catalog's
name, version and digest, and whether the last catalog change was refused. On its own port
(``TOLLWAY_ADMIN_PORT``, 0 = off), never the ext_authz port: a path there is a customer's request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import httptools

from tollway import __version__
from tollway.listen import bind_tcp

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 16384


class AdminServer:
    def __init__(self, describe: Callable[[], dict[str, object]]) -> None:
        self._describe = describe
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, sock=bind_tcp(host, port))
        return int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def health(self) -> dict[str, object]:
        return {"status": "serving", "version": __version__, **self._describe()}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = _Request()
        parser = httptools.HttpRequestParser(request)
        try:
            received = 0
            while not request.complete:
                data = await asyncio.wait_for(reader.read(4096), 5)
                received += len(data)
                if not data or received > _MAX_REQUEST_BYTES:
                    return
                parser.feed_data(data)
            method = parser.get_method().decode()
            if request.path.split("?", 1)[0] in ("/healthz", "/readyz") and method in ("GET", "HEAD"):
                status, body = "200 OK", json.dumps(self.health()).encode()
            else:
                status, body = "404 Not Found", b'{"status":404,"title":"Not found"}'
            head = (
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + body)
            await writer.drain()
        except (httptools.HttpParserError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


class _Request:
    def __init__(self) -> None:
        self.path = ""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.path += url.decode("latin-1")

    def on_message_complete(self) -> None:
        self.complete = True
