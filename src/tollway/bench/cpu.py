"""CPU time of processes from ``/proc/<pid>/stat`` (user + system, all threads), in microseconds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from tollway.bench.errors import BenchError

_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
# Fields after "(comm) ": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
_UTIME: Final = 11
_STIME: Final = 12


def _stat_time_us(path: Path, pid: int) -> float:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise BenchError(f"cannot read CPU time of pid {pid}: {exc}") from exc
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[_UTIME]) + int(fields[_STIME])
    return ticks * 1e6 / _TICKS_PER_S


def cpu_time_us(pid: int) -> float:
    """utime + stime of ``pid`` (the whole thread group) in microseconds."""
    return _stat_time_us(Path(f"/proc/{pid}/stat"), pid)


def main_thread_split(pid: int) -> tuple[float, float]:
    """(whole process, its main thread) CPU time in microseconds, read back to back. The main thread of a
    Python server runs its event loop; the rest is other threads (executors, gRPC core, chdb)."""
    return cpu_time_us(pid), _stat_time_us(Path(f"/proc/{pid}/task/{pid}/stat"), pid)


def sample(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU time (µs) of each named process, read back to back."""
    return {name: cpu_time_us(pid) for name, pid in pids.items()}


def per_request(before: Mapping[str, float], after: Mapping[str, float], requests: int) -> dict[str, float | None]:
    """CPU µs per request for each process over the window between two samples."""
    if requests <= 0:
        return dict.fromkeys(before)
    return {name: (after[name] - before[name]) / requests for name in before}
