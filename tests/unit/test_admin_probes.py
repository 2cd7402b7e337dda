"""The admin server's probes over a real loopback socket: /livez, /readyz (injected checks), /healthz, 404."""

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tollway.admin_server import AdminServer, Readiness, RedisProbe, _SpoolProbe, readiness_checks


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _run(
    server: AdminServer, path: str, *, serving: bool = True, method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    async def go() -> tuple[int, dict[str, str], Any]:
        port = await server.start("127.0.0.1", 0)
        if serving:
            server.set_serving()
        try:
            status, headers, body = await _get(port, path, method)
        finally:
            await server.shutdown()
        return status, headers, json.loads(body) if body else None

    return asyncio.run(go())


def _checks(result: Mapping[str, str | None]) -> Readiness:
    async def check() -> Mapping[str, str | None]:
        return result

    return check


def test_livez_is_200_whatever_the_checks_say() -> None:
    server = AdminServer(dict, _checks({"redis": "down"}))
    status, headers, body = _run(server, "/livez", serving=False)
    assert status == 200
    assert body == {"status": "alive"}
    assert headers["cache-control"] == "no-store"


def test_readyz_200_lists_every_check() -> None:
    server = AdminServer(dict, _checks({"redis": None, "spool": None}))
    status, headers, body = _run(server, "/readyz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == {"status": "ready", "checks": {"listeners": "ok", "redis": "ok", "spool": "ok"}}


def test_readyz_503_is_a_problem_naming_what_is_not_ready() -> None:
    server = AdminServer(
        dict, _checks({"redis": "no answer to PING within 500 ms", "spool": None}), problem_type_base="urn:x:"
    )
    status, headers, body = _run(server, "/readyz?verbose=1")
    assert status == 503
    assert headers["content-type"] == "application/problem+json"
    assert body == {
        "type": "urn:x:not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": "redis: no answer to PING within 500 ms",
        "checks": {"listeners": "ok", "redis": "no answer to PING within 500 ms", "spool": "ok"},
    }


def test_readyz_503_until_the_listeners_are_open() -> None:
    status, _, body = _run(AdminServer(dict, _checks({})), "/readyz", serving=False)
    assert status == 503
    assert body["checks"] == {"listeners": "the ext_authz listeners are not open yet"}


def test_readyz_without_checks_depends_on_the_listeners_only() -> None:
    status, _, body = _run(AdminServer(dict), "/readyz")
    assert (status, body["checks"]) == (200, {"listeners": "ok"})


def test_a_failing_check_is_a_503_not_a_500() -> None:
    async def broken() -> Mapping[str, str | None]:
        raise RuntimeError("boom")

    status, _, body = _run(AdminServer(dict, broken), "/readyz")
    assert status == 503
    assert body["checks"]["checks"] == "the readiness checks failed: RuntimeError"


def test_head_has_headers_and_no_body() -> None:
    status, headers, body = _run(AdminServer(dict, _checks({"redis": "down"})), "/readyz", method="HEAD")
    assert status == 503
    assert int(headers["content-length"]) > 0
    assert body is None


@pytest.mark.parametrize(("path", "method"), [("/nope", "GET"), ("/readyz", "POST")])
def test_other_paths_and_methods_are_404(path: str, method: str) -> None:
    status, headers, _ = _run(AdminServer(dict), path, method=method)
    assert status == 404
    assert headers["content-type"] == "application/problem+json"


def test_healthz_keeps_its_detail() -> None:
    status, _, body = _run(AdminServer(lambda: {"catalog": None}), "/healthz")
    assert status == 200
    assert body["status"] == "serving"
    assert body["catalog"] is None


def test_spool_probe_writes_and_removes_its_file(tmp_path: Path) -> None:
    probe = _SpoolProbe(tmp_path, 5.0)
    assert asyncio.run(probe.check()) is None
    assert list(tmp_path.iterdir()) == []


def test_spool_probe_names_an_unwritable_directory(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.write_text("a file where the directory should be")  # fails for root too
    reason = asyncio.run(_SpoolProbe(spool, 5.0).check())
    assert reason is not None
    assert reason.startswith(f"{spool} is not writable: ")


class _Redis:
    """A Redis client whose PING answers or fails as the test says."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> bool:
        if not self.up:
            from redis.exceptions import ConnectionError as RedisConnectionError

            raise RedisConnectionError("Connection refused")
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _probe(tolerate_s: float) -> tuple[_Redis, _Clock, RedisProbe, Readiness]:
    redis, clock = _Redis(), _Clock()
    probe = RedisProbe(redis, tolerate_s=tolerate_s, monotonic=clock)  # type: ignore[arg-type]
    return redis, clock, probe, readiness_checks(probe, None, refuse_when_spool_full=False)


def test_a_redis_outage_within_the_staleness_bound_is_reported_not_refused() -> None:
    redis, clock, probe, ready = _probe(tolerate_s=300)
    assert asyncio.run(ready()) == {"redis": None}
    redis.up = False
    clock.now += 299
    assert asyncio.run(ready()) == {}  # not a reason to leave the Service: last-known records answer
    assert probe.reported()["redis"].startswith("unreachable for 299 s (tolerated up to 300 s")
    clock.now += 2  # past the bound: nothing read before the outage is trusted any more
    results = asyncio.run(ready())
    assert results["redis"] is not None
    assert results["redis"].startswith("PING failed")
    assert probe.reported() == {}
    redis.up = True
    assert asyncio.run(ready()) == {"redis": None}


def test_a_redis_never_reached_is_not_ready_whatever_the_bound() -> None:
    redis, _, probe, ready = _probe(tolerate_s=300)
    redis.up = False
    assert asyncio.run(ready())["redis"] is not None
    assert probe.reported() == {}


def test_without_last_known_records_a_redis_outage_is_not_ready_at_once() -> None:
    redis, _, _, ready = _probe(tolerate_s=0)
    assert asyncio.run(ready()) == {"redis": None}
    redis.up = False
    assert asyncio.run(ready())["redis"] is not None


def test_readyz_stays_200_and_reports_a_tolerated_redis_outage() -> None:
    redis, clock, probe, ready = _probe(tolerate_s=300)
    asyncio.run(ready())
    redis.up = False
    clock.now += 5
    status, _, body = _run(AdminServer(lambda: {}, ready, dependencies=probe.reported), "/readyz")
    assert status == 200
    assert body["checks"] == {"listeners": "ok"}
    assert body["reported"]["redis"].startswith("unreachable for 5 s")
