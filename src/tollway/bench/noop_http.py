"""A no-op HTTP ext_authz server on Tollway's HTTP stack: every check is admitted with no work.

``python -m tollway.bench.noop_http --port N`` serves until SIGTERM/SIGINT. It measures the floor of the
HTTP path: Envoy's HTTP ext_authz client plus :class:`~tollway.extproc.http_server.HttpAuthzServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from typing import Final

import uvloop

from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.http_server import HttpAuthzServer
from tollway.extproc.problems import Refusals

_ADMIT: Final = Allow(upstream_headers=())


class AlwaysAdmit:
    """A :class:`~tollway.extproc.decision.Decider` that admits every request, synchronously."""

    def __init__(self) -> None:
        self._refusals = Refusals()

    @property
    def refusals(self) -> Refusals:
        return self._refusals

    def decide_now(self, request: CheckRequest) -> Decision | None:
        return _ADMIT

    async def decide(self, request: CheckRequest) -> Decision:
        return _ADMIT


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = HttpAuthzServer(AlwaysAdmit())
    await server.start(host, port)
    await stop.wait()
    await server.shutdown(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollway.bench.noop_http", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
