"""``tollway serve``: one process, or ``--workers N`` supervised processes on consecutive ports.

Each worker listens on its own ports (HTTP base+i, gRPC base+i); list each as a separate endpoint in
Envoy's cluster. SO_REUSEPORT is deliberately not used: Envoy keeps one long-lived connection per worker,
so a shared port spreads load unevenly and a stale process could silently take traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvloop

from tollway.cli.numbers import ascii_int
from tollway.server import serve
from tollway.settings import Settings

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the ext_authz servers (HTTP and gRPC)")
    parser.add_argument("--host", help="listen address (TOLLWAY_HOST)")
    parser.add_argument("--http-port", type=ascii_int, help="HTTP ext_authz port, 0 = off (TOLLWAY_HTTP_PORT)")
    parser.add_argument("--grpc-port", type=ascii_int, help="gRPC ext_authz port, 0 = off (TOLLWAY_GRPC_PORT)")
    parser.add_argument("--workers", type=ascii_int, help="processes, one port pair each (TOLLWAY_WORKERS)")


def apply_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    updates = {
        name: getattr(args, name)
        for name in ("host", "http_port", "grpc_port", "workers")
        if getattr(args, name, None) is not None
    }
    return Settings.model_validate({**settings.model_dump(), **updates}) if updates else settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = apply_overrides(args, settings)
    settings.pepper_bytes()  # fail fast, before any port is opened
    if settings.workers > 1:
        return asyncio.run(_supervise(settings))
    uvloop.run(serve(settings))
    return 0


async def _supervise(settings: Settings) -> int:
    children: list[asyncio.subprocess.Process] = []
    for index in range(settings.workers):
        env = dict(os.environ)
        env["TOLLWAY_WORKERS"] = "1"
        env["TOLLWAY_HTTP_PORT"] = str(settings.http_port + index if settings.http_port else 0)
        env["TOLLWAY_GRPC_PORT"] = str(settings.grpc_port + index if settings.grpc_port else 0)
        env["TOLLWAY_ADMIN_PORT"] = str(settings.admin_port + index if settings.admin_port else 0)
        env["TOLLWAY_METERING_PORT"] = str(settings.metering_port + index if settings.metering_port else 0)
        env["TOLLWAY_HOST"] = settings.host
        child = await asyncio.create_subprocess_exec(sys.executable, "-m", "tollway", "serve", env=env)
        log.info(
            "worker %d: pid %d, http %s, grpc %s, admin %s, metering %s",
            index,
            child.pid,
            env["TOLLWAY_HTTP_PORT"],
            env["TOLLWAY_GRPC_PORT"],
            env["TOLLWAY_ADMIN_PORT"],
            env["TOLLWAY_METERING_PORT"],
        )
        children.append(child)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    waits = [asyncio.ensure_future(child.wait()) for child in children]
    stop_wait = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([*waits, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    if not stopping.is_set():
        log.error("a worker exited; stopping the others")
    for child in children:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*waits)
    stop_wait.cancel()
    return 0 if stopping.is_set() else max(1, *(c or 0 for c in codes))
