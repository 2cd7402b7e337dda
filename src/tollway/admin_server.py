"""The admin endpoint, on its own port (``TOLLWAY_ADMIN_PORT``, 0 = off), never the ext_authz port: a path
there is a customer's request.

- ``GET /healthz``: what an operator needs to see — the version, the live catalog's name, version and digest
  (and whether the last catalog change was refused), the spool and the loader's counters. 200 while the
  process answers.
- ``GET /metrics``: Prometheus metrics in the text format (``tollway.observability.tollway_metrics``).
- ``GET /livez``: the process is alive (its event loop answers). Always 200; for a liveness probe.
- ``GET /readyz``: ready to take traffic: the ext_authz listeners are open and every injected readiness
  check passes (``readiness_checks``: Redis answers a PING within a bound — once it has answered, an
  outage within ``TOLLWAY_STALE_MAX_S`` is only reported, see :class:`RedisProbe`; with metering on, the
  spool takes a write). 200 with each check's result, else 503 ``application/problem+json`` (RFC 9457) naming
  what is not ready. For a readiness probe and the image's HEALTHCHECK.

ClickHouse is deliberately not a readiness check: while it is away rows wait in the spool and the API is
unaffected. ``/readyz`` reports its reachability under ``reported`` (``clickhouse``: ``ok`` or why the
loader's last insert failed) without refusing traffic for it; ``/healthz`` has the loader's counters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import httptools
from redis.exceptions import RedisError

from tollway import __version__
from tollway.listen import bind_tcp
from tollway.redis_types import RedisClient
from tollway.usage.spool import SpoolWriter

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 16384

Readiness = Callable[[], Awaitable[Mapping[str, str | None]]]
"""Readiness checks by name: ``None`` when one passes, else why not (one line, never a secret)."""

READY_BOUND_S: Final = 2.0
"""The most a ``/readyz`` answer waits for the injected checks (each has its own, shorter bound)."""
REDIS_PING_BOUND_S: Final = 0.5
SPOOL_WRITE_BOUND_S: Final = 0.5
DEFAULT_PROBLEM_TYPE_BASE: Final = "https://tollway.dev/problems/"


class AdminServer:
    def __init__(
        self,
        describe: Callable[[], dict[str, object]],
        ready: Readiness | None = None,
        *,
        problem_type_base: str = DEFAULT_PROBLEM_TYPE_BASE,
        metrics: Callable[[], str] | None = None,
        dependencies: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        """``dependencies``: what ``/readyz`` reports without letting it decide (ClickHouse: rows wait in
        the spool while it is away, so it is reported, never a reason to refuse traffic)."""
        self._describe = describe
        self._ready = ready
        self._metrics = metrics
        self._dependencies = dependencies
        self._problem_type = f"{problem_type_base}not-ready"
        self._serving = False
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, sock=bind_tcp(host, port))
        return int(self._server.sockets[0].getsockname()[1])

    def set_serving(self) -> None:
        """The ext_authz listeners are open: from now on ``/readyz`` depends on the checks alone."""
        self._serving = True

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def health(self) -> dict[str, object]:
        return {"status": "serving", "version": __version__, **self._describe()}

    async def readiness(self) -> tuple[bool, dict[str, str | None]]:
        """(ready, each check → ``None`` or why it fails)."""
        results: dict[str, str | None] = {
            "listeners": None if self._serving else "the ext_authz listeners are not open yet"
        }
        if self._ready is not None:
            try:
                async with asyncio.timeout(READY_BOUND_S):
                    results.update(await self._ready())
            except TimeoutError:
                results["checks"] = f"the readiness checks did not finish within {READY_BOUND_S:g} s"
            except Exception as exc:  # a broken check is a reason to refuse traffic, never a 500
                log.exception("readiness check failed")
                results["checks"] = f"the readiness checks failed: {type(exc).__name__}"
        return all(reason is None for reason in results.values()), results

    async def _answer(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            return "200 OK", "application/json", json.dumps(self.health()).encode()
        if path == "/livez":
            return "200 OK", "application/json", b'{"status":"alive"}'
        if path == "/metrics" and self._metrics is not None:
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self._metrics().encode()
        if path == "/readyz":
            ready, results = await self.readiness()
            checks = {name: reason or "ok" for name, reason in results.items()}
            reported = dict(self._dependencies()) if self._dependencies is not None else {}
            if ready:
                body: dict[str, object] = {"status": "ready", "checks": checks}
                if reported:
                    body["reported"] = reported
                return "200 OK", "application/json", json.dumps(body).encode()
            problem = {
                "type": self._problem_type,
                "title": "Not ready",
                "status": 503,
                "detail": "; ".join(f"{name}: {reason}" for name, reason in results.items() if reason),
                "checks": checks,
            }
            if reported:
                problem["reported"] = reported
            return "503 Service Unavailable", "application/problem+json", json.dumps(problem).encode()
        return "404 Not Found", "application/problem+json", b'{"status":404,"title":"Not found"}'

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
            if method in ("GET", "HEAD"):
                status, content_type, body = await self._answer(request.path.split("?", 1)[0])
            else:
                status, content_type, body = "404 Not Found", "application/problem+json", b'{"status":404}'
            head = (
                f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                "cache-control: no-store\r\nconnection: close\r\n\r\n"
            ).encode()
            writer.write(head if method == "HEAD" else head + body)
            await writer.drain()
        except (httptools.HttpParserError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


class RedisProbe:
    """The ``redis`` readiness check: a PING answered within ``bound_s``. Once Redis has answered, an
    outage no longer than ``tolerate_s`` (``TOLLWAY_STALE_MAX_S``: while last-known keys and subscriptions
    answer checks under each plan's outage policy) is *reported* under ``reported.redis`` instead of
    refusing traffic: every replica loses the same Redis at once, and a Pod taken out of its Service then
    serves nobody — neither the ``fail_open`` plans' customers nor the others' 503 problems. Before Redis
    first answered, past ``tolerate_s``, or with ``tolerate_s`` 0, it is a reason not to be ready."""

    def __init__(
        self,
        redis: RedisClient,
        bound_s: float = REDIS_PING_BOUND_S,
        tolerate_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._bound_s = bound_s
        self._tolerate_s = tolerate_s
        self._monotonic = monotonic
        self._last_ok: float | None = None
        self._tolerated: str | None = None

    async def check(self) -> tuple[str, str | None] | None:
        """``("redis", None | why not)`` for the checks, or ``None`` while an outage is tolerated."""
        reason = await _ping(self._redis, self._bound_s)
        now = self._monotonic()
        self._tolerated = None
        if reason is None:
            self._last_ok = now
            return ("redis", None)
        down_s = now - self._last_ok if self._last_ok is not None else None
        if down_s is not None and self._tolerate_s > 0 and down_s <= self._tolerate_s:
            self._tolerated = (
                f"unreachable for {down_s:.0f} s (tolerated up to {self._tolerate_s:g} s: last-known keys and "
                f"subscriptions, each plan's outage policy): {reason}"
            )
            return None
        return ("redis", reason)

    def reported(self) -> dict[str, str]:
        return {"redis": self._tolerated} if self._tolerated is not None else {}


def readiness_checks(
    redis: RedisClient | RedisProbe,
    spool: SpoolWriter | None,
    *,
    refuse_when_spool_full: bool,
    redis_bound_s: float = REDIS_PING_BOUND_S,
    spool_bound_s: float = SPOOL_WRITE_BOUND_S,
) -> Readiness:
    """The checks ``tollway serve`` injects: ``redis`` (a PING answered within ``redis_bound_s``; pass a
    :class:`RedisProbe` to tolerate an outage within the staleness bound) and, when metering is on,
    ``spool`` (a small file can be written and removed in the spool directory within ``spool_bound_s``;
    and, if ``refuse_when_spool_full`` — the fail_closed policy — the spool is not full, since every check
    would then be refused)."""
    probe = redis if isinstance(redis, RedisProbe) else RedisProbe(redis, redis_bound_s)
    spool_probe = _SpoolProbe(spool.directory, spool_bound_s) if spool is not None else None

    async def check() -> dict[str, str | None]:
        results: dict[str, str | None] = {}
        redis_result = await probe.check()
        if redis_result is not None:
            results[redis_result[0]] = redis_result[1]
        if spool is not None and spool_probe is not None:
            if refuse_when_spool_full and spool.full:
                results["spool"] = "the spool is full (TOLLWAY_SPOOL_MAX_BYTES) and the policy is fail_closed"
            else:
                results["spool"] = await spool_probe.check()
        return results

    return check


async def _ping(redis: RedisClient, bound_s: float) -> str | None:
    try:
        async with asyncio.timeout(bound_s):
            await redis.ping()
    except TimeoutError:
        return f"no answer to PING within {bound_s * 1000:.0f} ms"
    except RedisError as exc:
        return f"PING failed: {type(exc).__name__}: {str(exc)[:200]}"
    return None


class _SpoolProbe:
    """Writes and removes ``.readyz-<pid>-<random>`` in the spool directory on a thread of its own, so a hung
    disk holds one thread, not the event loop nor the shared executor; while a write is pending no other
    starts. The random part keeps apart processes that share a spool and a pid (containers of one Pod)."""

    def __init__(self, directory: Path, bound_s: float) -> None:
        self._path = directory / f".readyz-{os.getpid()}-{secrets.token_hex(4)}"
        self._bound_s = bound_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz-spool")
        self._pending: Future[None] | None = None

    async def check(self) -> str | None:
        if self._pending is not None and not self._pending.done():
            return f"a test write to {self._path.parent} has not returned yet"
        self._pending = self._executor.submit(self._touch)
        try:
            async with asyncio.timeout(self._bound_s):
                await asyncio.wrap_future(self._pending)
        except TimeoutError:
            return f"a test write to {self._path.parent} took longer than {self._bound_s * 1000:.0f} ms"
        except OSError as exc:
            return f"{self._path.parent} is not writable: {exc.strerror or exc}"
        return None

    def _touch(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ok\n")
        finally:
            os.close(fd)
        os.unlink(self._path)


class _Request:
    def __init__(self) -> None:
        self.path = ""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.path += url.decode("latin-1")

    def on_message_complete(self) -> None:
        self.complete = True
