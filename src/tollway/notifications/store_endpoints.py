"""The endpoint store (h2's ``notifications.endpoint_store.EndpointStore``) as the dispatcher's
:class:`~tollway.notifications.dispatcher.EndpointDirectory`: every endpoint with its live secrets opened
(the current one, and the previous one during a rotation's overlap), its filter and whether it is enabled;
disabling through the store's guarded ``mark_disabled`` (True for the one caller that disabled it).

Typed structurally (``Protocol``s below) so this module does not import the store: wire it with
``StoreEndpoints(store_from_settings(redis, settings))`` in ``dispatcher.endpoint_directory``.
An endpoint whose secret cannot be opened (another pepper) is skipped and logged once, never delivered
unsigned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from tollway.notifications.dispatcher import Target

log = logging.getLogger(__name__)


class SealedLike(Protocol):
    @property
    def sealed(self) -> str: ...


class EndpointLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def event_types(self) -> tuple[str, ...]: ...
    @property
    def enabled(self) -> bool: ...
    def live_secrets(self, now: datetime) -> Sequence[SealedLike]: ...


class BoxLike(Protocol):
    def open(self, sealed: str, endpoint_id: str) -> str: ...


class StoreLike(Protocol):
    @property
    def box(self) -> BoxLike: ...
    async def all(self) -> Sequence[EndpointLike]: ...
    async def mark_disabled(self, endpoint_id: str, at: datetime, reason: str) -> bool: ...


class StoreEndpoints:
    def __init__(self, store: StoreLike, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._now = now
        self._unreadable: set[str] = set()

    async def targets(self) -> Sequence[Target]:
        now = self._now()
        out = []
        for endpoint in await self._store.all():
            try:
                secrets = tuple(self._store.box.open(s.sealed, endpoint.id) for s in endpoint.live_secrets(now))
            except ValueError as exc:
                if endpoint.id not in self._unreadable:
                    log.error("webhook endpoint %s: its secret cannot be opened (%s); not delivered", endpoint.id, exc)
                    self._unreadable.add(endpoint.id)
                continue
            out.append(Target(endpoint.id, endpoint.url, secrets, frozenset(endpoint.event_types), endpoint.enabled))
        return out

    async def disable(self, endpoint_id: str, reason: str, at_ms: int) -> bool:
        return await self._store.mark_disabled(endpoint_id, datetime.fromtimestamp(at_ms / 1000, UTC), reason)
