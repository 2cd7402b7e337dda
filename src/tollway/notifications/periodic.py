"""The periodic notification jobs of one process, built from the settings: what the dispatcher's process
runs beside delivery (``tollway dispatch``, or inside ``tollway meter``)::

    for name, job in periodic_jobs(settings, redis, clock, catalog):
        start_supervised(name, lambda job=job: job(stop))

``catalog``: the compiled catalog now (a ``LiveCatalog``'s ``current``); None (no ``TOLLWAY_CATALOG``):
no budget evaluator, since budgets are relative to plans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tollway.clock import Clock
from tollway.notifications.budgets import BudgetEvaluator
from tollway.notifications.expiry import ExpiryNotifier
from tollway.notifications.jobs import NotifySettings
from tollway.notifications.outbox import OutboxWriter
from tollway.plans.catalog import CompiledCatalog
from tollway.redis_types import RedisClient

Job = Callable[[asyncio.Event], Awaitable[None]]


def periodic_jobs(
    redis: RedisClient,
    prefix: str,
    clock: Clock,
    catalog: Callable[[], CompiledCatalog] | None,
    settings: NotifySettings | None = None,
) -> list[tuple[str, Job]]:
    """(name, ``run(stop)``) of the expiry notifier and, with a catalog, the budget evaluator."""
    notify = settings or NotifySettings()
    events = OutboxWriter(redis, prefix)
    jobs: list[tuple[str, Job]] = [
        ("expiry notifier", ExpiryNotifier.from_settings(redis, prefix, events, clock, notify).run)
    ]
    if catalog is not None:
        jobs.append(
            ("budget evaluator", BudgetEvaluator.from_settings(redis, prefix, events, catalog, clock, notify).run)
        )
    return jobs
