"""``tollway serve``: wires the stores, the decision core and both ext_authz servers, and runs them until
SIGTERM/SIGINT (or ``stop``), then drains in-flight checks before exiting."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from tollway.admin_server import AdminServer, Readiness, RedisProbe, readiness_checks
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.jwt.authenticator import TokenAuthenticator
from tollway.auth.jwt.issuers import load_issuers
from tollway.auth.redis_store import RedisKeyStore
from tollway.clock import Clock, SystemClock
from tollway.credits.spend_caps import CustomerCapResolver, CustomerCapStore
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.decision import DecisionCore
from tollway.extproc.grpc_server import GrpcAuthzServer
from tollway.extproc.http_server import HttpAuthzServer
from tollway.extproc.metering import Metering
from tollway.extproc.problems import Refusals
from tollway.lookup_cache import LastKnown
from tollway.notifications.budgets import BudgetStore, budgets_request
from tollway.notifications.dispatcher import DispatchSettings, build_dispatch
from tollway.notifications.periodic import periodic_jobs
from tollway.observability.tollway_metrics import MeasuredDecider, TollwayMetrics
from tollway.plans.loader import load_compiled_catalog
from tollway.plans.watcher import CatalogWatcher
from tollway.ratelimit import PipelineCoalescer, RedisLimiter
from tollway.redis_client import admin_client, hot_path_client, subscriber_client
from tollway.redis_types import RedisClient
from tollway.settings import Settings
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver
from tollway.supervision import start_supervised
from tollway.usage.caller_report import caller_report
from tollway.usage.clickhouse_sink import ClickHouseSink
from tollway.usage.money_report import MoneySources, change_spend_cap
from tollway.usage.report_server import USAGE_PATH, Budgets, CapChange, Report, UsageReportServer
from tollway.usage.reservation_sweeper import ReservationSweeper
from tollway.usage.settlement import ReservationSettler
from tollway.usage.spool import pending_bytes
from tollway.usage.usage_headers import UsageHeaders
from tollway.warehouse.settings import WarehouseSettings

log = logging.getLogger(__name__)

Background = list[Callable[[], Coroutine[Any, Any, None]]]
"""The long-running tasks of ``serve``: each is supervised (``tollway.supervision``), restarted if it fails."""


def task_name(run: Callable[..., object]) -> str:
    """A background task's name for logs: ``CatalogWatcher.run`` for a bound method, else the function's."""
    owner = getattr(run, "__self__", None)
    name = getattr(run, "__name__", repr(run))
    return f"{type(owner).__name__}.{name}" if owner is not None else name


def windows_on_redis_clock(clock: Clock) -> bool:
    """Whether the limiter counts rate-limit windows on Redis's clock (``TIME``, shared by every
    process: skew between hosts cannot over-admit): always with the real clock; a process run with an
    injected clock (tests that drive time) counts them on that clock."""
    return isinstance(clock, SystemClock)


def build_cache(settings: Settings, clock: Clock) -> KeyCache:
    return KeyCache(
        clock.monotonic,
        ttl=settings.key_cache_ttl_s,
        negative_ttl=settings.key_negative_cache_ttl_s,
        max_entries=settings.key_cache_max_entries,
        max_negative_entries=settings.key_negative_cache_max_entries,
    )


def build_gate(
    settings: Settings,
    redis: RedisClient,
    subscriber: RedisClient,
    clock: Clock,
    background: Background,
    metrics: TollwayMetrics | None = None,
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
    resolver = SubscriptionResolver(
        store,
        cache,
        timeout_s=settings.redis_timeout_ms / 1000,
        last_known=LastKnown(clock.monotonic, settings.stale_max_s),
    )
    limiter = RedisLimiter(
        redis,
        prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_ms / 1000,
        server_time=windows_on_redis_clock(clock),
    )
    if metrics is not None and isinstance(limiter.runner, PipelineCoalescer):
        limiter.runner.observe = metrics.redis_round_trip
    caps = CustomerCapResolver(
        CustomerCapStore(redis, settings.redis_prefix), clock.monotonic, timeout_s=settings.redis_timeout_ms / 1000
    )
    gate = EntitlementGate(
        live,
        resolver,
        limiter,
        clock,
        max_lease_ms=settings.lease_max_ms,
        limiter_timeout_s=settings.redis_timeout_ms / 1000,
        customer_caps=caps,
    )
    background += [watcher.run, resolver.follow_changes, gate.run_lease_sweeper]
    return gate


def build_tokens(settings: Settings, clock: Clock, background: Background) -> TokenAuthenticator:
    """Bearer JWTs from the issuers file: raises ``IssuerConfigError`` (every problem) if it is invalid."""
    assert settings.jwt_issuers is not None
    issuers = load_issuers(settings.jwt_issuers)
    tokens = TokenAuthenticator.build(
        issuers,
        clock,
        cache_max_entries=settings.jwt_cache_max_entries,
        cache_max_ttl_s=settings.jwt_cache_max_ttl_s,
        max_token_bytes=settings.jwt_max_token_bytes,
        key_wait_s=settings.jwt_key_wait_ms / 1000,
    )
    log.info("bearer tokens accepted from issuer(s) %s", ", ".join(i.name for i in issuers))
    background.append(tokens.run)  # JWKS fetched at start and kept fresh
    return tokens


def build_core(
    settings: Settings,
    store: RedisKeyStore,
    cache: KeyCache,
    clock: Clock,
    gate: EntitlementGate | None = None,
    metering: Metering | None = None,
    tokens: TokenAuthenticator | None = None,
    usage_headers: UsageHeaders | None = None,
) -> DecisionCore:
    authenticator = Authenticator(
        store,
        KeyDigester(settings.pepper_bytes()),
        cache,
        clock,
        CredentialSource(headers=settings.key_headers, query_param=settings.key_query_param),
        store_timeout=settings.redis_timeout_ms / 1000,
        tokens=tokens,
        last_known=LastKnown(clock.monotonic, settings.stale_max_s, settings.key_cache_max_entries),
    )
    return DecisionCore(
        authenticator,
        Refusals(settings.problem_type_base),
        settings.forward_credential,
        gate,
        metering.recorder if metering is not None else None,
        clock.now_ms,
        usage_headers,
        check_timeout_s=settings.check_deadline_ms / 1000,
    )


def add_dispatcher(
    settings: Settings,
    metering: Metering | None,
    background: Background,
    clock: Clock,
    catalog: LiveCatalog | None = None,
) -> Callable[[], Coroutine[Any, Any, None]] | None:
    """The process that loads usage (``tollway meter``, or a ``tollway serve`` whose loader is not off)
    runs the webhook dispatcher (``TOLLWAY_DISPATCH``, on by default), the notification jobs (expiring
    keys and grants; customers' budgets with a catalog) and, once this process's loader holds the
    ClickHouse client, the delivery history writer; how to close them, or None."""
    if not DispatchSettings().dispatch:
        return None
    try:
        settings.pepper_bytes()
    except ValueError:
        log.warning("webhook dispatcher off: no pepper to open the endpoints' signing secrets (TOLLWAY_PEPPER)")
        return None
    redis = admin_client(settings)
    live = catalog
    for name, job in periodic_jobs(
        redis, settings.redis_prefix, clock, (lambda: live.current) if live is not None else None
    ):

        async def periodic(job: Any = job) -> None:
            await job(asyncio.Event())  # runs until cancelled with the other background tasks

        periodic.__name__ = name.replace(" ", "_")
        background.append(periodic)

    def runs() -> Any:
        sink = metering.sink if metering is not None else None
        return sink.read if sink is not None else None

    dispatcher, writer = build_dispatch(redis, settings, runs if metering is not None else None)

    async def webhook_dispatcher() -> None:
        await dispatcher.run()

    async def close() -> None:
        await dispatcher.aclose()
        await redis.aclose()

    background.append(webhook_dispatcher)
    if writer is not None:
        history = writer

        async def webhook_history() -> None:
            await history.run()

        background.append(webhook_history)
    return close


async def follow_readiness(grpc_server: GrpcAuthzServer, ready: Readiness, interval_s: float = 1.0) -> None:
    """Background: every ``interval_s``, gRPC health SERVING when every readiness check passes, else
    NOT_SERVING (until cancelled)."""
    serving = True
    while True:
        await asyncio.sleep(interval_s)
        try:
            results = await ready()
        except Exception:  # a broken check means not ready, never a dead task
            log.exception("readiness check failed")
            results = {"checks": "failed"}
        now_serving = all(reason is None for reason in results.values())
        if now_serving != serving:
            log.warning("gRPC health: %s (%s)", "SERVING" if now_serving else "NOT_SERVING", results)
            await grpc_server.set_serving(now_serving)
            serving = now_serving


def reported_dependencies(
    redis_probe: RedisProbe, warehouse: Callable[[], dict[str, str]] | None
) -> Callable[[], dict[str, str]]:
    """What ``/readyz`` reports without deciding on it: a tolerated Redis outage, ClickHouse reachability."""

    def reported() -> dict[str, str]:
        found = redis_probe.reported()
        if warehouse is not None:
            found.update(warehouse())
        return found

    return reported


def warehouse_reachability(metering: Metering | None) -> Callable[[], dict[str, str]] | None:
    """For ``/readyz``: whether this process's loader reaches ClickHouse (nothing while another process
    loads; this one may take the loader over later)."""
    if metering is None:
        return None

    def reported() -> dict[str, str]:
        loader = metering.loader
        if loader is None:
            return {}
        if not loader.stats.failing:
            return {"clickhouse": "ok"}
        return {"clickhouse": f"unreachable, rows wait in the spool: {loader.stats.last_error}"}

    return reported


def add_readings(
    metrics: TollwayMetrics,
    gate: EntitlementGate | None,
    metering: Metering | None,
    authenticator: Authenticator | None = None,
) -> None:
    """The metrics other components keep, read at each scrape."""
    book = gate.leases.book if gate is not None else None
    spool_dir = metering.spool.directory if metering is not None else None
    live = gate.catalog if gate is not None else None

    def rows_loaded() -> dict[tuple[str, ...], float]:
        loader = metering.loader if metering is not None else None  # set once this process loads
        return {(): loader.stats.rows_loaded} if loader is not None else {}

    metrics.add_readings(
        leases=(lambda: {(): book.leases_taken}) if book is not None else None,
        lease_requests=(lambda: {(): book.requests_from_leases}) if book is not None else None,
        spool_pending=(lambda: {(): pending_bytes(spool_dir)}) if spool_dir is not None else None,
        rows_loaded=rows_loaded if metering is not None and metering.loader_enabled else None,
        catalog=(lambda: {(live.current.name, live.current.version, live.current.digest): 1})
        if live is not None
        else None,
        stale_answers=(lambda: _stale_answers(authenticator, gate)) if authenticator is not None else None,
    )


def _stale_answers(authenticator: Authenticator, gate: EntitlementGate | None) -> dict[tuple[str, ...], float]:
    counts: dict[tuple[str, ...], float] = {("keys",): authenticator.stale_answers}
    if gate is not None:
        counts[("subscriptions",)] = gate.subscriptions.stale_answers
    return counts


def warehouse_reader(metering: Metering | None) -> ClickHouseSink | None:
    """A ClickHouse client for reads in a process that records usage but does not load it (a checking
    ``tollway serve`` beside ``tollway meter``): only with a ClickHouse server, since an embedded chdb path
    opens in one process (the meter's). None otherwise."""
    if metering is None or metering.sink is not None:
        return None
    warehouse = WarehouseSettings()
    if warehouse.dsn.startswith("chdb://"):
        return None
    return ClickHouseSink(warehouse.dsn, warehouse.database, rollups=False)


def build_caller_report(
    settings: Settings,
    redis: RedisClient,
    clock: Clock,
    gate: EntitlementGate | None,
    metering: Metering | None,
    reader: ClickHouseSink | None = None,
) -> Report | None:
    """The caller usage report, in the process whose loader holds the ClickHouse client (or with ``reader``,
    a read-only client of a ClickHouse server); None elsewhere (metering is off, no catalog, or an embedded
    ClickHouse another process holds)."""
    sink = metering.sink if metering is not None and metering.sink is not None else reader
    if gate is None or sink is None:
        return None
    subscriptions = RedisSubscriptionStore(redis, settings.redis_prefix)
    limiter = RedisLimiter(
        redis,
        prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_ms / 1000,
        server_time=windows_on_redis_clock(clock),
    )
    live = gate.catalog
    money = MoneySources.on(redis, settings.redis_prefix)

    async def report(customer_id: str) -> dict[str, Any]:
        return await caller_report(
            customer_id,
            subscriptions=subscriptions,
            live=live,
            limiter=limiter,
            warehouse=sink.read,
            now=clock.now(),
            money=money,
        )

    return report


def build_cap_change(settings: Settings, redis: RedisClient, clock: Clock, gate: EntitlementGate) -> CapChange:
    """``PATCH /tollway/v1/usage``: a customer's own spend cap (this process's gate forgets its cached one
    at once; other processes within the resolver's TTL)."""
    subscriptions = RedisSubscriptionStore(redis, settings.redis_prefix)
    money = MoneySources.on(redis, settings.redis_prefix)
    live = gate.catalog

    async def change(customer_id: str, body: bytes, content_type: str, request_id: str) -> dict[str, Any]:
        return await change_spend_cap(
            customer_id,
            body,
            content_type,
            subscription=await subscriptions.get(customer_id),
            live=live,
            sources=money,
            now=clock.now(),
            request_id=request_id,
            changed=gate.forget_customer_cap,
        )

    return change


def build_budgets(settings: Settings, redis: RedisClient, clock: Clock, live: LiveCatalog) -> Budgets:
    """``GET``/``PUT``/``DELETE /tollway/v1/usage/budgets``: a customer's own alert thresholds."""
    subscriptions = RedisSubscriptionStore(redis, settings.redis_prefix)
    store = BudgetStore(redis, settings.redis_prefix)

    async def budgets(method: str, customer_id: str, body: bytes, content_type: str) -> dict[str, Any]:
        answer: dict[str, Any] = await budgets_request(
            method,
            customer_id,
            body,
            content_type,
            store=store,
            subscription=await subscriptions.get(customer_id),
            catalog=live.current,
            now=clock.now(),
        )
        return answer

    return budgets


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
    checks = bool(settings.http_port or settings.grpc_port)  # `tollway meter` answers no check
    store = RedisKeyStore(redis, settings.redis_prefix, subscriber=subscriber)
    cache = build_cache(settings, clock)
    background: Background = []
    tokens = build_tokens(settings, clock, background) if settings.jwt_issuers and checks else None
    metrics = TollwayMetrics()
    gate = build_gate(settings, redis, subscriber, clock, background, metrics) if settings.catalog else None
    metering = Metering.start(settings, gate.catalog if gate is not None else None) if settings.spool_dir else None
    if metering is None:
        log.info("metering is off (set TOLLWAY_SPOOL_DIR to record usage)")
    if metering is not None and gate is not None:  # reservations are settled where rows are completed
        settle_on = RedisLimiter(
            redis, prefix=settings.redis_prefix, coalesce=False, timeout_s=settings.redis_timeout_ms / 1000
        )
        current = gate.catalog
        metering.access_log.settler = ReservationSettler(settle_on, lambda: current.current, clock.now_ms)
        if settings.metering_port:  # where the access log arrives: the sweeper repairs what it missed
            spool = metering.spool
            sweeper = ReservationSweeper(
                settle_on,
                lambda: metering.sink.read if metering.sink is not None else None,
                lambda: current.current,
                spool.append,
                clock.now_ms,
                settings.reservation_timeout_s,
                settings.reservation_sweep_s,
            )
            background.append(sweeper.run)
    loads_usage = not checks or (metering is not None and settings.loader != "off")
    close_dispatcher = (
        add_dispatcher(settings, metering, background, clock, gate.catalog if gate is not None else None)
        if loads_usage
        else None
    )
    reader = warehouse_reader(metering)
    report = build_caller_report(settings, redis, clock, gate, metering, reader)
    usage_headers = (
        UsageHeaders(report, gate.catalog, clock.monotonic, refresh_s=settings.usage_headers_refresh_s)
        if report is not None and gate is not None
        else None
    )
    core = build_core(settings, store, cache, clock, gate, metering, tokens, usage_headers) if checks else None
    if core is not None:  # an announced key change evicts its cached and its last-known record
        authenticator = core.authenticator

        async def follow_key_changes() -> None:
            await store.watch_changes(authenticator.evict, cache.clear)

        background.insert(0, follow_key_changes)
    add_readings(metrics, gate, metering, core.authenticator if core is not None else None)
    tasks = [start_supervised(task_name(run), run) for run in background]

    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    redis_probe = RedisProbe(redis, tolerate_s=settings.stale_max_s)
    ready = readiness_checks(
        redis_probe,
        metering.spool if metering is not None else None,
        refuse_when_spool_full=settings.spool_full_policy == "fail_closed",
    )
    http: HttpAuthzServer | None = None
    usage: UsageReportServer | None = None
    grpc_server: GrpcAuthzServer | None = None
    admin: AdminServer | None = None
    try:
        if settings.admin_port:
            admin = AdminServer(
                lambda: {
                    "catalog": gate.catalog.describe() if gate is not None else None,
                    "metering": metering.describe() if metering is not None else None,
                    "token_issuers": tokens.describe() if tokens is not None else None,
                },
                ready,
                problem_type_base=settings.problem_type_base,
                metrics=metrics.registry.render,
                dependencies=reported_dependencies(redis_probe, warehouse_reachability(metering)),
            )
            port = await admin.start(settings.host, settings.admin_port)
            log.info("admin (GET /healthz, /livez, /readyz) listening on %s:%d", settings.host, port)
        if settings.http_port and core is not None:
            http = HttpAuthzServer(
                MeasuredDecider(core, metrics, "http"), settings.max_header_bytes, settings.max_body_bytes
            )
            port = await http.start(settings.host, settings.http_port)
            log.info("ext_authz HTTP listening on %s:%d", settings.host, port)
            if settings.key_query_param and not settings.forward_credential:
                log.warning(
                    "keys in the query parameter %r reach the upstream through Envoy's HTTP ext_authz, which "
                    "cannot rewrite the query; use gRPC ext_authz to strip it (docs/authentication.md)",
                    settings.key_query_param,
                )
        if settings.grpc_port and core is not None:
            grpc_server = GrpcAuthzServer(MeasuredDecider(core, metrics, "grpc"))
            port = await grpc_server.start(settings.host, settings.grpc_port)
            log.info("ext_authz gRPC listening on %s:%d", settings.host, port)
        if metering is not None and settings.metering_port:
            port = await metering.start_server(settings.host, settings.metering_port)
            log.info("metering gRPC (access log, body meter) listening on %s:%d", settings.host, port)
        if report is not None and settings.usage_port:
            change = build_cap_change(settings, redis, clock, gate) if gate is not None else None
            budgets = build_budgets(settings, redis, clock, gate.catalog) if gate is not None else None
            usage = UsageReportServer(report, settings.problem_type_base, change, budgets)
            port = await usage.start(settings.host, settings.usage_port)
            log.info("caller usage (GET %s) listening on %s:%d", USAGE_PATH, settings.host, port)
        if admin is not None:
            admin.set_serving()  # /readyz: the ext_authz listeners are open
        if grpc_server is not None:  # gRPC health follows the same checks as /readyz
            serving = grpc_server
            tasks.append(start_supervised("gRPC health", lambda: follow_readiness(serving, ready)))
        if on_ready is not None and core is not None:
            on_ready(core)
        await stop.wait()
        log.info("shutting down: draining in-flight checks (grace %.1fs)", settings.shutdown_grace_s)
    finally:
        draining = []
        if usage is not None:
            draining.append(usage.shutdown())
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
        for task, outcome in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                log.error("background task %r ended with %r", task.get_name(), outcome)  # shut down all the same
        if gate is not None:
            await gate.drain_leases()  # unused leased units back to Redis before the client closes
        if metering is not None:
            metering.close()
        if reader is not None:
            reader.close()
        await redis.aclose()
        await subscriber.aclose()
        if close_dispatcher is not None:
            await close_dispatcher()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("stopped")
