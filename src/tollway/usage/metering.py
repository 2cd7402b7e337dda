"""Stage 3 in one serving process: its spool writer and decision recorder, the metering gRPC server
(access log, body meter), periodic fsync, and — in the one process of the host that takes the loader
lock — the loader into ClickHouse. Built by ``tollway.server.serve`` when ``TOLLWAY_SPOOL_DIR`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.access_log import AccessLogService
from tollway.extproc.metering_server import ACCESS_LOG_SERVICE, GrpcService, MeteringServer
from tollway.plans.catalog import CompiledCatalog
from tollway.settings import Settings
from tollway.supervision import start_supervised
from tollway.usage.clickhouse_sink import ClickHouseSink
from tollway.usage.loader import LoaderBusy, LoaderLock, UsageLoader
from tollway.usage.meters import NO_METERS, CatalogMeters, catalog_meters
from tollway.usage.recorder import UsageRecorder
from tollway.usage.spool import SpoolWriter, spool_bytes
from tollway.warehouse.settings import WarehouseSettings

log = logging.getLogger(__name__)


class Metering:
    def __init__(
        self,
        settings: Settings,
        spool: SpoolWriter,
        live: LiveCatalog | None,
        loader: UsageLoader | None,
        lock: LoaderLock | None,
        sink: ClickHouseSink | None,
    ) -> None:
        self._settings = settings
        self.spool = spool
        self._live = live
        self.recorder = UsageRecorder(spool, self._catalog, settings.spool_full_policy)
        self.access_log = AccessLogService(spool, self._meters)
        self.loader = loader
        self._lock = lock
        self._sink = sink
        self._server: MeteringServer | None = None
        self._stop_loader = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def start(cls, settings: Settings, live: LiveCatalog | None) -> Metering:
        """Open this process's spool segment and, if this process wins the lock, the loader."""
        assert settings.spool_dir is not None
        spool = SpoolWriter(
            settings.spool_dir, segment_bytes=settings.spool_segment_bytes, max_bytes=settings.spool_max_bytes
        )
        loader = lock = sink = None
        if settings.loader == "auto":
            try:
                lock = LoaderLock(settings.spool_dir)
            except LoaderBusy:
                log.info("usage loader: another process loads %s", settings.spool_dir)
            else:
                warehouse = WarehouseSettings()
                sink = ClickHouseSink(warehouse.dsn, warehouse.database)
                loader = UsageLoader(
                    settings.spool_dir,
                    sink,
                    batch_bytes=settings.loader_batch_bytes,
                    poll_interval_s=settings.loader_poll_s,
                    insert_interval_s=settings.loader_insert_interval_s,
                    maintain_interval_s=settings.rollup_interval_s,
                )
                log.info("usage loader: %s → %s (database %s)", settings.spool_dir, warehouse.dsn, warehouse.database)
        log.info("usage spool: %s (segment %s)", settings.spool_dir, spool.path)
        metering = cls(settings, spool, live, loader, lock, sink)
        metering._tasks.append(start_supervised("spool fsync", metering._keep_durable))
        if loader is not None:
            metering._tasks.append(start_supervised("usage loader", lambda: loader.run(metering._stop_loader)))
        return metering

    @property
    def sink(self) -> ClickHouseSink | None:
        """The ClickHouse client of this process's loader (None: another process loads)."""
        return self._sink

    def _catalog(self) -> CompiledCatalog | None:
        return self._live.current if self._live is not None else None

    def _meters(self) -> CatalogMeters:
        return catalog_meters(self._live.current) if self._live is not None else NO_METERS

    def services(self) -> list[tuple[str, GrpcService]]:
        services: list[tuple[str, GrpcService]] = [(ACCESS_LOG_SERVICE, self.access_log)]
        if self._live is not None:
            from tollway.extproc.body_meter import SERVICE_NAME, BodyMeterService

            live = self._live
            services.append((SERVICE_NAME, BodyMeterService(lambda: live.current)))
        return services

    async def start_server(self, host: str, port: int) -> int:
        self._server = MeteringServer(self.services())
        return await self._server.start(host, port)

    async def _keep_durable(self) -> None:
        """fsync the open segment every ``spool_fsync_interval_s`` and re-measure the spool's size."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._settings.spool_fsync_interval_s)
            try:
                await loop.run_in_executor(None, self.spool.sync)
                self.spool.refresh_usage()
            except OSError as exc:
                log.error("usage spool: fsync failed: %s", exc)

    def describe(self) -> dict[str, Any]:
        """Health detail: spool size and state, and the loader's counters when this process loads."""
        detail: dict[str, Any] = {
            "spool_dir": str(self.spool.directory),
            "spool_bytes": spool_bytes(self.spool.directory),
            "spool_full": self.spool.full,
            "rows_refused": self.spool.rows_refused,
            "access_log_rows": self.access_log.rows_written,
        }
        if self.loader is not None:
            stats = self.loader.stats
            detail["loader"] = {
                "rows_read": stats.rows_read,
                "rows_loaded": stats.rows_loaded,
                "batches": stats.batches,
                "failures": stats.failures,
                "last_error": stats.last_error,
            }
        return detail

    async def shutdown(self, grace_s: float) -> None:
        """Stop the log stream (Envoy flushes what it holds within ``grace_s``), seal the segment, then let
        the loader drain what is left."""
        if self._server is not None:
            await self._server.shutdown(grace_s)
        self.spool.close()
        self._stop_loader.set()
        loader_tasks = self._tasks[1:]
        if loader_tasks:
            await asyncio.gather(*loader_tasks, return_exceptions=True)
        self._tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[0]

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
        if self._lock is not None:
            self._lock.release()
