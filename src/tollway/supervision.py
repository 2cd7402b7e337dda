"""Background tasks that cannot die silently.

``supervise(name, run)`` runs ``run()`` until it returns (its work is done, e.g. the lease sweeper with
leases off, or the loader once told to stop) or the task is cancelled (shutdown). When ``run()`` raises,
the failure is logged with its traceback and ``run()`` is started again after a back-off: ``first_delay_s``,
doubled after each failure up to ``max_delay_s``, and back to ``first_delay_s`` once a run lasted
``healthy_after_s``. A task that died unnoticed would leave the process serving with a frozen catalog,
stale caches or unrefunded leases; a restarted one heals once the fault is gone. No background task of
``tollway serve`` stops the process (see docs/operations.md, "Background tasks").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
    healthy_after_s: float = HEALTHY_AFTER_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``run()``, restarting it with back-off whenever it raises; returns when it returns."""
    delay = first_delay_s
    restarts = 0
    while True:
        started = monotonic()
        try:
            await run()
        except Exception:  # CancelledError (shutdown) is no Exception: it ends the task
            if monotonic() - started >= healthy_after_s:
                delay = first_delay_s
            restarts += 1
            log.exception("background task %r failed; restart %d in %.1f s", name, restarts, delay)
            await sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if restarts:
            log.info("background task %r finished", name)
        return


def start_supervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """``supervise(name, run)`` as a task named ``name``."""
    return asyncio.get_running_loop().create_task(supervise(name, run), name=name)
