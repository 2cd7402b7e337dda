"""Tollway in this test process, on its own event loop in a background thread, with an injected clock.

``tollway.server.serve`` is the same wiring ``tollway serve`` runs; only the clock differs, so a test can
put Tollway at any instant (a month boundary, a DST change) and move it from the test thread::

    with inprocess_tollway(valkey.url, catalog, clock=ManualClock(start)) as tollway:
        envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
        ...
        tollway.clock.advance(60)

``ManualClock`` is a plain object read by the loop thread and advanced by the test thread: fine for tests
(an attribute assignment is atomic under the GIL).
"""

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tollway_cli import TEST_PEPPER
from tollway.clock import ManualClock
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.server import serve
from tollway.settings import Settings

START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class InProcessTollway:
    http_port: int
    grpc_port: int
    clock: ManualClock

    @property
    def http_endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self.http_port)

    @property
    def grpc_endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self.grpc_port)


@contextlib.contextmanager
def inprocess_tollway(
    redis_url: str, catalog: Path | None, *, clock: ManualClock, grpc: bool = False, **more: Any
) -> Iterator[InProcessTollway]:
    """Serve until the block ends; then stop (drain) and join the thread. Raises if it cannot start.
    ``more``: further settings (e.g. ``jwt_issuers``, ``spool_dir``)."""
    http_port, grpc_port = free_ports(2)
    settings = Settings(
        redis_url=redis_url,
        pepper=TEST_PEPPER,  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
        host=LOOPBACK,
        http_port=http_port,
        grpc_port=grpc_port if grpc else 0,
        admin_port=0,  # off: no fixed port to clash on
        catalog=catalog,
        shutdown_grace_s=2.0,
        **more,
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(
                serve(settings, clock=clock, stop=stop, handle_signals=False, on_ready=lambda _core: ready.set())
            )
        except BaseException as exc:  # reported to the test thread
            failure.append(exc)
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=run, name="inprocess-tollway", daemon=True)
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"in-process Tollway not ready after {START_TIMEOUT_S} s")
        if failure:
            raise RuntimeError("in-process Tollway failed to start") from failure[0]
        yield InProcessTollway(http_port, grpc_port if grpc else 0, clock)
    finally:
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("in-process Tollway did not stop within 10 s")
