"""Drive ``wrk`` (the load generator) and read its results from a Lua ``done()`` hook as JSON.

wrk's own text output rounds latencies and mixes units; the hook prints exact numbers (microseconds)
on one marked line, which is all we parse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tollway.bench.errors import BenchError

RESULT_MARKER: Final = "TOLLWAY_BENCH_RESULT "
_EXTRA_TIMEOUT_S: Final = 30.0

# wrk calls done() once, after all threads finish; latency:percentile() and summary.duration are in µs.
DONE_SCRIPT: Final = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},'
    .. '"latency_us":{"min":%d,"mean":%.3f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\\n',
    "__MARKER__", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
""".replace("__MARKER__", RESULT_MARKER)


@dataclass(frozen=True, slots=True)
class WrkErrors:
    connect: int
    read: int
    write: int
    timeout: int
    status: int
    """Responses with an HTTP status of 400 or above (wrk's definition of a status error)."""

    @property
    def socket(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    @property
    def total(self) -> int:
        return self.socket + self.status


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    latency_us: dict[str, float]
    errors: WrkErrors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed (Debian/Ubuntu: apt-get install wrk; `make bench` does it)")
    return found


def wrk_version() -> str:
    """The version word of ``wrk -v`` (e.g. ``debian/4.1.0-3+b2``); wrk exits 1 after printing usage."""
    completed = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (completed.stdout or completed.stderr).splitlines()[:1]
    words = first[0].split() if first else []
    if len(words) < 2 or words[0] != "wrk":
        raise BenchError(f"cannot read wrk's version from {first!r}")
    return words[1]


def write_done_script(directory: Path) -> Path:
    path = Path(directory) / "wrk-done.lua"
    path.write_text(DONE_SCRIPT, encoding="utf-8")
    return path


def parse_result(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            raw: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=int(raw["duration_us"]) / 1e6,
                latency_us={name: float(value) for name, value in raw["latency_us"].items()},
                errors=WrkErrors(**{name: int(value) for name, value in raw["errors"].items()}),
            )
    raise BenchError(f"wrk printed no result line; output was:\n{stdout[-2000:]}")


def run(
    url: str,
    *,
    threads: int,
    connections: int,
    duration_s: int,
    script: Path,
    headers: Sequence[tuple[str, str]] = (),
) -> WrkResult:
    """Run wrk against ``url`` for ``duration_s`` whole seconds and return its summary."""
    argv = [wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "-s", str(script)]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + _EXTRA_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {exc.timeout:.0f}s") from exc
    if completed.returncode != 0:
        # Never echo argv: it may carry an API key in a header.
        raise BenchError(f"wrk exited with status {completed.returncode}: {completed.stderr.strip()[-1000:]}")
    return parse_result(completed.stdout)
