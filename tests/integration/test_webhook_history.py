"""Webhook history in ClickHouse (embedded chdb): the dispatcher's buffered rows land once in ``events`` and
``webhook_deliveries`` even when a batch is inserted twice, and read back by customer, type, time range
(keyset pages), one event, and attempts per endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from tests.integration.test_webhook_dispatch import PREFIX, SECRET, emit, make_event, running, settings, until
from tests.support.chdb_engine import ChdbDatabase
from tollway.harness.valkey import ValkeyServer
from tollway.harness.webhook_receiver import WebhookReceiver
from tollway.notifications.dispatcher import Target
from tollway.notifications.history import EventQuery, HistoryWriter, get_event, query_attempts, query_events
from tollway.notifications.queue import history_key
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration
T = TypeVar("T")


def test_events_and_attempts_land_once_and_read_back(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    client, database = chdb_db
    Migrator(client, database).migrate()

    async def runs(fn: Callable[[Any, str], T]) -> T:
        return fn(client, database)

    async def main() -> None:
        receiver = WebhookReceiver(secrets={"/ok": SECRET}, modes={"/fail": "fail"})
        await receiver.start()
        targets = [Target("ep_ok", receiver.url("/ok"), (SECRET,)), Target("ep_fail", receiver.url("/fail"), (SECRET,))]
        s = settings(webhook_retry_schedule_s="0,0.1")
        async with running(valkey_fresh, targets, s) as (dispatcher, redis, _):
            events = [
                make_event(n, "cus_a" if n < 6 else "cus_b", "key.created" if n % 2 else "key.revoked")
                for n in range(10)
            ]
            for event in events:
                await emit(redis, event)
            await until(lambda: dispatcher.stats.delivered == 10 and dispatcher.stats.given_up == 10)
            await asyncio.sleep(0.3)
            buffered = await redis.llen(history_key(PREFIX))
            assert buffered == 10 + 10 + 20  # events, deliveries to ep_ok, two attempts each to ep_fail
            # the same rows inserted twice (a writer killed between insert and trim): still one each
            writer = HistoryWriter(redis, PREFIX, lambda: runs)
            rows = await redis.lrange(history_key(PREFIX), 0, -1)
            assert await writer.flush_once() == buffered
            await redis.rpush(history_key(PREFIX), *rows)
            writer2 = HistoryWriter(redis, PREFIX, lambda: runs)
            assert await writer2.flush_once() == 0  # the first writer holds the lock
            await redis.delete(f"{PREFIX}{{wh}}:history:lock")
            assert await writer2.flush_once() == buffered
            assert await redis.llen(history_key(PREFIX)) == 0
        await receiver.stop()

        everything = query_events(client, database, EventQuery(limit=100))
        assert sorted(e.id for e in everything) == sorted(e.id for e in events)
        assert [e.ts_ms for e in everything] == sorted((e.ts_ms for e in events), reverse=True)
        page1 = query_events(client, database, EventQuery(customer_id="cus_a", limit=4))
        page2 = query_events(
            client, database, EventQuery(customer_id="cus_a", limit=4, before=(page1[-1].ts_ms, page1[-1].id))
        )
        assert [e.id for e in page1 + page2] == [e.id for e in reversed(events[:6])]
        revoked = query_events(
            client, database, EventQuery(types=("key.revoked",), since_ms=events[2].ts_ms, until_ms=events[8].ts_ms)
        )
        assert [e.id for e in revoked] == [events[6].id, events[4].id, events[2].id]
        assert get_event(client, database, events[3].id) == events[3]
        assert get_event(client, database, "evt_" + "0" * 32) is None
        ok = query_attempts(client, database, "ep_ok")
        assert len(ok) == 10
        assert {a.outcome for a in ok} == {"delivered"}
        assert {a.status for a in ok} == {204}
        failed = query_attempts(client, database, "ep_fail", events[0].id)
        assert sorted((a.attempt, a.outcome, a.status) for a in failed) == [(1, "retry", 500), (2, "failed", 500)]

    asyncio.run(main())


def test_history_waits_in_redis_while_clickhouse_is_away(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        await redis.rpush(
            history_key(PREFIX), '{"t":"events","id":"x","type":"key.created","ts":1,"customer_id":"","data":"{}"}'
        )
        writer = HistoryWriter(redis, PREFIX, lambda: None)
        assert await writer.flush_once() == 0
        assert await redis.llen(history_key(PREFIX)) == 1
        await redis.aclose()

    asyncio.run(main())
