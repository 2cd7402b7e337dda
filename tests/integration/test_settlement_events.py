"""Money events of reservation settlements on a real Valkey (``settle.lua``; docs/notifications.md): an
overrun burned at settlement that takes the balance below a ``balance.low`` threshold or to 0 or below is
announced exactly once — not again when the settlement is replayed (by the same or another process), not
again when admission (or a settlement before a give-back) already announced the threshold in the funding
epoch — with the ids and bodies of the model (``MemoryLimiter.settle_now``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from tollway.credits.grants import GrantState
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.events import Event, event_id
from tollway.notifications.keys import ready_key, stream_key
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter, RedisLimiter
from tollway.ratelimit.keys import funding_key
from tollway.ratelimit.reservations import Settlement

pytestmark = pytest.mark.integration

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: tokens, version: "1"}
meters:
  requests: {unit: requests}
  tokens: {unit: response_json, field: usage.total_tokens, features: [chat]}
features:
  chat:
    routes: [{methods: [POST], path: /v1/chat}]
plans:
  llm:
    features: [chat]
    prepaid: {unit: USD, reserve: {tokens: 4000}, overrun: "0.05", alerts: ["0.1", "0.05"]}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.001"}
        - {id: llm, model: per_unit, meter: tokens, unit_amount: "0.00001"}
"""
PERIOD = (
    int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000),
)
NOW = int(datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp() * 1000)


def test_an_overrun_crosses_balance_low_and_exhausted_once_replayed_and_after_admission(
    valkey_fresh: ValkeyServer,
) -> None:
    """One call (1_000 micro-USD) plus 4_000 tokens reserved (40_000) per admission, from 200_000:
    u3's admission crosses 0.1 (announced by the check); u1's give-back lifts the balance above 0.1 again
    (re-arming nothing); u2's overrun crosses 0.1 a second time (no event: the same id in the same funding
    epoch); u3's overrun crosses 0.05 and 0 (one ``balance.low`` and one ``balance.exhausted``, whose
    ``price`` is the overrun burned). Every settlement is replayed, by the same and by another process:
    nothing more. A record written before settlements had events still settles, silently."""
    catalog = compile_catalog_text(CATALOG, "catalog.yaml")
    money = catalog.money_for("llm", "chat", PERIOD, 1)
    assert money is not None
    assert money.alerts is not None
    model = MemoryLimiter()

    async def scenario() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        one = RedisLimiter(redis, coalesce=False, server_time=False)
        other = RedisLimiter(redis, coalesce=False, server_time=False)
        try:
            grant = GrantState("g1", 200_000)
            model.put_grant("acme", grant)
            await redis.hset("tw:cr:{acme}", "g1", grant.encode())
            await redis.incr(funding_key("tw:", "acme"))  # as credits.store does with a grant

            async def outbox() -> list[Event]:
                return [Event.from_stream(f) for _, f in await redis.xrange(stream_key("tw:", "acme"))]

            async def admit(row: str, at: int) -> None:
                expected = model.check("acme", [], 0, at, None, money.for_row(row))
                got = await one.consume("acme", [], 0, at, None, money.for_row(row))
                assert got == expected
                assert got.admitted

            async def settle(row: str, tokens: int, at: int) -> Settlement:
                expected = model.settle_now("acme", row, {"llm": tokens}, at)
                got = await one.settle("acme", row, {"llm": tokens}, at)
                assert got == expected
                # Replayed: the same process, another one, later, with other quantities.
                for lim in (one, other):
                    again = await lim.settle("acme", row, {"llm": tokens + 777}, at + 5)
                    assert again == model.settle_now("acme", row, {"llm": tokens + 777}, at + 5)
                    assert again.status == "already"
                    assert replace(again, status="settled") == got
                return got

            await admit("u1", NOW)  # 200_000 -> 159_000
            await admit("u2", NOW + 1)  # -> 118_000
            await admit("u3", NOW + 2)  # -> 77_000: crosses 0.1 at admission
            low_01 = event_id("balance.low", "acme", 100_000, 1)
            assert [e.id for e in await outbox()] == [low_01]
            assert (await settle("u1", 1_000, NOW + 10)).back == 30_000  # -> 107_000: above 0.1 again
            assert (await settle("u2", 6_000, NOW + 20)).burned == 20_000  # -> 87_000: 0.1 again, no event
            assert [e.id for e in await outbox()] == [low_01]
            await redis.delete(ready_key("tw:"))
            u3 = await settle("u3", 14_000, NOW + 30)  # 10_000 tokens more: 100_000 burned, -> -13_000
            assert (u3.burned, u3.forgiven) == (100_000, 0)
            await one.aclose()  # the announcement is in flight off the settlement's path
            assert await redis.smembers(ready_key("tw:")) == {"acme"}

            events = await outbox()
            assert events == model.events("acme")
            assert [(e.type, e.ts_ms, e.data) for e in events] == [
                ("balance.low", NOW + 2, {"unit": "USD", "balance": "0.077", "threshold": "0.1"}),
                ("balance.low", NOW + 30, {"unit": "USD", "balance": "-0.013", "threshold": "0.05"}),
                ("balance.exhausted", NOW + 30, {"unit": "USD", "balance": "-0.013", "price": "0.1"}),
            ]
            assert [e.id for e in events] == [
                low_01,
                event_id("balance.low", "acme", 50_000, 1),
                event_id("balance.exhausted", "acme", 1),
            ]

            # A record of the old format (no alerts in its header) settles as before, with no event.
            await redis.hset(
                "tw:rv:{acme}", "old", f"R {NOW} 50000 1 -1 -1 41000\nllm {PERIOD[0]} {PERIOD[1]} 4000 40000 0 10"
            )
            old = await other.settle("acme", "old", {"llm": 5_000}, NOW + 40)
            assert (old.status, old.burned) == ("settled", 10_000)
            assert await outbox() == events
        finally:
            await other.aclose()
            await redis.aclose()

    asyncio.run(scenario())
