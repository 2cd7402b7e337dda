"""The spool's capacity counts the rows not yet loaded: a spool that filled has room again as soon as the
loader caught up, whatever the number of writers and the segment size; its files are sealed and deleted
rather than kept; and the refusals while it is full are labelled and counted (issue 13, item 9)."""

import asyncio
import fcntl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.usage.test_decision_rows import build
from tests.unit.usage.test_spool_and_loader import RecordingSink, rows
from tollway.cli.main import main
from tollway.extproc.check import CheckRequest, Deny
from tollway.observability.tollway_metrics import MeasuredDecider, TollwayMetrics
from tollway.usage.loader import UsageLoader
from tollway.usage.spool import SpoolWriter, pending_bytes, segments, spool_bytes

ROW = rows(1)


def fill(writer: SpoolWriter) -> int:
    """Append rows until the writer refuses one; the rows written."""
    written = 0
    while writer.append(ROW):
        written += 1
    return written


def test_writers_whose_rows_were_all_loaded_take_rows_again(tmp_path: Path) -> None:
    # Two writers share the spool; together they fill it long before either segment is full
    # (max_bytes < writers × segment_bytes). Before the fix the loaded bytes kept counting: full forever.
    writers = [SpoolWriter(tmp_path, segment_bytes=64 << 10, max_bytes=64 << 10) for _ in range(2)]
    turn = 0
    while True:  # they take turns, each seeing the other's rows (production refreshes every second)
        writer = writers[turn % 2]
        writer.refresh_usage()
        if not writer.append(ROW):
            break
        turn += 1
    for writer in writers:
        writer.refresh_usage()
        assert writer.full
        assert not writer.append(ROW)
    assert len(segments(tmp_path)) == 2, "neither segment reached its size"
    assert pending_bytes(tmp_path) >= 64 << 10

    sink = RecordingSink()
    asyncio.run(UsageLoader(tmp_path, sink).drain())
    assert pending_bytes(tmp_path) == 0, "acknowledged bytes are not pending"
    for writer in writers:
        writer.refresh_usage()
        assert not writer.full, "every row is loaded: the spool has room again"
        assert writer.append(ROW)
    # The files had reached max_bytes with loaded rows in them: each writer sealed its segment, and the
    # loader deletes it once loaded, so the disk holds about max_bytes, not writers × segment_bytes.
    asyncio.run(UsageLoader(tmp_path, sink).drain())
    assert spool_bytes(tmp_path) == 2 * len(ROW)
    assert len(sink.lines()) == turn + 2
    for writer in writers:
        writer.close()


@settings(max_examples=30, deadline=None)
@given(
    writers=st.integers(min_value=1, max_value=4),
    segment_kib=st.integers(min_value=1, max_value=16),
    max_kib=st.integers(min_value=1, max_value=16),
    rounds=st.integers(min_value=1, max_value=4),
)
def test_any_full_spool_has_room_again_once_loaded(
    tmp_path_factory: pytest.TempPathFactory, writers: int, segment_kib: int, max_kib: int, rounds: int
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spools = [SpoolWriter(directory, segment_bytes=segment_kib << 10, max_bytes=max_kib << 10) for _ in range(writers)]
    sink = RecordingSink()
    sent = 0
    for _ in range(rounds):
        for writer in spools:  # every writer writes until the spool is full (ClickHouse away)
            writer.refresh_usage()
            sent += fill(writer)
        assert all(w.full for w in spools)
        # On disk: what is not loaded, plus under one segment of loaded rows per writer.
        assert spool_bytes(directory) <= (max_kib << 10) + writers * ((segment_kib << 10) + len(ROW))
        loader = UsageLoader(directory, sink)
        asyncio.run(loader.drain())  # ClickHouse is back: everything loads
        assert pending_bytes(directory) == 0
        for writer in spools:
            writer.refresh_usage()
            assert not writer.full, "a spool whose rows are all loaded takes rows again"
        asyncio.run(loader.drain())
        assert spool_bytes(directory) <= max_kib << 10, "loaded files do not pile up"
    assert len(sink.lines()) == sent, "every row written was loaded, once"
    for writer in spools:
        writer.close()


def test_refusals_of_a_full_spool_are_labelled_and_counted(tmp_path: Path) -> None:
    core, spool, key = build(tmp_path, max_bytes=1 << 20)
    spool.append(b"x" * (1 << 20) + b"\n")
    assert spool.full
    metrics = TollwayMetrics()
    measured = MeasuredDecider(core, metrics, "http")

    async def checks() -> list[Deny]:
        verdicts = [measured.decide_now(CheckRequest("GET", "/v1/items/1", {"x-api-key": key}, "r1"))]
        verdicts.append(await measured.decide(CheckRequest("GET", "/v1/items/2", {"x-api-key": key}, "r2")))
        return [v for v in verdicts if isinstance(v, Deny)]

    refused = asyncio.run(checks())
    assert [(d.status, d.reason) for d in refused] == [(503, "metering-unavailable")] * 2
    assert metrics.decisions.value(("http", "refused", "metering-unavailable")) == 2
    assert metrics.decisions.value(("http", "refused", "status-503")) == 0
    assert spool.rows_refused == 2, "each refusal's row could not be written: /healthz rows_refused counts it"


def test_a_spool_smaller_than_a_segment_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("TOLLWAY_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv("TOLLWAY_SPOOL_MAX_BYTES", str(2 << 20))
    monkeypatch.setenv("TOLLWAY_SPOOL_SEGMENT_BYTES", str(64 << 20))
    assert main(["meter", "--metering-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "TOLLWAY_SPOOL_MAX_BYTES (2097152) is smaller than one segment" in err
    assert "TOLLWAY_SPOOL_SEGMENT_BYTES, 67108864" in err
    assert "Value error" not in err
    assert "TOLLWAY_:" not in err


def test_a_new_segment_is_never_seen_unlocked_by_the_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Writers now seal segments early (when the files reach max_bytes), so new segments open more often.
    # A loader pass that ran between a new segment's creation and its lock took it for a dead writer's
    # empty segment and deleted it: the writer's rows then went to an unlinked file.
    real_flock = fcntl.flock
    sink = RecordingSink()

    def flock_with_a_loader_pass_first(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX:  # the writer locking its new segment: the loader runs just before
            asyncio.run(UsageLoader(tmp_path, sink).drain())
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_with_a_loader_pass_first)
    writer = SpoolWriter(tmp_path)
    writer.append(rows(3))
    writer.rotate()
    writer.append(rows(2, start=3))
    monkeypatch.setattr(fcntl, "flock", real_flock)
    writer.close()
    asyncio.run(UsageLoader(tmp_path, sink).drain())
    assert sink.lines() == rows(5).splitlines(), "no row lost to a deleted segment"
