"""Replays and test events: re-queue an event (the same id, so the same ``webhook-id``: receivers that
already processed it deduplicate) to its endpoints or one of them, with the whole retry schedule again;
queue a ``webhook.test`` event to one endpoint. Used by the admin API and ``tollway webhooks``."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tollway.notifications.dispatcher import EndpointDirectory, Target
from tollway.notifications.events import Event, event_id
from tollway.notifications.queue import DeliveryQueue


class UnknownEndpoint(LookupError):
    """No endpoint has this id."""


class DisabledEndpoint(ValueError):
    """The endpoint is disabled: nothing is delivered to it until it is enabled again."""


@dataclass(frozen=True, slots=True)
class WebhookActions:
    queue: DeliveryQueue
    endpoints: EndpointDirectory
    now_ms: Callable[[], int]

    async def _target(self, endpoint_id: str) -> Target:
        found = {t.id: t for t in await self.endpoints.targets()}.get(endpoint_id)
        if found is None:
            raise UnknownEndpoint(endpoint_id)
        if not found.enabled:
            raise DisabledEndpoint(f"endpoint {endpoint_id!r} is disabled; enable it before sending to it")
        return found

    async def replay(self, events: Sequence[Event], endpoint_id: str | None = None) -> int:
        """Queue ``events`` again to ``endpoint_id`` (whatever its filter) or to every enabled endpoint
        whose filter admits each; the deliveries queued (one already waiting is not queued twice)."""
        if endpoint_id is not None:
            chosen = [(await self._target(endpoint_id)).id]
        else:
            targets = await self.endpoints.targets()
        queued = 0
        now = self.now_ms()
        for event in events:
            ids = chosen if endpoint_id is not None else [t.id for t in targets if t.admits(event.type)]
            queued += await self.queue.enqueue(event, ids, now, record=False, fresh=True)
        return queued

    async def send_test(self, endpoint_id: str) -> Event:
        """A ``webhook.test`` event queued to ``endpoint_id`` (and recorded like any event)."""
        target = await self._target(endpoint_id)
        now = self.now_ms()
        event = Event(
            event_id("webhook.test", target.id, secrets.token_hex(8)),
            "webhook.test",
            now,
            "",
            {"endpoint_id": target.id},
        )
        await self.queue.enqueue(event, [target.id], now)
        return event
