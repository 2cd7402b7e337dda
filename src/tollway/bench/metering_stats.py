"""Did row E really meter? Tollway's own counters (``GET /healthz`` on its admin port) around the window.

Every request Tollway decides writes a decision row (version 1) to the spool before Envoy hears the
verdict, and every admitted request comes back as a second row (version 2) through Envoy's gRPC access
log; the loader in ``tollway meter`` inserts both into the embedded ClickHouse. So once the loader
has caught up, rows loaded ≈ 2 × requests (refused probes have one row: their decision row is final).

``/healthz`` reports totals since Tollway started (``metering.loader.rows_loaded``,
``metering.access_log_rows``, ``metering.spool_bytes``). They are read right before and right after the
measured window, then again until the loader has caught up (``settle``): rows loaded equal the rows
written (Envoy's ext_authz decisions plus Tollway's access-log rows) and the log stream has gone quiet.
The row is refused when nothing was metered: no row loaded, or no access-log row arrived.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tollway.bench.errors import BenchError

_TIMEOUT_S: Final = 5.0
SETTLE_TIMEOUT_S: Final = 30.0
_POLL_S: Final = 0.25
_QUIET_S: Final = 0.6  # > Envoy's access-log flush interval (0.2 s) plus the loader's poll (0.2 s)


@dataclass(frozen=True, slots=True)
class MeteringCounters:
    """Tollway's metering totals since it started, and Envoy's decisions (ext_authz ok + denied) then."""

    rows_loaded: int
    access_log_rows: int
    spool_bytes: int
    loader_batches: int
    loader_failures: int
    loader_last_error: str
    decisions: int = 0
    read: int | None = None  # lines the loader consumed (it drops decision rows superseded in the same batch)

    @property
    def rows_read(self) -> int:
        return self.rows_loaded if self.read is None else self.read

    @property
    def rows_written(self) -> int:
        """Rows in the spool so far: one decision row per check, one access-log row per admit."""
        return self.decisions + self.access_log_rows

    @property
    def backlog(self) -> int:
        return max(0, self.rows_written - self.rows_read)


def read(url: str, decisions: int = 0) -> MeteringCounters:
    """Tollway's ``/healthz`` metering counters; ``decisions``: Envoy's ext_authz ok + denied, read just before."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - a loopback URL we built
            health: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read Tollway's {url}: {exc}") from exc
    metering = health.get("metering")
    if not isinstance(metering, dict):
        raise BenchError(f"Tollway's {url} reports no metering: TOLLWAY_SPOOL_DIR was not taken")
    loader = metering.get("loader")
    if not isinstance(loader, dict):
        raise BenchError(f"Tollway's {url} reports no loader: another process holds the spool's loader lock")
    return MeteringCounters(
        rows_loaded=int(loader["rows_loaded"]),
        access_log_rows=int(metering["access_log_rows"]),
        spool_bytes=int(metering["spool_bytes"]),
        read=int(loader.get("rows_read") or loader["rows_loaded"]),
        loader_batches=int(loader["batches"]),
        loader_failures=int(loader["failures"]),
        loader_last_error=str(loader.get("last_error") or ""),
        decisions=decisions,
    )


def settle(
    sample: Callable[[], MeteringCounters], timeout_s: float = SETTLE_TIMEOUT_S
) -> tuple[MeteringCounters, float]:
    """Sample until the loader caught up (every written row loaded, the log stream quiet for a moment) or
    ``timeout_s`` passed; the last sample and the seconds it took."""
    started = time.monotonic()
    last = sample()
    changed_at = started
    while True:
        now = time.monotonic()
        if (last.backlog == 0 and now - changed_at >= _QUIET_S) or now - started >= timeout_s:
            return last, now - started
        time.sleep(_POLL_S)
        current = sample()
        if (current.rows_read, current.access_log_rows) != (last.rows_read, last.access_log_rows):
            changed_at = time.monotonic()
        last = current


@dataclass(frozen=True, slots=True)
class MeteringUsage:
    """What row E metered: totals since Tollway started (probes, warm-up, window), and the window alone."""

    requests_total: int
    """Requests Envoy completed since it started (probes, warm-up and the measured window)."""
    decisions: int
    access_log_rows: int
    rows_loaded: int
    rows_read: int
    spool_bytes: int
    loader_batches: int
    loader_failures: int
    loader_last_error: str
    window_requests: int
    window_rows_loaded: int
    window_access_log_rows: int
    backlog_rows_at_window_end: int
    catch_up_s: float
    envoy_access_log: dict[str, int]

    @property
    def rows_per_request(self) -> float | None:
        return self.rows_loaded / self.requests_total if self.requests_total else None

    @property
    def window_rows_loaded_per_request(self) -> float | None:
        return self.window_rows_loaded / self.window_requests if self.window_requests else None

    def to_json(self) -> dict[str, Any]:
        per_request = self.rows_per_request
        window_per_request = self.window_rows_loaded_per_request
        return {
            "requests_total": self.requests_total,
            "decision_rows": self.decisions,
            "access_log_rows": self.access_log_rows,
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_loaded_per_request": None if per_request is None else round(per_request, 4),
            "spool_bytes": self.spool_bytes,
            "loader_batches": self.loader_batches,
            "loader_failures": self.loader_failures,
            "loader_last_error": self.loader_last_error,
            "window": {
                "requests": self.window_requests,
                "rows_loaded": self.window_rows_loaded,
                "access_log_rows": self.window_access_log_rows,
                "rows_loaded_per_request": None if window_per_request is None else round(window_per_request, 4),
            },
            "backlog_rows_at_window_end": self.backlog_rows_at_window_end,
            "catch_up_s": round(self.catch_up_s, 2),
            "envoy_access_log": self.envoy_access_log,
        }


def usage(
    before: MeteringCounters,
    at_end: MeteringCounters,
    settled: MeteringCounters,
    *,
    catch_up_s: float,
    requests_total: int,
    window_requests: int,
    envoy_access_log: dict[str, int],
) -> MeteringUsage:
    return MeteringUsage(
        requests_total=requests_total,
        decisions=settled.decisions,
        access_log_rows=settled.access_log_rows,
        rows_loaded=settled.rows_loaded,
        rows_read=settled.rows_read,
        spool_bytes=settled.spool_bytes,
        loader_batches=settled.loader_batches,
        loader_failures=settled.loader_failures,
        loader_last_error=settled.loader_last_error,
        window_requests=window_requests,
        window_rows_loaded=at_end.rows_loaded - before.rows_loaded,
        window_access_log_rows=at_end.access_log_rows - before.access_log_rows,
        backlog_rows_at_window_end=at_end.backlog,
        catch_up_s=catch_up_s,
        envoy_access_log=envoy_access_log,
    )


def check(key: str, metered: MeteringUsage) -> None:
    """Refuse a row that metered nothing: no row loaded, or no response facts from Envoy's access log."""
    if metered.rows_loaded == 0:
        error = f" (loader: {metered.loader_last_error})" if metered.loader_last_error else ""
        raise BenchError(f"{key}: Tollway loaded no usage row for {metered.requests_total} requests{error}")
    if metered.access_log_rows == 0:
        raise BenchError(f"{key}: no access-log row reached Tollway for {metered.requests_total} requests")
