"""A small HTTP/1.1 client for webhook deliveries: ``POST`` with a body, keep-alive connections pooled per
origin, TLS with certificate and host name checks for ``https``, no redirects followed, the whole attempt
(connect, send, answer) under one timeout, the answer's body read and discarded (at most ``MAX_BODY``).

Why not httpx: on the bench's 2-core machine httpx/httpcore spent most of its time in its connection
pool's bookkeeping (≈ 300 deliveries/s with 32–256 connections); this client does ≈ 10× that. Any error
closes the connection; a reused connection that fails before any byte of an answer is tried once more on
a fresh one (the server closed it while idle; the delivery is idempotent by ``webhook-id`` anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 1 << 20
MAX_IDLE: Final = 256


class HttpError(Exception):
    """The attempt got no usable answer (connection refused or reset, malformed answer)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


Resolve = Callable[[str, int], Awaitable[Sequence[object]]]
"""``(host, port)`` → the checked addresses to connect to (``notifications.endpoints.resolve_and_check``
with the allow-private setting bound); raises (``ValueError``) for a host that must not be called."""


class HttpPoster:
    """``resolve``: when given, each new connection goes to the first address it returns (the name is not
    resolved a second time, so a DNS answer that changes after the check cannot redirect it; TLS still
    verifies the certificate against the host name)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, resolve: Resolve | None = None) -> None:
        self._ssl = ssl_context or ssl.create_default_context()
        self._resolve = resolve
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Answer:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        lines = [f"POST {target} HTTP/1.1", f"host: {host_header}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(timeout_s):
            pooled = self._take(origin)
            if pooled is not None:
                try:
                    return await self._exchange(origin, pooled, request)
                except _Stale:
                    pass  # closed while idle: once more on a fresh connection
            connection = await self._connect(origin)
            try:
                return await self._exchange(origin, connection, request)
            except _Stale as exc:
                raise HttpError("connection closed before an answer") from exc

    def _take(self, origin: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            reader, writer = idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> Connection:
        scheme, host, port = origin
        address = host
        if self._resolve is not None:
            found = await self._resolve(host, port)
            if not found:
                raise HttpError(f"{host} resolves to no address")
            address = str(found[0])
        try:
            if scheme == "https":
                return await asyncio.open_connection(address, port, ssl=self._ssl, server_hostname=host, limit=MAX_HEAD)
            return await asyncio.open_connection(address, port, limit=MAX_HEAD)
        except ssl.SSLError as exc:
            raise HttpError(f"TLS: {exc.reason or exc}") from exc
        except OSError as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc

    async def _exchange(self, origin: tuple[str, str, int], connection: Connection, request: bytes) -> Answer:
        reader, writer = connection
        keep = False
        try:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise _Stale from exc
            except asyncio.LimitOverrunError as exc:
                raise HttpError("answer headers too large") from exc
            status, headers = _parse_head(head)
            keep = await _drain_body(reader, headers, status) and headers.get("connection", "").lower() != "close"
            return Answer(status, headers)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise HttpError(f"connection lost: {exc}") from exc
        finally:
            if keep:
                idle = self._idle.setdefault(origin, [])
                if len(idle) < MAX_IDLE:
                    idle.append(connection)
                else:
                    writer.close()
            else:
                writer.close()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        self._idle.clear()


class _Stale(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1")
    first, _, rest = text.partition("\r\n")
    version, _, tail = first.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x answer: {first[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(code), headers


async def _drain_body(reader: asyncio.StreamReader, headers: Mapping[str, str], status: int) -> bool:
    """Read the answer's body and drop it; whether the connection can be reused."""
    if status in (204, 304) or 100 <= status < 200:
        return True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise HttpError("malformed chunked answer") from exc
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return True
            total += size
            if total > MAX_BODY:
                return False
            await reader.readexactly(size + 2)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpError("malformed content-length")
        if int(length) > MAX_BODY:
            return False
        await reader.readexactly(int(length))
        return True
    return False  # the body runs to the end of the connection: not read, not reused
