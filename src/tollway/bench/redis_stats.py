"""Redis (Valkey) round trips and limiter checks over the measured window, read from Valkey's ``INFO``.

Tollway's own counters (``RedisLimiter.checks`` / ``round_trips``) live inside ``tollway serve``, so the
bench counts on the server side instead, with one ``INFO stats commandstats`` right before and one right
after the window on a connection opened beforehand:

- **checks** = the change in ``cmdstat_evalsha`` calls: one EVALSHA per limiter check, exact.
- **round trips** = the change in ``total_reads_processed`` minus the one read of our own closing
  ``INFO`` (the opening one is counted before the window starts). Valkey counts one read per readable
  event on a client socket, and a client sends a pipeline with one write and waits for its replies, so
  a coalesced pipeline of k EVALSHAs is one read: checked against the limiter's own counter (300
  pipelines of 1-64 checks: 300 reads). Caveats, both making the figure an upper bound, never an
  under-count: a pipeline larger than Valkey's 16 KiB read buffer (about 60 checks; the coalescer allows
  256) takes several reads; and Tollway's other traffic counts too (cache refreshes of the key and the
  subscription, about one lookup per second each, and pub/sub), a few dozen reads in a window of
  hundreds of thousands. ``total_commands_processed`` is no use here: it also counts every
  ``redis.call`` inside the Lua script.

Admitted requests are Envoy's ``ext_authz.ok`` over the same window. With capacity leases a check
consumes many requests' worth at once, so checks can be far fewer than admitted requests; what must
match them is what the counters consumed: **quota units** = the change in the sum of every quota counter
(``tw:q:*``, one per customer and period), each admitted request adding its cost (1 in the bench) —
up to the units of the leases still open at the window's edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.exceptions import RedisError

from tollway.bench.errors import BenchError

_TIMEOUT_S: Final = 5.0
_OWN_READS_PER_WINDOW: Final = 1  # the closing INFO's own read


@dataclass(frozen=True, slots=True)
class RedisCounters:
    reads: int
    evalsha_calls: int
    quota_units: int = 0


@dataclass(frozen=True, slots=True)
class RedisUsage:
    """Valkey's view of one measured window."""

    round_trips: int
    checks: int
    admitted: int
    quota_units: int = 0  # units the quota counters consumed (each admitted bench request adds 1)

    @property
    def round_trips_per_admitted_request(self) -> float | None:
        return self.round_trips / self.admitted if self.admitted else None

    @property
    def checks_per_round_trip(self) -> float | None:
        return self.checks / self.round_trips if self.round_trips else None

    @property
    def checks_per_admitted_request(self) -> float | None:
        return self.checks / self.admitted if self.admitted else None


class RedisSampler:
    """One connection to Valkey, opened by ``open`` before the window so its handshake is not counted."""

    def __init__(self, url: str) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S)

    def sample(self) -> RedisCounters:
        try:
            info: dict[str, Any] = self._client.info("stats", "commandstats")
        except RedisError as exc:
            raise BenchError(f"INFO from Valkey failed: {exc}") from exc
        evalsha = info.get("cmdstat_evalsha", {})
        try:
            keys = list(self._client.scan_iter(match="*:q:{*", count=1000))  # not row G's cq: counters
            units = sum(int(v) for v in self._client.mget(keys) if v is not None) if keys else 0
        except (RedisError, ValueError) as exc:
            raise BenchError(f"reading the quota counters from Valkey failed: {exc}") from exc
        return RedisCounters(
            reads=int(info["total_reads_processed"]),
            evalsha_calls=int(evalsha.get("calls", 0)) if isinstance(evalsha, dict) else 0,
            quota_units=units,
        )

    def prepaid_balance_micros(self) -> int:
        """Σ remaining over every grant of every customer (row G), in micro-units."""
        try:
            total = 0
            for key in self._client.scan_iter(match="*:cr:{*", count=1000):
                for value in self._client.hvals(key):
                    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
                    total += int(text.split(" ", 1)[0])
            return total
        except (RedisError, ValueError) as exc:
            raise BenchError(f"reading the prepaid balances from Valkey failed: {exc}") from exc

    def open(self) -> RedisSampler:
        try:
            self._client.ping()
        except RedisError as exc:
            raise BenchError(f"cannot reach Valkey: {exc}") from exc
        return self

    def close(self) -> None:
        self._client.close()


def usage(before: RedisCounters, after: RedisCounters, admitted: int) -> RedisUsage:
    return RedisUsage(
        round_trips=max(after.reads - before.reads - _OWN_READS_PER_WINDOW, 0),
        checks=after.evalsha_calls - before.evalsha_calls,
        admitted=admitted,
        quota_units=after.quota_units - before.quota_units,
    )
