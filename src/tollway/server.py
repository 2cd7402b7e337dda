"""``tollway serve``: wires the stores, the decision core and both ext_authz servers, and runs them until
SIGTERM/SIGINT (or ``stop``), then drains in-flight checks before exiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from tollway.admin_server import AdminServer
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.redis_store import RedisKeyStore
from tollway.clock import Clock, SystemClock
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.decision import DecisionCore
from tollway.extproc.grpc_server import GrpcAuthzServer
from tollway.extproc.http_server import HttpAuthzServer
from tollway.extproc.problems import Refusals
from tollway.plans.loader import load_compiled_catalog
from tollway.plans.watcher import CatalogWatcher
from tollway.ratelimit import RedisLimiter
from tollway.redis_client import hot_path_client, subscriber_client
from tollway.redis_types import RedisClient
from tollway.settings import Settings
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver
from tollway.usage.metering import Metering

log = logging.getLogger(__name__)

Background = list[Callable[[], Coroutine[Any, Any, None]]]


def build_cache(settings: Settings, clock: Clock) -> KeyCache:
    return KeyCache(
        clock.monotonic,
        ttl=settings.key_cache_ttl_s,
        negative_ttl=settings.key_negative_cache_ttl_s,
        max_entries=settings.key_cache_max_entries,
    )


def build_gate(
    settings: Settings, redis: RedisClient, subscriber: RedisClient, clock: Clock, background: Background
) -> EntitlementGate:
    """Stage 2 from the catalog file: raises ``CatalogError`` if the file is invalid at start."""
    assert settings.catalog is not None
    live = LiveCatalog(load_compiled_catalog(settings.catalog))
    log.info("catalog %s version %s (%s) is live", live.current.name, live.current.version, live.current.digest)
    watcher = CatalogWatcher(
        settings.catalog,
        live.replace,
        live.reject,
        poll_interval=settings.catalog_poll_s,
        current_digest=live.current.digest,
    )
    cache = SubscriptionCache(clock.monotonic, ttl=settings.key_cache_ttl_s, negative_ttl=settings.key_cache_ttl_s)
    store = RedisSubscriptionStore(redis, settings.redis_prefix, subscriber=subscriber)
    resolver = SubscriptionResolver(store, cache, timeout_s=settings.redis_timeout_ms / 1000)
    limiter = RedisLimiter(redis, prefix=settings.redis_prefix, timeout_s=settings.redis_timeout_ms / 1000)
    gate = EntitlementGate(live, resolver, limiter, clock, max_lease_ms=settings.lease_max_ms)
    background += [watcher.run, resolver.follow_changes, gate.run_lease_sweeper]
    return gate


def build_core(
    settings: Settings,
    store: RedisKeyStore,
    cache: KeyCache,
    clock: Clock,
    gate: EntitlementGate | None = None,
    metering: Metering | None = None,
) -> DecisionCore:
    authenticator = Authenticator(
        store,
        KeyDigester(settings.pepper_bytes()),
        cache,
        clock,
        CredentialSource(headers=settings.key_headers, query_param=settings.key_query_param),
        store_timeout=settings.redis_timeout_ms / 1000,
    )
    return DecisionCore(
        authenticator,
        Refusals(settings.problem_type_base),
        settings.forward_credential,
        gate,
        metering.recorder if metering is not None else None,
        lambda: int(clock.now().timestamp() * 1000),
    )


async def serve(
    settings: Settings,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
    on_ready: Callable[[DecisionCore], None] | None = None,
) -> None:
    clock = clock or SystemClock()
    stop = stop or asyncio.Event()
    redis = hot_path_client(settings)
    subscriber = subscriber_client(settings)
    store = RedisKeyStore(redis, settings.redis_prefix, subscriber=subscriber)
    cache = build_cache(settings, clock)
    background: Background = [lambda: store.watch_changes(cache.evict, cache.clear)]
    gate = build_gate(settings, redis, subscriber, clock, background) if settings.catalog else None
    metering = Metering.start(settings, gate.catalog if gate is not None else None) if settings.spool_dir else None
    if metering is None:
        log.info("metering is off (set TOLLWAY_SPOOL_DIR to record usage)")
    core = build_core(settings, store, cache, clock, gate, metering)
    tasks = [asyncio.create_task(run()) for run in background]

    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    http: HttpAuthzServer | None = None
    grpc_server: GrpcAuthzServer | None = None
    admin: AdminServer | None = None
    try:
        if settings.admin_port:
            admin = AdminServer(
                lambda: {
                    "catalog": gate.catalog.describe() if gate is not None else None,
                    "metering": metering.describe() if metering is not None else None,
                }
            )
            port = await admin.start(settings.host, settings.admin_port)
            log.info("admin (GET /healthz) listening on %s:%d", settings.host, port)
        if settings.http_port:
            http = HttpAuthzServer(core, settings.max_header_bytes, settings.max_body_bytes)
            port = await http.start(settings.host, settings.http_port)
            log.info("ext_authz HTTP listening on %s:%d", settings.host, port)
        if settings.grpc_port:
            grpc_server = GrpcAuthzServer(core)
            port = await grpc_server.start(settings.host, settings.grpc_port)
            log.info("ext_authz gRPC listening on %s:%d", settings.host, port)
        if metering is not None and settings.metering_port:
            port = await metering.start_server(settings.host, settings.metering_port)
            log.info("metering gRPC (access log, body meter) listening on %s:%d", settings.host, port)
        if on_ready is not None:
            on_ready(core)
        await stop.wait()
        log.info("shutting down: draining in-flight checks (grace %.1fs)", settings.shutdown_grace_s)
    finally:
        draining = []
        if http is not None:
            draining.append(http.shutdown(settings.shutdown_grace_s))
        if grpc_server is not None:
            draining.append(grpc_server.shutdown(settings.shutdown_grace_s))
        if admin is not None:
            draining.append(admin.shutdown())
        await asyncio.gather(*draining, return_exceptions=True)
        if metering is not None:
            # After Envoy's last checks and log entries: the loader's final drain sees every row.
            await metering.shutdown(settings.shutdown_grace_s)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if gate is not None:
            await gate.drain_leases()  # unused leased units back to Redis before the client closes
        if metering is not None:
            metering.close()
        await redis.aclose()
        await subscriber.aclose()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("stopped")
