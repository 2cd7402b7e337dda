"""Reservations on a real Valkey, end to end below Envoy: admission through ``RedisLimiter`` keyed by row ids,
settlement from access-log entries (``AccessLogService`` with the settler), the sweeper's SCAN of every
customer's reservations, its repairs, and deletion of settled markers only (never an open record)."""

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.unit.usage.test_reservation_rows import CATALOG
from tests.unit.usage.test_reservation_sweeper import NOW, PERIOD, TIMEOUT, completed, decision_row
from tests.unit.usage.test_settlement import logged
from tollway.credits.grants import GrantState, decode_all
from tollway.extproc.access_log import AccessLogService
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import RedisLimiter
from tollway.usage.meters import catalog_meters
from tollway.usage.reservation_sweeper import CLOSED_AT_RESERVE, sweep
from tollway.usage.row import UsageRow
from tollway.usage.settlement import ReservationSettler
from tollway.usage.spool import SpoolWriter

pytestmark = pytest.mark.integration


class Rows:
    def __init__(self) -> None:
        self.latest: dict[str, UsageRow] = {}

    async def rows(self, customer_id: str, row_ids: Sequence[str]) -> Mapping[str, UsageRow]:
        return {r: row for r, row in self.latest.items() if r in row_ids and row.customer_id == customer_id}


def test_admit_settle_from_the_access_log_and_sweep_on_valkey(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    catalog = compile_catalog_text(CATALOG, "catalog.yaml")
    money = catalog.money_for("llm", "chat", PERIOD, 1)
    assert money is not None

    async def scenario() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        limiter = RedisLimiter(redis, coalesce=False, server_time=False)
        try:
            await redis.hset("tw:cr:{acme}", "g1", GrantState("g1", 1_000_000).encode())
            for row_id in ("u1", "lost", "never", "young"):
                at = NOW + 10 * TIMEOUT if row_id == "young" else NOW
                verdict = await limiter.consume("acme", [], 0, at, None, money.for_row(row_id))
                assert verdict.admitted
            with pytest.raises(Exception, match="reservation"):  # a row id reserves once
                await limiter.consume("acme", [], 0, NOW, None, money.for_row("u1"))
            spool = SpoolWriter(tmp_path)
            settler = ReservationSettler(limiter, lambda: catalog, lambda: NOW + 5)
            service = AccessLogService(spool, lambda: catalog_meters(catalog), settler)
            await service.write_settled(logged("u1", "1500"))
            await service.write_settled(logged("u1", "1500"))
            lines = [json.loads(line) for line in (spool.path or Path()).read_bytes().splitlines()]
            assert [line["price_micros"] for line in lines] == [16_000, 16_000]
            rows = Rows()
            rows.latest["u1"] = completed("u1", 1_500, 16_000)
            rows.latest["lost"] = decision_row("lost")
            corrections: list[dict[str, object]] = []

            def append(data: bytes) -> bool:
                corrections.extend(json.loads(line) for line in data.splitlines())
                return True

            later = NOW + TIMEOUT + 10
            report = await sweep(limiter, rows, catalog, append, later, TIMEOUT)
            assert (report.closed, report.released, report.forgotten) == (["lost"], ["never"], ["u1"])
            assert [(c["request_id"], c["version"], c["reason"]) for c in corrections] == [
                ("lost", 3, CLOSED_AT_RESERVE)
            ]
            held = await limiter.reservations("acme")
            assert sorted(held) == ["lost", "never", "young"]
            assert held["young"].startswith("R ")
            assert not await limiter.forget_settled("acme", "young")  # an open record is never deleted
            assert await limiter.held_reservations() == {"acme": held}
            grants = {g.grant_id: g.remaining for g in decode_all(await redis.hgetall("tw:cr:{acme}"))}
            # u1 16_000, lost 41_000 (closed at reserve), never 1_000 (its reserve released), young 41_000
            assert grants == {"g1": 1_000_000 - 16_000 - 41_000 - 1_000 - 41_000}
        finally:
            await limiter.aclose()
            await redis.aclose()

    asyncio.run(scenario())
