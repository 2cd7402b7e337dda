"""What a code path that commits a change needs to announce it: an :class:`EventEmitter` (pure: no I/O
here, so a stage such as ``auth`` can take one without importing a Redis adapter of notifications).

The change is committed first, then its event emitted; if emitting fails the change stands and the
failure is logged (``emit_after_commit``). The event's deterministic id makes a later emission of the
same change (a re-run of the job, the periodic catch-up of ``notifications.expiry``) a no-op when the
first one did get through, and the missing event when it did not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from tollway.notifications.events import Event

log = logging.getLogger(__name__)


class EventEmitter(Protocol):
    async def emit(self, event: Event) -> bool:
        """Append ``event`` to its customer's outbox once; True if it was new. Raises on a store failure."""
        ...


async def emit_after_commit(emitter: EventEmitter | None, events: Sequence[Event]) -> int:
    """Emit ``events`` of a change already committed; never raises. How many were new (failures are
    logged with the event ids and types, never their bodies, and counted as not new)."""
    if emitter is None:
        return 0
    new = 0
    for event in events:
        try:
            new += bool(await emitter.emit(event))
        except Exception as exc:
            log.warning(
                "event %s (%s) of customer %r not emitted: %s: %s",
                event.id,
                event.type,
                event.customer_id,
                type(exc).__name__,
                exc,
            )
    return new
