"""A local webhook receiver for tests, the bench and the demo: a minimal HTTP/1.1 server (keep-alive,
``Content-Length`` bodies) on a loopback port that verifies every delivery's signature with the
``standardwebhooks`` library and records what it got.

Each path has a behaviour (:attr:`WebhookReceiver.modes`, default ``ok``): ``ok`` (204), ``fail`` (500),
``redirect`` (302 to ``/ok``), ``slow`` (answers after ``slow_s``), ``hang`` (never answers). ``secrets``
maps a path to the secret deliveries to it are verified with (no entry: not verified); a delivery whose
signature does not verify is answered 400 and counted in :attr:`bad_signatures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    webhook_id: str
    timestamp: str
    type: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    slow_s: float = 30.0
    keep_bodies: bool = True
    received: list[Received] = field(default_factory=list)
    count: int = 0
    bad_signatures: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _verifiers: dict[str, Webhook] = field(default_factory=dict)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop the open (keep-alive) connections: the receiver is down, new
        connections are refused and no delivery reaches it over a connection opened before."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None

    def url(self, path: str = "/ok") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def ids(self, path: str | None = None) -> list[str]:
        return [r.webhook_id for r in self.received if path is None or r.path == path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = await self._answer(path, headers, body)
                location = "location: /ok\r\n" if status == 302 else ""
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{location}\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        self.hits[path] = self.hits.get(path, 0) + 1
        mode = self.modes.get(path, "ok")
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        if mode == "fail":
            return 500
        if mode == "redirect":
            return 302
        secret = self.secrets.get(path)
        if secret is not None:
            verifier = self._verifiers.get(secret) or self._verifiers.setdefault(secret, Webhook(secret))
            try:
                verifier.verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                return 400
        self.count += 1
        if self.keep_bodies:
            payload = json.loads(body)
            self.received.append(
                Received(
                    path, headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""), payload["type"], payload
                )
            )
        return 204
