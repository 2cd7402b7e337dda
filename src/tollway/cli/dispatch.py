"""``tollway dispatch``: the webhook dispatcher on its own (docs/notifications-delivery.md).

By default the dispatcher runs inside ``tollway meter`` (``TOLLWAY_DISPATCH=true``), which owns the
embedded ClickHouse. Run it as a process of its own for deployments with a ClickHouse server over HTTP
(``TOLLWAY_CLICKHOUSE_DSN=http…``), or with ``--no-history`` (deliveries only; events and attempts stay
in the Redis history buffer until a dispatcher with history runs). Any number may run at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import uvloop

from tollway.clock import SystemClock
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.notifications.dispatcher import DispatchSettings, build_dispatch
from tollway.notifications.history import Runs
from tollway.notifications.periodic import periodic_jobs
from tollway.plans.loader import load_compiled_catalog
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.supervision import start_supervised
from tollway.usage.clickhouse_sink import ClickHouseSink
from tollway.warehouse.settings import WarehouseSettings

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("dispatch", help="run the webhook dispatcher (outbox → signed deliveries)")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="do not write events and attempts to ClickHouse (they wait in Redis for a dispatcher that does)",
    )


async def dispatch(settings: Settings, history: bool, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = admin_client(settings)
    sink: ClickHouseSink | None = None
    if history:
        warehouse = WarehouseSettings()
        if warehouse.dsn.startswith("chdb://"):
            log.warning(
                "tollway dispatch with the embedded ClickHouse %s: only while no `tollway meter` holds it "
                "(use --no-history beside one, or a ClickHouse server)",
                warehouse.dsn,
            )
        sink = ClickHouseSink(warehouse.dsn, warehouse.database, rollups=False)
    reads: Runs | None = sink.read if sink is not None else None
    dispatcher, writer = build_dispatch(redis, settings, (lambda: reads) if history else None)
    tasks = [start_supervised("webhook dispatcher", lambda: dispatcher.run(stop))]
    live = LiveCatalog(load_compiled_catalog(settings.catalog)) if settings.catalog else None
    for name, job in periodic_jobs(
        redis, settings.redis_prefix, SystemClock(), (lambda: live.current) if live is not None else None
    ):
        tasks.append(start_supervised(name, lambda job=job: job(stop)))  # type: ignore[misc]
    if writer is not None:
        tasks.append(start_supervised("webhook history", lambda: writer.run(stop)))
    log.info("webhook dispatcher running (consumer %s)", dispatcher.reader.consumer)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await dispatcher.aclose()
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.close()
        await redis.aclose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    DispatchSettings().schedule()  # a bad schedule is refused at start
    uvloop.run(dispatch(settings, not args.no_history))
    return 0
