"""The durable usage buffer: append-only segment files on local disk, shared by every Tollway process
of a host and drained by one loader.

Writers: each process appends newline-terminated rows to its own segment (``usage-<ns>-<pid>.jsonl``),
with one ``write(2)`` per row or per batch, *before* the decision is returned to Envoy. Once ``write``
returns, the row survives the process being killed (it is in the kernel's page cache); ``fsync`` runs
every ``fsync_interval_s`` so a power loss costs at most that much. A writer holds an exclusive
``flock`` on its open segment: a segment nobody holds is sealed (rotated) or orphaned (its writer died)
and may be loaded to the end and deleted.

Reader (the loader, see ``loader.py``): reads whole lines up to the current end of any segment, and
records how far it has loaded in ``<segment>.ack`` (written atomically) only after ClickHouse
confirmed the insert. A crash between insert and ack replays those rows: harmless, the table
deduplicates by request id.

Capacity: the spool stops accepting rows once the bytes not yet loaded (every segment's size minus what
the loader acknowledged) reach ``max_bytes`` (ClickHouse away for a long time); what happens to the
request then is the server's spool-full policy (docs/usage-tracking.md). Loaded rows do not count, so the
spool has room again as soon as the loader caught up. When the files reach ``max_bytes``, each writer
whose open segment holds loaded rows seals it (rotates) so that the loader can delete it, rather than
waiting for the segment to reach ``segment_bytes``: the files hold at most ``max_bytes`` not yet loaded
plus, per writer, less than one segment of loaded rows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

SEGMENT_PREFIX: Final = "usage-"
SEGMENT_SUFFIX: Final = ".jsonl"
ACK_SUFFIX: Final = ".ack"


def _segment_name() -> str:
    return f"{SEGMENT_PREFIX}{time.time_ns():020d}-{os.getpid()}{SEGMENT_SUFFIX}"


def spool_bytes(directory: Path) -> int:
    """Bytes held by segment files (loaded or not) in ``directory``."""
    return spool_usage(directory).files


def pending_bytes(directory: Path) -> int:
    """Bytes of rows in ``directory`` not yet loaded (acknowledged bytes do not count)."""
    return spool_usage(directory).pending


@dataclass(frozen=True, slots=True)
class SpoolUsage:
    files: int  # bytes of every segment file: what the disk holds
    pending: int  # bytes not yet loaded: each segment's size minus the offset its loader acknowledged


@dataclass(frozen=True, slots=True)
class Measurement:
    segment: Path | None  # the writer's open segment when measured
    others: SpoolUsage  # every other segment
    acked: int  # bytes of the open segment the loader acknowledged


def spool_usage(directory: Path, skip: Path | None = None) -> SpoolUsage:
    """The segments of ``directory`` (all but ``skip``): their bytes, and how many of them are not loaded."""
    files = pending = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)):
                continue
            path = Path(entry.path)
            if path == skip:
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            files += size
            pending += max(0, size - acked_offset(path))
    return SpoolUsage(files, pending)


def live_writers(directory: Path) -> int:
    """Segments a live writer holds (locked) in ``directory``: the processes writing to this spool."""
    count = 0
    for segment in segments(directory):
        try:
            fd = os.open(segment, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            count += not _is_sealed(fd)
        finally:
            os.close(fd)
    return count


class SpoolWriter:
    """One process's writer. Not thread-safe: call it from the event loop only."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 4 << 30,
    ) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._fd = -1
        self._path: Path | None = None
        self._written = 0  # bytes in the open segment
        self._acked = 0  # bytes of the open segment the loader acknowledged (refreshed by refresh_usage())
        # unloaded bytes of every other segment, refreshed by refresh_usage()
        self._others = spool_usage(self._directory).pending
        self._full = False
        self._dirty = False
        self.rows_refused = 0
        self._open()

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def full(self) -> bool:
        return self._full

    def _open(self) -> None:
        """Create the segment under a name no reader lists, lock it, then give it its segment name: a loader
        never sees it unlocked (it would take it for a dead writer's empty segment and delete it)."""
        path = self._directory / _segment_name()
        staging = path.with_name("." + path.name)
        fd = os.open(staging, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(staging, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()
            raise
        self._fd, self._path, self._written, self._acked = fd, path, 0, 0

    def append(self, data: bytes) -> bool:
        """Write whole rows (``data`` ends with a newline). False, and nothing written, when the spool is
        full. Raises ``OSError`` when the disk refuses the write."""
        if self._full:
            self.rows_refused += data.count(b"\n")
            return False
        view = memoryview(data)
        while view:  # a regular file takes everything at once; loop only for the pathological case
            written = os.write(self._fd, view)
            view = view[written:]
        self._written += len(data)
        self._dirty = True
        if self._written >= self._segment_bytes:
            self.rotate()
        elif self._others + self._written - self._acked >= self._max_bytes:
            self._full = True
            log.error(
                "usage spool %s is full (%d bytes not yet loaded): new rows are refused",
                self._directory,
                self._max_bytes,
            )
        return True

    def refuse(self, rows: int = 1) -> None:
        """Count rows that were never offered to :meth:`append` because the spool was full (a request
        refused for that reason: its own row could not be written either)."""
        self.rows_refused += rows

    def sync(self) -> None:
        """``fsync`` the open segment if anything was written since the last sync (call periodically)."""
        if self._dirty and self._fd >= 0:
            os.fsync(self._fd)
            self._dirty = False

    def rotate(self) -> None:
        """Seal the open segment (sync, unlock, close) and open a new one."""
        self._close()
        self._open()
        self._others = spool_usage(self._directory, skip=self._path).pending

    def measure(self) -> Measurement:
        """The spool as the loader left it: file reads only, safe on a worker thread (pass the result to
        :meth:`refresh_usage` on the writer's thread)."""
        path = self._path
        return Measurement(path, spool_usage(self._directory, skip=path), acked_offset(path) if path else 0)

    def refresh_usage(self, measured: Measurement | None = None) -> None:
        """Re-measure the spool (the loader acknowledges loaded rows and deletes loaded sealed segments) and
        lift ``full`` once the rows not yet loaded fit again. When the files reach ``max_bytes`` and part of
        the open segment is loaded, seal it so that the loader can delete it."""
        measured = measured or self.measure()
        if measured.segment != self._path:
            return  # the writer rotated since: the next measurement counts the new segment
        usage = measured.others
        self._acked = min(self._written, measured.acked)
        if usage.files + self._written >= self._max_bytes and self._acked > 0:
            self.rotate()
        else:
            self._others = usage.pending
        was_full = self._full
        self._full = self._others + self._written - self._acked >= self._max_bytes
        if was_full and not self._full:
            log.warning("usage spool %s has room again; %d rows were refused", self._directory, self.rows_refused)

    def _close(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            self.sync()
        os.close(self._fd)  # releases the flock: the segment is sealed
        self._fd = -1
        if self._path is not None and self._written == 0:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self._path = None

    def close(self) -> None:
        self._close()


# --- reading -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole rows of one segment from byte ``start`` to ``end``."""

    segment: Path
    start: int
    end: int
    data: bytes
    sealed: bool  # no writer holds the segment: once acked to its end it can be deleted

    @property
    def rows(self) -> int:
        return self.data.count(b"\n")


def segments(directory: Path) -> list[Path]:
    """Segment files, oldest first."""
    try:
        names = sorted(
            name for name in os.listdir(directory) if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)
        )
    except FileNotFoundError:
        return []
    return [directory / name for name in names]


def acked_offset(segment: Path) -> int:
    try:
        return int(segment.with_name(segment.name + ACK_SUFFIX).read_text() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        log.error("unreadable ack file for %s: loading it from the start (replays are deduplicated)", segment)
        return 0


def write_ack(segment: Path, offset: int) -> None:
    """Record ``offset`` as loaded, atomically and durably (temp file, fsync, rename)."""
    ack = segment.with_name(segment.name + ACK_SUFFIX)
    temp = ack.with_name(ack.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, str(offset).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, ack)


def remove_segment(segment: Path) -> None:
    for path in (segment, segment.with_name(segment.name + ACK_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _is_sealed(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True  # the shared lock is released when fd closes


def read_chunks(directory: Path, max_bytes: int, offsets: dict[Path, int] | None = None) -> Iterator[Chunk]:
    """Unloaded whole rows, segment by segment, at most ``max_bytes`` in total (at least one row).

    ``offsets`` overrides the ack files (rows read but not yet acknowledged). A sealed segment whose last
    line is torn (its writer was killed mid-write, or a power loss) ends at its last newline; the torn
    tail is logged and skipped.
    """
    budget = max_bytes
    for segment in segments(directory):
        if budget <= 0:
            return
        start = offsets.get(segment, -1) if offsets is not None else -1
        if start < 0:
            start = acked_offset(segment)
        try:
            fd = os.open(segment, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            sealed = _is_sealed(fd)
            size = os.fstat(fd).st_size
            if start >= size:
                if sealed:
                    yield Chunk(segment, start, start, b"", True)
                continue
            data = os.pread(fd, min(size - start, budget), start)
        finally:
            os.close(fd)
        cut = data.rfind(b"\n") + 1
        at_end = start + len(data) >= size
        if cut == 0 and not at_end:  # one row longer than the budget: read it whole
            row_end = _row_end(segment, start)
            if row_end > start:
                data, cut = _read(segment, start, row_end), row_end - start
            else:
                at_end = True
        if cut < len(data) and at_end and sealed:
            log.error("%s ends with a torn row (%d bytes) that was never completed: skipped", segment, len(data) - cut)
            budget -= cut
            yield Chunk(segment, start, size, data[:cut], True)
            continue
        if cut == 0:
            continue
        end = start + cut
        budget -= cut
        yield Chunk(segment, start, end, data[:cut], sealed and end >= size)
        if end < size:
            return  # the budget ended inside this segment: the next batch resumes here, in order


def _read(segment: Path, start: int, end: int) -> bytes:
    with segment.open("rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def _row_end(segment: Path, start: int) -> int:
    with segment.open("rb") as handle:
        handle.seek(start)
        position = start
        while block := handle.read(1 << 20):
            newline = block.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(block)
    return start
