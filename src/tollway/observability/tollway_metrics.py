"""The metrics a Tollway process exposes on ``GET /metrics`` (admin port), and the wrapper that counts
every verdict at the edge.

===========================================  =========  ===================================================
``tollway_decisions_total``                  counter    verdicts by ``protocol``, ``outcome`` (admitted |
                                                        refused) and ``reason`` (the refusal's slug)
``tollway_check_duration_seconds``           histogram  time to decide, by ``protocol``
``tollway_redis_round_trips_total``          counter    limiter pipelines/scripts sent to Redis
``tollway_redis_errors_total``               counter    limiter calls that failed or timed out
``tollway_redis_round_trip_seconds``         histogram  limiter round-trip latency
``tollway_capacity_leases_total``            counter    capacity leases taken
``tollway_requests_from_leases_total``       counter    checks answered from a lease, in process
``tollway_spool_pending_bytes``              gauge      usage rows written and not yet loaded (this host)
``tollway_usage_rows_loaded_total``          counter    rows the loader inserted into ClickHouse
``tollway_catalog_info``                     gauge      1, labelled with the live catalog's name, version
                                                        and digest
``tollway_stale_answers_total``              counter    lookups answered with a last-known record while
                                                        Redis could not be reached, by ``store`` (keys |
                                                        subscriptions)
===========================================  =========  ===================================================
"""

from __future__ import annotations

import time

from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.decision import Decider
from tollway.extproc.problems import Refusals
from tollway.observability.metrics import Counter, Histogram, Reading, Registry


class TollwayMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.decisions: Counter = r.counter(
            "tollway_decisions_total", "Authorization verdicts.", ("protocol", "outcome", "reason")
        )
        self.check_seconds: Histogram = r.histogram(
            "tollway_check_duration_seconds", "Time to decide a check, in seconds.", ("protocol",)
        )
        self.redis_round_trips: Counter = r.counter(
            "tollway_redis_round_trips_total", "Limiter round trips to Redis (a pipeline or one script call)."
        )
        self.redis_errors: Counter = r.counter(
            "tollway_redis_errors_total", "Limiter calls to Redis that failed or timed out."
        )
        self.redis_seconds: Histogram = r.histogram(
            "tollway_redis_round_trip_seconds", "Limiter round-trip latency to Redis, in seconds."
        )

    def add_readings(
        self,
        *,
        leases: Reading | None = None,
        lease_requests: Reading | None = None,
        spool_pending: Reading | None = None,
        rows_loaded: Reading | None = None,
        catalog: Reading | None = None,
        stale_answers: Reading | None = None,
    ) -> None:
        """Counts kept by other components, read when scraped (each optional: a process without a
        catalog, or without metering, has none)."""
        r = self.registry
        if leases is not None:
            r.counter("tollway_capacity_leases_total", "Capacity leases taken from Redis.", read=leases)
        if lease_requests is not None:
            r.counter(
                "tollway_requests_from_leases_total", "Checks answered in process from a lease.", read=lease_requests
            )
        if spool_pending is not None:
            r.gauge("tollway_spool_pending_bytes", "Usage bytes written and not yet loaded.", read=spool_pending)
        if rows_loaded is not None:
            r.counter("tollway_usage_rows_loaded_total", "Usage rows inserted into ClickHouse.", read=rows_loaded)
        if catalog is not None:
            r.gauge("tollway_catalog_info", "The live plan catalog.", ("name", "version", "digest"), read=catalog)
        if stale_answers is not None:
            r.counter(
                "tollway_stale_answers_total",
                "Lookups answered with a last-known record because Redis could not be reached.",
                ("store",),
                read=stale_answers,
            )

    def decision(self, decision: Decision, seconds: float, protocol: str) -> None:
        if isinstance(decision, Allow):
            self.decisions.inc((protocol, "admitted", ""))
        else:
            self.decisions.inc((protocol, "refused", decision.reason or f"status-{decision.status}"))
        self.check_seconds.observe(seconds, (protocol,))

    def redis_round_trip(self, seconds: float, ok: bool) -> None:
        self.redis_round_trips.inc()
        if ok:
            self.redis_seconds.observe(seconds)
        else:
            self.redis_errors.inc()


class MeasuredDecider:
    """A ``Decider`` that counts each verdict and times it (the sync path, or the whole async one)."""

    def __init__(self, core: Decider, metrics: TollwayMetrics, protocol: str) -> None:
        self._core = core
        self._metrics = metrics
        self._protocol = protocol

    @property
    def refusals(self) -> Refusals:
        return self._core.refusals

    def decide_now(self, request: CheckRequest) -> Decision | None:
        started = time.perf_counter()
        decision = self._core.decide_now(request)
        if decision is not None:
            self._metrics.decision(decision, time.perf_counter() - started, self._protocol)
        return decision

    async def decide(self, request: CheckRequest) -> Decision:
        started = time.perf_counter()
        decision = await self._core.decide(request)
        self._metrics.decision(decision, time.perf_counter() - started, self._protocol)
        return decision
