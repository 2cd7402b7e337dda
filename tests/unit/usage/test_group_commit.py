"""Group commit: decision rows are held and written with one write(2) before any of their verdicts is sent;
a verdict whose row could not be written is never sent as an admit."""

import asyncio
from pathlib import Path

from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.http_server import HttpAuthzServer, _Connection
from tollway.extproc.problems import Refusals
from tollway.usage.recorder import UsageRecorder
from tollway.usage.spool import SpoolWriter

REQUEST = b"GET /v1/items HTTP/1.1\r\nhost: tollway\r\nx-request-id: r-%d\r\ncontent-length: 0\r\n\r\n"


def test_held_rows_reach_the_spool_only_with_flush_and_in_one_write(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path)
    recorder = UsageRecorder(spool, lambda: None, group_commit=True)
    for n in range(3):
        assert recorder.admitted(f"r-{n}", 1_700_000_000_000 + n, "GET", "acme", "key_1")
    assert spool.path is not None
    assert spool.path.read_bytes() == b""
    assert recorder.flush()
    lines = spool.path.read_bytes().splitlines()
    assert [line.split(b'"')[3] for line in lines] == [b"r-0", b"r-1", b"r-2"]
    assert recorder.flush(), "nothing held: nothing to write"


def test_a_full_spool_refuses_the_row_at_decision_time(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path, max_bytes=1)
    recorder = UsageRecorder(spool, lambda: None, group_commit=True)
    assert recorder.admitted("r-0", 1_700_000_000_000, "GET", "acme", "key_1")
    assert recorder.flush()  # written; now the spool is over its bound
    assert spool.full
    assert not recorder.admitted("r-1", 1_700_000_000_001, "GET", "acme", "key_1")
    assert recorder.refuses_new_requests
    assert recorder.rows_dropped == 1


class _Transport:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def write(self, data: bytes) -> None:
        self.log.append("send " + data.split(b"\r\n", 1)[0].decode())

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _HoldingCore:
    """Admits everything, holding one row per verdict; ``commit`` reports into ``log``."""

    def __init__(self, log: list[str], written: bool) -> None:
        self.log = log
        self.written = written
        self.held = 0
        self._refusals = Refusals()

    @property
    def refusals(self) -> Refusals:
        return self._refusals

    @property
    def holds_rows(self) -> bool:
        return True

    def commit(self) -> bool:
        self.log.append(f"commit {self.held} rows")
        self.held = 0
        return self.written

    def decide_now(self, request: CheckRequest) -> Decision | None:
        self.held += 1
        return Allow(upstream_headers=(("x-tollway-customer-id", "acme"),))

    async def decide(self, request: CheckRequest) -> Decision:
        return Allow(upstream_headers=())


def _serve_two_connections(written: bool) -> list[str]:
    async def scenario() -> list[str]:
        log: list[str] = []
        server = HttpAuthzServer(_HoldingCore(log, written))
        connections = [_Connection(server), _Connection(server)]
        for n, connection in enumerate(connections):
            connection.connection_made(_Transport(log))  # type: ignore[arg-type]
            connection.data_received(REQUEST % n)
        assert log == [], "nothing is sent before the rows are written"
        await asyncio.sleep(0)
        return log

    return asyncio.run(scenario())


def test_one_commit_then_every_answer_of_the_iteration() -> None:
    assert _serve_two_connections(written=True) == ["commit 2 rows", "send HTTP/1.1 200 OK", "send HTTP/1.1 200 OK"]


def test_no_admit_is_sent_when_its_row_could_not_be_written() -> None:
    assert _serve_two_connections(written=False) == [
        "commit 2 rows",
        "send HTTP/1.1 500 Internal Server Error",
        "send HTTP/1.1 500 Internal Server Error",
    ]
