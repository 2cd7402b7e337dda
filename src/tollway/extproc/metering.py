"""Stage 3 in one serving process: its spool writer and decision recorder, the metering gRPC server
(access log, body meter), periodic fsync, and — in the one process of the host that takes the loader
lock — the loader into ClickHouse. The other processes (``TOLLWAY_LOADER=auto``) retry the lock every
``TOLLWAY_LOADER_TAKEOVER_S`` and take the loader over when its holder is gone. Built by
``tollway.server.serve`` when ``TOLLWAY_SPOOL_DIR`` is set.
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
from tollway.usage.spool import SpoolWriter, live_writers, spool_usage
from tollway.warehouse.settings import WarehouseSettings

log = logging.getLogger(__name__)


class Metering:
    def __init__(self, settings: Settings, spool: SpoolWriter, live: LiveCatalog | None) -> None:
        self._settings = settings
        self.spool = spool
        self._live = live
        self.recorder = UsageRecorder(spool, self._catalog, settings.spool_full_policy)
        self.access_log = AccessLogService(spool, self._meters)
        self.loader: UsageLoader | None = None
        self._lock: LoaderLock | None = None
        self._sink: ClickHouseSink | None = None
        self._server: MeteringServer | None = None
        self._stop_loader = asyncio.Event()
        self._durable: asyncio.Task[None] | None = None
        self._loading: asyncio.Task[None] | None = None
        self._takeover: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, settings: Settings, live: LiveCatalog | None) -> Metering:
        """Open this process's spool segment and, if this process wins the lock, the loader; if another
        process holds it, retry every ``loader_takeover_s`` and take over once that process is gone."""
        assert settings.spool_dir is not None
        spool = SpoolWriter(
            settings.spool_dir, segment_bytes=settings.spool_segment_bytes, max_bytes=settings.spool_max_bytes
        )
        writers = live_writers(settings.spool_dir)
        if writers * settings.spool_segment_bytes > settings.spool_max_bytes:
            log.warning(
                "usage spool %s: %d processes write to it and TOLLWAY_SPOOL_MAX_BYTES (%d) is below %d × "
                "TOLLWAY_SPOOL_SEGMENT_BYTES (%d): segments will be sealed before they reach their size; "
                "size the spool at least writers × segment bytes (docs/usage-tracking.md)",
                settings.spool_dir,
                writers,
                settings.spool_max_bytes,
                writers,
                settings.spool_segment_bytes,
            )
        metering = cls(settings, spool, live)
        log.info("usage spool: %s (segment %s)", settings.spool_dir, spool.path)
        metering._durable = start_supervised("spool fsync", metering._keep_durable)
        if settings.loader == "auto" and not metering._take_loader():
            log.info(
                "usage loader: another process loads %s; this one takes over within %.1f s once it stops",
                settings.spool_dir,
                settings.loader_takeover_s,
            )
            metering._takeover = start_supervised("usage loader takeover", metering._await_loader)
        return metering

    def _take_loader(self) -> bool:
        """Take the spool's loader lock and start the loader; False when another process holds it. The
        lock is an ``flock``: the kernel releases it when its holder exits, however it exits (``kill -9``
        too), and only then may this process open the warehouse (an embedded chdb path opens in one
        process at a time)."""
        settings = self._settings
        assert settings.spool_dir is not None
        warehouse = WarehouseSettings()
        try:
            lock = LoaderLock(settings.spool_dir)
        except LoaderBusy:
            return False
        self._lock = lock
        self._sink = ClickHouseSink(warehouse.dsn, warehouse.database)  # connects on its first insert
        self.loader = UsageLoader(
            settings.spool_dir,
            self._sink,
            batch_bytes=settings.loader_batch_bytes,
            poll_interval_s=settings.loader_poll_s,
            insert_interval_s=settings.loader_insert_interval_s,
            maintain_interval_s=settings.rollup_interval_s,
        )
        loader = self.loader
        self._loading = start_supervised("usage loader", lambda: loader.run(self._stop_loader))
        log.info("usage loader: %s → %s (database %s)", settings.spool_dir, warehouse.dsn, warehouse.database)
        return True

    async def _await_loader(self) -> None:
        """Retry the loader lock every ``loader_takeover_s`` until this process holds it (or stops)."""
        while not self._stop_loader.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_loader.wait(), self._settings.loader_takeover_s)
            if self._stop_loader.is_set():
                return
            try:
                if self._take_loader():
                    log.warning(
                        "usage loader: the process that loaded %s is gone; this one loads it now", self.spool.directory
                    )
                    return
            except Exception as exc:  # logged and retried: this task must not end silently
                log.error(
                    "usage loader: cannot take the loader of %s over: %s: %s",
                    self.spool.directory,
                    type(exc).__name__,
                    exc,
                )

    @property
    def loader_enabled(self) -> bool:
        """This process loads the spool, or takes the loader over when its holder is gone (loader=auto)."""
        return self._settings.loader == "auto"

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
            except OSError as exc:
                log.error("usage spool: fsync failed: %s", exc)
            try:  # the spool's files and acks are read off the loop, applied on it
                self.spool.refresh_usage(await loop.run_in_executor(None, self.spool.measure))
            except OSError as exc:
                log.error("usage spool: cannot measure or rotate %s: %s", self.spool.directory, exc)

    def describe(self) -> dict[str, Any]:
        """Health detail: spool size and state, and the loader's counters when this process loads."""
        usage = spool_usage(self.spool.directory)
        detail: dict[str, Any] = {
            "spool_dir": str(self.spool.directory),
            "spool_bytes": usage.files,  # on disk
            "spool_pending_bytes": usage.pending,  # not yet loaded: what TOLLWAY_SPOOL_MAX_BYTES bounds
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
        if self._takeover is not None:
            await asyncio.gather(self._takeover, return_exceptions=True)
        if self._loading is not None:
            await asyncio.gather(self._loading, return_exceptions=True)
        if self._durable is not None:
            self._durable.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._durable

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
        if self._lock is not None:
            self._lock.release()
