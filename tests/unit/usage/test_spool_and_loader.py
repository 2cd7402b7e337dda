"""The spool and the loader without ClickHouse: what is acknowledged, what is replayed, what is deleted,
and that a failing sink loses nothing and holds one batch in memory at most."""

import asyncio
import os
from pathlib import Path

import pytest

from tollway.usage.loader import LoaderBusy, LoaderLock, UsageLoader
from tollway.usage.spool import SpoolWriter, acked_offset, read_chunks, segments, spool_bytes


class RecordingSink:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[bytes] = []
        self.failures = failures
        self.attempts = 0

    async def insert(self, data: bytes, rows: int) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse is away")
        self.batches.append(data)

    async def maintain(self) -> None:
        return None

    def lines(self) -> list[bytes]:
        return [line for batch in self.batches for line in batch.splitlines()]


def rows(n: int, start: int = 0) -> bytes:
    return b"".join(b'{"request_id":"r%d"}\n' % i for i in range(start, start + n))


def test_rows_of_a_live_writer_are_loaded_and_acknowledged(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    writer.append(rows(3))
    sink = RecordingSink()
    loader = UsageLoader(tmp_path, sink)
    assert asyncio.run(loader.drain()) == 3
    assert writer.path is not None
    assert acked_offset(writer.path) == len(rows(3))
    writer.append(rows(2, start=3))
    assert asyncio.run(loader.drain()) == 2
    assert sink.lines() == rows(5).splitlines(), "each row once, in order"
    assert writer.path.exists(), "the open segment stays until its writer lets go"


def test_a_sealed_segment_is_deleted_once_loaded(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    writer.append(rows(4))
    first = writer.path
    writer.rotate()
    writer.append(rows(1, start=4))
    loader = UsageLoader(tmp_path, RecordingSink())
    asyncio.run(loader.drain())
    asyncio.run(loader.drain())
    assert first is not None
    assert not first.exists()
    assert segments(tmp_path) == [writer.path]


def test_a_dead_writers_segment_is_an_orphan_and_its_torn_tail_is_skipped(tmp_path: Path) -> None:
    # A writer killed mid-row leaves a segment nobody locks, ending without a newline.
    orphan = tmp_path / "usage-00000000000000000001-99999.jsonl"
    orphan.write_bytes(rows(2) + b'{"request_id":"torn')
    sink = RecordingSink()
    asyncio.run(UsageLoader(tmp_path, sink).drain())
    assert sink.lines() == rows(2).splitlines()
    assert not orphan.exists()


def test_an_unacknowledged_batch_is_replayed_never_skipped(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    writer.append(rows(3))
    # The insert succeeded but the process died before the ack: the next loader starts from the last ack.
    chunk = next(read_chunks(tmp_path, 1 << 20))
    assert chunk.rows == 3
    assert acked_offset(chunk.segment) == 0
    sink = RecordingSink()
    asyncio.run(UsageLoader(tmp_path, sink).drain())
    assert sink.lines() == rows(3).splitlines()


def test_a_failing_sink_keeps_every_row_and_one_batch_in_memory(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=4096)
    for i in range(200):
        writer.append(rows(5, start=i * 5))
    sink = RecordingSink(failures=5)
    loader = UsageLoader(tmp_path, sink, batch_bytes=2048, retry_max_s=0.01, poll_interval_s=0.01)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(loader.run(stop))
        while loader.stats.rows_loaded < 1000:  # noqa: ASYNC110 (polls the loader's counter)
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(run())
    assert loader.stats.failures == 5
    assert sink.lines() == rows(1000).splitlines(), "nothing lost, nothing twice, in order"
    assert max(len(b) for b in sink.batches) <= 2048 + 64, "a batch is bounded whatever the backlog"


def test_a_row_longer_than_a_batch_is_loaded_whole(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    big = b'{"request_id":"' + b"x" * 100_000 + b'"}\n'
    writer.append(big + rows(1))
    sink = RecordingSink()
    asyncio.run(UsageLoader(tmp_path, sink, batch_bytes=1024).drain())
    assert sink.lines() == [big.rstrip(b"\n"), *rows(1).splitlines()]


def test_a_full_spool_refuses_rows_until_room_is_back(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, segment_bytes=1 << 20, max_bytes=1 << 20)
    chunk = rows(1000)
    while writer.append(chunk):
        pass
    assert writer.full
    assert not writer.append(rows(1))
    assert writer.rows_refused >= 1
    asyncio.run(UsageLoader(tmp_path, RecordingSink()).drain())
    writer.rotate()  # the loaded segment is sealed and deleted on the next pass
    asyncio.run(UsageLoader(tmp_path, RecordingSink()).drain())
    writer.refresh_usage()
    assert not writer.full
    assert writer.append(rows(1))
    assert spool_bytes(tmp_path) < 1 << 20


def test_one_loader_per_spool(tmp_path: Path) -> None:
    lock = LoaderLock(tmp_path)
    with pytest.raises(LoaderBusy):
        LoaderLock(tmp_path)
    lock.release()
    LoaderLock(tmp_path).release()


def test_segments_are_private_to_the_service_user(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    assert writer.path is not None
    assert os.stat(writer.path).st_mode & 0o777 == 0o600
