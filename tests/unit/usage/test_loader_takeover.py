"""The loader moves: a process that did not get a spool's loader lock retries it every
``loader_takeover_s`` and loads the spool once the holder is gone (issue 13, item 11). The
cross-process case (``kill -9`` of the holder) is in tests/integration/test_metering_processes.py."""

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.unit.usage.test_spool_and_loader import RecordingSink, rows
from tollway.extproc import metering as metering_module
from tollway.extproc.metering import Metering
from tollway.settings import Settings

TAKEOVER_S = 0.1


class Sink(RecordingSink):
    made: ClassVar[list["Sink"]] = []

    def __init__(self, dsn: str, database: str, **_: Any) -> None:
        super().__init__()
        Sink.made.append(self)

    def close(self) -> None:
        return None


def test_a_waiting_process_takes_the_loader_over_when_its_holder_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metering_module, "ClickHouseSink", Sink)
    settings = Settings(
        spool_dir=tmp_path,
        loader_takeover_s=TAKEOVER_S,
        loader_poll_s=0.01,
        loader_insert_interval_s=0,
        spool_fsync_interval_s=0.05,
    )

    async def run() -> tuple[float, list[bytes]]:
        holder = Metering.start(settings, None)
        waiting = Metering.start(settings, None)
        assert holder.loader is not None
        assert waiting.loader is None, "one loader per spool"
        await asyncio.sleep(3 * TAKEOVER_S)
        assert waiting.loader is None, "no takeover while the holder lives"
        await holder.shutdown(0)
        holder.close()  # the lock is released, as the kernel releases a dead process's flock
        gone = time.monotonic()
        waiting.spool.append(rows(3))
        while waiting.loader is None or waiting.loader.stats.rows_loaded < 3:
            assert time.monotonic() - gone < 5, "the waiting process never took over"
            await asyncio.sleep(0.01)
        took = time.monotonic() - gone
        await waiting.shutdown(0)
        waiting.close()
        return took, Sink.made[-1].lines()

    took, loaded = asyncio.run(run())
    assert loaded == rows(3).splitlines()
    assert took < TAKEOVER_S + 1.0, f"took over after {took:.2f} s"  # the documented bound, with margin
