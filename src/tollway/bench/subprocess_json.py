"""Run one bench measurement in a subprocess of its own (its own chdb path) and read the JSON it prints last."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tollway.bench.errors import BenchError


def run_json(argv: Sequence[str], *, what: str, cwd: Path, timeout_s: float, keys: Sequence[str]) -> dict[str, Any]:
    """``argv``'s last stdout line as a JSON object holding ``keys``; ``BenchError`` naming ``what`` otherwise."""
    try:
        completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: the run did not finish within {exc.timeout:.0f} s") from exc
    if completed.returncode != 0:
        raise BenchError(f"{what}: the run failed ({completed.returncode}): {completed.stderr[-2000:]}")
    try:
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise BenchError(f"{what}: no JSON result in {completed.stdout[-500:]!r}") from exc
    missing = [key for key in keys if key not in result]
    if missing:
        raise BenchError(f"{what}: the result lacks {missing}")
    return result
