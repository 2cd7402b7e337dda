"""Settings and the loop of the periodic notification jobs (``expiry.ExpiryNotifier``,
``budgets.BudgetEvaluator``): ``TOLLWAY_NOTIFY_*``. Kept apart from ``tollway.settings`` like the admin
API's settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLWAY_NOTIFY_", env_file=None, extra="ignore")

    # key.expiring and grant.expiring: this many days before the expiry.
    expiring_days: Annotated[int, Field(ge=1, le=365)] = 7
    # How often the expiry job scans keys and grants (and re-emits the recent key events, a retry).
    expiry_interval_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    # How often customers' own budgets are compared with their counters.
    budget_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0


async def run_every(
    name: str,
    run_once: Callable[[datetime], Awaitable[object]],
    now: Callable[[], datetime],
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Call ``run_once(now())`` every ``interval_s`` until ``stop`` is set; a failed run (Redis down) is
    logged and retried at the next interval."""
    while not stop.is_set():
        try:
            await run_once(now())
        except Exception as exc:
            log.warning("%s failed, retrying in %.0fs: %s: %s", name, interval_s, type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
