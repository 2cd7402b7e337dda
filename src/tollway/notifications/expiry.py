"""The periodic job that tells of expiries ahead: ``key.expiring`` for an active API key and
``grant.expiring`` for a credit grant with something left, ``TOLLWAY_NOTIFY_EXPIRING_DAYS`` (7) days
before they expire. Once per (key, expiry) and (customer, grant, expiry): the ids carry the expiry, so
every scan that sees it ahead emits the same event and the outbox keeps the first.

It is also the retry of the key events the keyring emits after a committed change: every scan re-emits
``key.created`` and ``key.revoked`` for keys created or revoked in the last ``CATCH_UP`` (a no-op for
those that got through; the missing event for those whose emission failed).

Run it in one process (the dispatcher's): ``run(stop)``, or ``run_once(now)`` from a test. More than
one is harmless (the once-markers) but wasted work.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Final

from tollway.auth.records import KeyStatus
from tollway.auth.redis_store import RedisKeyStore
from tollway.clock import Clock
from tollway.credits.grants import NO_EXPIRY
from tollway.credits.store import GrantStore
from tollway.credits.units import from_micros
from tollway.notifications.emitter import EventEmitter
from tollway.notifications.events import Event
from tollway.notifications.jobs import NotifySettings, run_every
from tollway.notifications.lifecycle import grant_expiring, key_created, key_expiring, key_revoked, ms
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

CATCH_UP: Final = timedelta(days=1)


class ExpiryNotifier:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str,
        events: EventEmitter,
        clock: Clock,
        *,
        days: int = 7,
        interval_s: float = 300.0,
    ) -> None:
        self._keys = RedisKeyStore(redis, prefix)
        self._grants = GrantStore(redis, prefix)
        self._events = events
        self._clock = clock
        self._ahead = timedelta(days=days)
        self._interval_s = interval_s

    @classmethod
    def from_settings(
        cls, redis: RedisClient, prefix: str, events: EventEmitter, clock: Clock, settings: NotifySettings
    ) -> ExpiryNotifier:
        return cls(redis, prefix, events, clock, days=settings.expiring_days, interval_s=settings.expiry_interval_s)

    async def due(self, now: datetime) -> list[Event]:
        """Every event a scan at ``now`` emits (expiries ahead, recent key changes)."""
        found: list[Event] = []
        horizon = now + self._ahead
        for record in await self._keys.list():
            if record.created_at >= now - CATCH_UP:
                found.append(key_created(record))
            if record.status is KeyStatus.REVOKED:
                if record.revoked_at is not None and record.revoked_at >= now - CATCH_UP:
                    found.append(key_revoked(record))
                continue
            if record.expires_at is not None and now < record.expires_at <= horizon:
                found.append(key_expiring(record, now))
        now_ms, horizon_ms = ms(now), ms(horizon)
        for customer in await self._grants.customers():
            snapshot = await self._grants.snapshot(customer)
            for view in snapshot.views():
                grant = view.record
                if grant is None or grant.remaining <= 0 or grant.expires_ms == NO_EXPIRY:
                    continue
                if now_ms < grant.expires_ms <= horizon_ms:
                    remaining = from_micros(grant.remaining)
                    found.append(grant_expiring(customer, view.grant_id, view.unit, remaining, grant.expires_ms, now))
        return found

    async def run_once(self, now: datetime) -> int:
        """One scan; how many events were new. A failed emission is logged and retried by the next scan."""
        new = 0
        failed = 0
        for event in await self.due(now):
            try:
                new += bool(await self._events.emit(event))
            except Exception as exc:
                failed += 1
                log.warning("event %s (%s) not emitted, retried next scan: %s", event.id, event.type, exc)
        if failed:
            log.warning("expiry scan: %d event(s) not emitted", failed)
        return new

    async def run(self, stop: asyncio.Event) -> None:
        """Scan every ``interval_s`` until ``stop`` is set."""
        await run_every("expiry notifier", self.run_once, self._clock.now, self._interval_s, stop)
