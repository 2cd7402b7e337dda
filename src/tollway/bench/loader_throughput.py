"""Loader throughput: how fast the production loader drains a usage spool into the embedded ClickHouse.

Not a wrk row: the bench writes ``rows`` realistic usage rows (``UsageRow`` + ``encode_row``: many
customers, keys, plans and routes; a decision row, version 1, for every request and a response row,
version 2, for the admitted ones; refusals with their status and reason; byte and token meters) into a
spool directory with ``SpoolWriter`` (default segment size), sealed as a stopped Tollway leaves it. Then
a subprocess of its own (chdb opens one path per process) times
``UsageLoader(spool, ClickHouseSink("chdb://PATH", "tollway")).drain()`` — the loader's read, insert and
acknowledge loop, batch by batch — after opening the engine and applying its migrations (start-up is not
counted), and prints one JSON object: rows per second, what the table holds afterwards (one row per
request, ``FINAL``), the growth of the peak RSS (``ru_maxrss``) over the drain and the RSS after each
batch. The loader's Python side holds one batch (``batch_bytes``) at a time, at most twice over (the
chunks read and the joined insert); most of the growth is the embedded engine's own working memory
(parsing, parts, background merges), which levels off after a few batches instead of following the
backlog.

Subprocess: ``python -m tollway.bench.loader_throughput --spool DIR --chdb PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from tollway.bench.errors import BenchError
from tollway.bench.subprocess_json import run_json
from tollway.settings import Settings
from tollway.usage.row import DECISION_VERSION, NO_STATUS, RESPONSE_VERSION, UsageRow, encode_row
from tollway.usage.spool import SpoolWriter, segments, spool_bytes

DEFAULT_ROWS: Final = 300_000
DATABASE: Final = "tollway"
BATCH_BYTES: Final[int] = Settings.model_fields["loader_batch_bytes"].default
"""What ``tollway serve`` loads per insert unless ``TOLLWAY_LOADER_BATCH_BYTES`` says otherwise."""
_SUBPROCESS_TIMEOUT_S: Final = 600.0
_APPEND_ROWS: Final = 64  # rows per write(2), as the access log appends a message's rows at once
_MIB: Final = 1 << 20
_RESULT_KEYS: Final = ("rows", "seconds", "rows_per_s", "rss_growth_mib", "batch_bytes", "batches")

_PLANS: Final = ("free", "starter", "pro", "enterprise")
_ROUTES: Final = (
    ("search", "GET", "/v1/search"),
    ("search", "POST", "/v1/search/batch"),
    ("documents", "GET", "/v1/documents/{id}"),
    ("documents", "PUT", "/v1/documents/{id}"),
    ("documents", "DELETE", "/v1/documents/{id}"),
    ("completions", "POST", "/v1/completions"),
    ("embeddings", "POST", "/v1/embeddings"),
    ("exports", "GET", "/v1/exports/{id}/download"),
)
_REFUSALS: Final = (
    (401, "invalid_key", False),
    (403, "feature_not_in_plan", False),
    (429, "rate_limited", True),
    (429, "quota_exhausted", True),
)


def usage_rows(count: int, *, seed: int = 7, customers: int = 500) -> list[bytes]:
    """``count`` encoded rows in time order: per request a decision row, and a response row when admitted
    (so the version-1 rows count the requests; the last request may lack its response row)."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    ids = uuid.UUID(int=rng.getrandbits(128))
    started_ms = int(time.time() * 1000) - count  # about one request per millisecond, ending now
    lines: list[bytes] = []
    request = 0
    while len(lines) < count:
        request += 1
        ts_ms = started_ms + request
        request_id = str(uuid.UUID(int=(ids.int + request) % (1 << 128)))
        customer_number = min(int(rng.paretovariate(1.2)) - 1, customers - 1)  # a few customers do most
        customer = f"cus_{customer_number:05d}"
        subject = f"key_{customer_number:05d}_{rng.randrange(3)}"
        plan = _PLANS[customer_number % len(_PLANS)]
        feature, method, route = _ROUTES[rng.randrange(len(_ROUTES))]
        cost = 5 if feature == "completions" else 1
        decided = {"requests": 1, "cost": cost}
        if rng.random() < 0.05:
            status, reason, limits_checked = _REFUSALS[rng.randrange(len(_REFUSALS))]
            known = status != 401
            lines.append(
                encode_row(
                    UsageRow(
                        request_id,
                        ts_ms,
                        customer if known else "",
                        subject if known else "",
                        plan if known else "",
                        feature if known else "",
                        route if known else "",
                        method,
                        status,
                        "refused",
                        reason,
                        limits_checked,
                        0,
                        rng.randrange(180, 420),
                        0.0,
                        decided if known else {},
                        DECISION_VERSION,
                    )
                )
            )
            continue
        admitted = UsageRow(
            request_id,
            ts_ms,
            customer,
            subject,
            plan,
            feature,
            route,
            method,
            NO_STATUS,
            "admitted",
            "",
            True,
            0,
            0,
            0.0,
            decided,
            DECISION_VERSION,
        )
        lines.append(encode_row(admitted))
        request_bytes = rng.randrange(0, 4096) if method in ("POST", "PUT") else 0
        response_bytes = int(rng.lognormvariate(7.5, 1.2))
        meters: dict[str, int | Decimal] = {
            **decided,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
        }
        if feature == "completions":
            meters["tokens"] = Decimal(rng.randrange(20, 4000))
        status = 200 if rng.random() < 0.97 else rng.choice((404, 500, 502))
        lines.append(
            encode_row(
                UsageRow(
                    request_id,
                    ts_ms,
                    customer,
                    subject,
                    plan,
                    feature,
                    route,
                    method,
                    status,
                    "admitted",
                    "",
                    True,
                    request_bytes,
                    response_bytes,
                    round(rng.lognormvariate(2.5, 0.8), 3),
                    meters,
                    RESPONSE_VERSION,
                )
            )
        )
    return lines[:count]


def write_spool(directory: Path, rows: int, *, seed: int = 7) -> dict[str, Any]:
    """Write ``rows`` usage rows into ``directory`` with ``SpoolWriter`` and seal it; what was written."""
    lines = usage_rows(rows, seed=seed)
    versions = {str(DECISION_VERSION): 0, str(RESPONSE_VERSION): 0}
    for line in lines:
        versions["2" if line.endswith(b'"version":2}\n') else "1"] += 1
    started = time.perf_counter()
    writer = SpoolWriter(directory)
    try:
        for start in range(0, len(lines), _APPEND_ROWS):
            if not writer.append(b"".join(lines[start : start + _APPEND_ROWS])):
                raise BenchError(f"the spool {directory} refused rows: it is full")
    finally:
        writer.close()
    return {
        "spool_bytes": spool_bytes(directory),
        "spool_segments": len(segments(directory)),
        "spool_write_s": round(time.perf_counter() - started, 3),
        "rows_by_version": versions,
    }


def _rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (``ru_maxrss`` is in KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = peak
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return current, peak


class _RssAfterEachBatch:
    """The sink, and the process's RSS read after each batch it stored (to show memory stays flat)."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.rss_mib: list[float] = []

    async def insert(self, data: bytes, rows: int) -> None:
        await self._sink.insert(data, rows)
        self.rss_mib.append(round(_rss_mib()[0], 1))

    async def maintain(self) -> None:
        await self._sink.maintain()


def drain(spool: Path, chdb_path: Path, *, database: str = DATABASE, batch_bytes: int = BATCH_BYTES) -> dict[str, Any]:
    """Open the embedded ClickHouse (migrations applied), then time the loader draining ``spool`` into it."""
    from tollway.usage.clickhouse_sink import ClickHouseSink
    from tollway.usage.loader import UsageLoader

    sink = ClickHouseSink(f"chdb://{chdb_path.resolve()}", database, rollups=False)
    try:
        opened = time.perf_counter()
        sink.query("SELECT 1")  # connects and applies the migrations: start-up, not throughput
        open_s = time.perf_counter() - opened
        measured = _RssAfterEachBatch(sink)
        loader = UsageLoader(spool, measured, batch_bytes=batch_bytes)
        rss_before, peak_before = _rss_mib()
        started = time.perf_counter()
        inserted = asyncio.run(loader.drain())
        seconds = time.perf_counter() - started
        # Spool rows consumed: a decision row whose response row is in the same batch is dropped before
        # the insert (it would be superseded), so fewer rows are inserted than were read.
        rows = loader.stats.rows_read
        rss_after, peak_after = _rss_mib()
        # One row per request once the response row (version 2) replaced the decision row (version 1).
        final = f"SELECT count(), countIf(version = 2) FROM {database}.usage FINAL"  # noqa: S608 - an identifier
        requests_in_table, completed_in_table = sink.query(final)[0]
    finally:
        sink.close()
    left = len(segments(spool))
    return {
        "rows": rows,
        "rows_inserted": inserted,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        "mib_per_s": round(loader.stats.bytes_loaded / _MIB / seconds, 1) if seconds > 0 else None,
        "bytes": loader.stats.bytes_loaded,
        "batches": loader.stats.batches,
        "batch_bytes": batch_bytes,
        "requests_in_table": int(requests_in_table),
        "completed_in_table": int(completed_in_table),
        "segments_left": left,
        "engine_open_s": round(open_s, 3),
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_peak_mib": round(peak_after, 1),
        "rss_growth_mib": round(peak_after - peak_before, 1),
        "rss_after_each_batch_mib": measured.rss_mib,
    }


def measure(work_dir: Path, rows: int = DEFAULT_ROWS, *, batch_bytes: int = BATCH_BYTES) -> dict[str, Any]:
    """Write the spool here, drain it in a fresh subprocess, check every row arrived; the figures."""
    run_dir = Path(work_dir) / f"loader-{os.getpid()}-{time.time_ns()}"
    spool = run_dir / "spool"
    written = write_spool(spool, rows)
    argv = [sys.executable, "-m", __name__, "--spool", str(spool), "--chdb", str(run_dir / "chdb")]
    argv += ["--batch-bytes", str(batch_bytes)]
    result = run_json(argv, what="loader throughput", cwd=run_dir, timeout_s=_SUBPROCESS_TIMEOUT_S, keys=_RESULT_KEYS)
    versions = written["rows_by_version"]
    expected = (rows, versions[str(DECISION_VERSION)], versions[str(RESPONSE_VERSION)], 0)
    found = (result["rows"], result["requests_in_table"], result["completed_in_table"], result["segments_left"])
    if found != expected:
        raise BenchError(
            "loader throughput: expected (rows loaded, requests in the table, completed requests, segments left) "
            f"= {expected}, found {found}"
        )
    return {**result, **written}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--spool", type=Path, required=True, help="the spool directory to drain")
    parser.add_argument("--chdb", type=Path, required=True, help="the embedded ClickHouse path (fresh)")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--batch-bytes", type=int, default=BATCH_BYTES, help="the loader's batch size")
    args = parser.parse_args(argv)
    result = drain(args.spool, args.chdb, database=args.database, batch_bytes=args.batch_bytes)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
