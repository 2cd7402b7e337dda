"""Group commit: a tick's rows go to the spool in one write, before any of that tick's verdicts leaves."""

import asyncio
import os
from pathlib import Path

import pytest

from tollway.usage.group_commit import GroupCommit
from tollway.usage.spool import SpoolWriter


def test_verdicts_wait_for_one_write_of_the_ticks_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = SpoolWriter(tmp_path)
    group = GroupCommit(spool)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    sent: list[tuple[str, int]] = []

    def size() -> int:
        assert spool.path is not None
        return spool.path.stat().st_size

    async def tick() -> None:
        for i in range(5):
            spool.stage(b'{"request_id":"r%d"}\n' % i)
            group.after_commit(lambda i=i: sent.append((f"v{i}", size())))
        assert sent == [], "no verdict before the write"
        await asyncio.sleep(0)  # the end of the tick
        await asyncio.sleep(0)

    asyncio.run(tick())
    assert writes == [5 * len(b'{"request_id":"r0"}\n')], "one write for the tick"
    assert [name for name, _ in sent] == ["v0", "v1", "v2", "v3", "v4"], "in order"
    assert all(written == writes[0] for _, written in sent), "every row was in the file before any verdict"


def test_nothing_staged_sends_at_once(tmp_path: Path) -> None:
    group = GroupCommit(SpoolWriter(tmp_path))
    sent: list[int] = []
    group.after_commit(lambda: sent.append(1))
    assert sent == [1]


def test_commit_now_writes_what_is_staged(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path)
    spool.stage(b'{"request_id":"g"}\n')
    GroupCommit(spool).commit_now()
    assert spool.path is not None
    assert spool.path.read_bytes() == b'{"request_id":"g"}\n'
