"""The dispatcher: outbox → delivery queue → signed HTTP attempts → retries, disabling, history.

Runs inside ``tollway meter`` (``TOLLWAY_DISPATCH=true``, the default; that process owns the embedded
ClickHouse) or alone as ``tollway dispatch``. Any number of dispatchers may run: the outbox is read
through one consumer group and each delivery is claimed by one of them at a time.

Three loops: the :class:`OutboxReader` (events → ``enqueue`` to every enabled endpoint whose filter admits
the type), the delivery loop (``claim`` due deliveries while fewer than ``max_in_flight`` are in flight,
each attempt its own task; at most ``per_endpoint`` in flight per endpoint, the rest of a busy endpoint's
deliveries deferred), and the settle loop (outcomes written back in batches). An endpoint whose attempts
have failed, with no success in between, for ``disable_after_s`` is disabled and ``endpoint.disabled`` is
queued for the other endpoints.

Endpoints come from an :class:`EndpointDirectory`: the pepper-sealed endpoint store
(``notifications.endpoint_store``, seen through ``store_endpoints.StoreEndpoints``; :func:`endpoint_directory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollway.notifications.delivery import SCHEDULE_S, AddressCheck, address_check, attempt, next_delay_s
from tollway.notifications.endpoint_store import store_from_settings
from tollway.notifications.endpoints import resolve_and_check
from tollway.notifications.events import Event, event_id
from tollway.notifications.history import HistoryWriter, Runs
from tollway.notifications.http_post import HttpPoster, Resolve
from tollway.notifications.outbox_reader import OutboxReader
from tollway.notifications.queue import Claimed, DeliveryQueue, Outcome, Settled
from tollway.redis_types import RedisClient
from tollway.settings import Settings

log = logging.getLogger(__name__)

IDLE_MIN_S = 0.05
IDLE_MAX_S = 1.0


class DispatchSettings(BaseSettings):
    """``TOLLWAY_*`` settings of the dispatcher (docs/notifications-delivery.md)."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", env_file=None, extra="ignore")

    dispatch: bool = True  # run the dispatcher inside `tollway meter`
    outbox_scan_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    webhook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    webhook_disable_after_s: Annotated[float, Field(ge=0, le=90 * 86400)] = 5 * 86400.0
    webhook_retry_schedule_s: str = ""  # comma-separated delays before each attempt; '' = SCHEDULE_S
    webhook_max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 256
    webhook_per_endpoint: Annotated[int, Field(ge=1, le=10_000)] = 64
    webhook_allow_private: bool = False  # loopback/private receivers (development, tests)
    # A claimed delivery (or a read outbox entry) of a dispatcher that stops answering is taken over after this.
    webhook_claim_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    def schedule(self) -> tuple[float, ...]:
        if not self.webhook_retry_schedule_s.strip():
            return SCHEDULE_S
        values = tuple(float(v) for v in self.webhook_retry_schedule_s.split(","))
        if not values or any(v < 0 for v in values):
            raise ValueError("TOLLWAY_WEBHOOK_RETRY_SCHEDULE_S: non-negative seconds, comma separated")
        return values


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint as the dispatcher sees it: ``secrets`` the live ``whsec_`` secrets (both during a
    rotation's overlap), ``types`` the event types it takes (empty: all)."""

    id: str
    url: str
    secrets: tuple[str, ...]
    types: frozenset[str] = frozenset()
    enabled: bool = True

    def admits(self, event_type: str) -> bool:
        return self.enabled and (not self.types or event_type in self.types or event_type == "webhook.test")


class EndpointDirectory(Protocol):
    """What the dispatcher needs of the endpoint store (h2's ``endpoint_store`` provides it at merge)."""

    async def targets(self) -> Sequence[Target]:
        """Every endpoint, enabled or not, with its live secrets decrypted."""
        ...

    async def disable(self, endpoint_id: str, reason: str, at_ms: int) -> bool:
        """Disable the endpoint; True if this call disabled it (False: already disabled or gone)."""
        ...


@dataclass
class DispatchStats:
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    disabled: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        endpoints: EndpointDirectory,
        settings: DispatchSettings | None = None,
        *,
        check: AddressCheck | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        client: HttpPoster | None = None,
        endpoints_ttl_s: float = 1.0,
        consumer: str | None = None,
        on_settled: Callable[[Sequence[Settled]], Awaitable[None]] | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        """``resolve``: the endpoint store's checked resolution (``endpoints.resolve_and_check`` with the
        allow-private setting bound): each connection then goes to an address it returned, and the
        default ``check`` (resolve, refuse non-public addresses) is not needed."""
        self.settings = settings or DispatchSettings()
        s = self.settings
        self._schedule = s.schedule()
        self.queue = DeliveryQueue(redis, prefix, claim_ms=int(max(s.webhook_claim_s, s.webhook_timeout_s + 1) * 1000))
        self.reader = OutboxReader(
            redis, prefix, self.route, scan_s=s.outbox_scan_s, consumer=consumer, claim_idle_ms=self.queue.claim_ms
        )
        self._endpoints = endpoints
        self._check = check or (
            _checked_when_connecting if resolve is not None else address_check(s.webhook_allow_private)
        )
        self._now_ms = now_ms
        self._own_client = client is None
        self._client = client or HttpPoster(resolve=resolve)
        self._ttl_s = endpoints_ttl_s
        self._targets: dict[str, Target] = {}
        self._targets_at = -1e9
        self._targets_lock = asyncio.Lock()
        self._in_flight: dict[str, int] = {}
        self._total_in_flight = 0
        self._settled: list[Settled] = []
        self._has_settled = asyncio.Event()
        self._wake = asyncio.Event()
        self._on_settled = on_settled
        self.stats = DispatchStats()

    # endpoints -------------------------------------------------------------------------------------

    async def targets(self) -> dict[str, Target]:
        """Every endpoint by id, read at most every ``endpoints_ttl_s`` (one read however many wait)."""
        if time.monotonic() - self._targets_at < self._ttl_s:
            return self._targets
        async with self._targets_lock:
            if time.monotonic() - self._targets_at >= self._ttl_s:
                self._targets = {t.id: t for t in await self._endpoints.targets()}
                self._targets_at = time.monotonic()
        return self._targets

    async def route(self, events: Sequence[Event]) -> None:
        """Queue each event to every enabled endpoint whose filter admits its type (the reader's handler)."""
        targets = (await self.targets()).values()
        batch = [(event, [t.id for t in targets if t.admits(event.type)]) for event in events]
        await self.queue.enqueue_many(batch, self._now_ms())
        self._wake.set()

    # the loops -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Read, deliver and settle until ``stop`` is set (or cancelled); in-flight attempts end with it and
        their claims expire, so another dispatcher (or this one, restarted) delivers them again."""
        stop = stop or asyncio.Event()
        tasks = [
            asyncio.create_task(self.reader.run(stop), name="outbox reader"),
            asyncio.create_task(self._deliver_loop(stop), name="webhook delivery"),
            asyncio.create_task(self._settle_loop(stop), name="webhook settle"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._settled:
                await self._flush()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _deliver_loop(self, stop: asyncio.Event) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            await self._claim_and_start(stop, running)
        finally:  # stopped or failed: attempts in flight end here; their claims expire and they come back
            for task in list(running):
                task.cancel()

    async def _claim_and_start(self, stop: asyncio.Event, running: set[asyncio.Task[None]]) -> None:
        s = self.settings
        while not stop.is_set():
            room = s.webhook_max_in_flight - self._total_in_flight
            if room >= min(32, s.webhook_max_in_flight) or (room > 0 and self._total_in_flight < room):
                busy = [e for e, n in self._in_flight.items() if n >= s.webhook_per_endpoint]
                batch = await self.queue.claim(self._now_ms(), min(room, 256), busy)
                for claimed in batch:
                    self._in_flight[claimed.endpoint_id] = self._in_flight.get(claimed.endpoint_id, 0) + 1
                    self._total_in_flight += 1
                    task = asyncio.create_task(self._deliver(claimed))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if batch:
                    await asyncio.sleep(0)
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle_s())

    async def _idle_s(self) -> float:
        """How long the delivery loop may wait when nothing it can claim is due: until the earliest queued
        delivery (a retry, or a claim that expires) is due, at most ``IDLE_MAX_S``, at least ``IDLE_MIN_S``.
        Events this dispatcher routes and attempts it ends wake it at once; deliveries queued by another
        process (a replay from the admin API, another dispatcher) are seen within ``IDLE_MAX_S``."""
        if self._total_in_flight:
            return IDLE_MIN_S
        due = await self.queue.next_due_ms()
        if due is None:
            return IDLE_MAX_S
        return min(max((due - self._now_ms()) / 1000, IDLE_MIN_S), IDLE_MAX_S)

    async def _settle_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._settled:  # idle: no wake-ups until an attempt ends (or once a second, to see `stop`)
                self._has_settled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._has_settled.wait(), 1.0)
                continue
            await asyncio.sleep(0.005 if len(self._settled) < 512 else 0)  # outcomes gather into one batch
            await self._flush()

    async def _flush(self) -> None:
        batch, self._settled = self._settled, []
        await self.queue.settle(batch)
        if self._on_settled is not None:
            await self._on_settled(batch)

    # one delivery ----------------------------------------------------------------------------------

    async def _deliver(self, claimed: Claimed) -> None:
        try:
            settled = await self._attempt(claimed)
            if settled is not None:
                self._settled.append(settled)
                self._has_settled.set()
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly (retried when its claim expires)", claimed.member)
        finally:
            self._in_flight[claimed.endpoint_id] -= 1
            if not self._in_flight[claimed.endpoint_id]:
                del self._in_flight[claimed.endpoint_id]
            self._total_in_flight -= 1
            self._wake.set()

    async def _attempt(self, claimed: Claimed) -> Settled | None:
        target = (await self.targets()).get(claimed.endpoint_id)
        now = self._now_ms()
        if claimed.event is None or target is None or not target.enabled:
            reason = "event expired" if claimed.event is None else "endpoint gone or disabled"
            return Settled(claimed, "dropped", row=attempt_row(claimed, now, 0, "dropped", 0, reason), now_ms=now)
        event = claimed.event
        got = await attempt(
            self._client,
            target.url,
            target.secrets,
            event.id,
            event.payload(),
            self.settings.webhook_timeout_s,
            self._check,
        )
        now = self._now_ms()
        if got.ok:
            self.stats.delivered += 1
            return Settled(
                claimed,
                "delivered",
                row=attempt_row(claimed, now, got.status, "delivered", got.duration_ms, ""),
                now_ms=now,
            )
        self.stats.failed_attempts += 1
        delay = next_delay_s(claimed.attempt, self._schedule)
        outcome: Outcome = "retry" if delay is not None else "failed"
        if outcome == "failed":
            self.stats.given_up += 1
        settled = Settled(
            claimed,
            outcome,
            next_ms=now + int((delay or 0) * 1000),
            row=attempt_row(claimed, now, got.status, outcome, got.duration_ms, got.error),
            now_ms=now,
        )
        await self._maybe_disable(target, now, got.error or f"HTTP {got.status}")
        return settled

    async def _maybe_disable(self, target: Target, now: int, reason: str) -> None:
        since = await self.queue.failing_since(target.id)
        if since is None or now - since < self.settings.webhook_disable_after_s * 1000:
            return
        if not await self._endpoints.disable(target.id, reason, now):
            return
        log.warning("webhook endpoint %s disabled: failing since %d ms (%s)", target.id, since, reason)
        self.stats.disabled.append(target.id)
        self._targets_at = -1e9
        await self.queue.clear_failing(target.id)
        event = Event(
            event_id("endpoint.disabled", target.id, now),
            "endpoint.disabled",
            now,
            "",
            {
                "endpoint_id": target.id,
                "url": target.url,
                "failing_since": _rfc3339(since),
                "reason": reason[:300],
            },
        )
        others = [t.id for t in (await self.targets()).values() if t.id != target.id and t.admits(event.type)]
        await self.queue.enqueue(event, others, now)


async def _checked_when_connecting(url: str) -> None:
    """No separate check: the poster's ``resolve`` checks every address it connects to."""


def _rfc3339(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def attempt_row(claimed: Claimed, ts_ms: int, status: int, outcome: str, duration_ms: int, error: str) -> str:
    """The history row of one attempt (table ``webhook_deliveries``); ``attempt_id`` is the claim's token,
    unique per attempt, so a row written twice is one row."""
    return json.dumps(
        {
            "t": "webhook_deliveries",
            "event_id": claimed.event_id,
            "endpoint_id": claimed.endpoint_id,
            "attempt_id": claimed.token,
            "attempt": claimed.attempt,
            "ts": ts_ms,
            "status": status,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "error": error,
        },
        separators=(",", ":"),
    )


def endpoint_directory(redis: RedisClient, settings: Settings) -> EndpointDirectory:
    """The endpoint store the dispatcher, the admin API and the CLI read: ``notifications.endpoint_store``
    (secrets sealed with the pepper), seen through :class:`StoreEndpoints`."""
    from tollway.notifications.store_endpoints import StoreEndpoints  # it imports Target from here

    return StoreEndpoints(store_from_settings(redis, settings))


def build_dispatch(
    redis: RedisClient,
    settings: Settings,
    runs: Callable[[], Runs | None] | None,
    dispatch: DispatchSettings | None = None,
    endpoints: EndpointDirectory | None = None,
) -> tuple[Dispatcher, HistoryWriter | None]:
    """The dispatcher and (with ``runs``: how to reach ClickHouse, None while it cannot) its history
    writer, on a patient Redis client (batched scripts, not hot-path calls). ``endpoints``: the endpoint
    store (default: the pepper-sealed store of ``settings``). Every connection goes to an address
    ``endpoints.resolve_and_check`` returned for the endpoint's host (no second resolution: DNS rebinding
    cannot reach a private address unless ``TOLLWAY_WEBHOOKS_ALLOW_PRIVATE``)."""
    allow_private = settings.webhooks_allow_private

    async def resolve(host: str, port: int) -> Sequence[object]:
        return await resolve_and_check(host, port, allow_private)

    directory = endpoints or endpoint_directory(redis, settings)
    dispatcher = Dispatcher(redis, settings.redis_prefix, directory, dispatch, resolve=resolve)
    writer = HistoryWriter(redis, settings.redis_prefix, runs) if runs is not None else None
    return dispatcher, writer
