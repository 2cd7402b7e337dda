"""Document numbers (``billing.numbering``) against real Valkey and a real Valkey Cluster: consecutive
from 1, idempotent per document id, and exactly 1..N, each id once, under many concurrent assigns from
several clients."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from tollway.billing.finalization import invoice_facts
from tollway.billing.numbering import (
    assign_number,
    assign_numbers,
    format_number,
    numbers_assigned,
    numbers_key,
    raise_sequence,
    sequence_key,
)
from tollway.billing.seller import Seller
from tollway.customers import BillingDetails, CustomerRecord, RedisCustomerStore
from tollway.harness.valkey import ValkeyServer
from tollway.harness.valkey_cluster import ValkeyCluster
from tollway.parties import Party

pytestmark = pytest.mark.integration


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"  # the session's Valkey is shared: keep examples apart


def test_numbers_are_consecutive_from_one_and_the_same_id_keeps_its_number(valkey: ValkeyServer) -> None:
    async def main() -> None:
        redis = Redis.from_url(valkey.url, decode_responses=True)
        prefix = _prefix()
        try:
            got = [
                await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id=doc)
                for doc in ["a", "b", "a", "c", "b"]
            ]
            assert got == [1, 2, 1, 3, 2]
            # another year and another series are sequences of their own
            assert await assign_number(redis, prefix=prefix, series="INV", year=2027, document_id="a") == 1
            assert await assign_number(redis, prefix=prefix, series="CN", year=2026, document_id="x") == 1
            assert await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id="d") == 4
            assert await numbers_assigned(redis, prefix=prefix, series="INV", year=2026) == {
                "a": 1,
                "b": 2,
                "c": 3,
                "d": 4,
            }
        finally:
            await redis.aclose()

    asyncio.run(main())


async def _race(clients: list[Redis], prefix: str, ids: list[str]) -> list[int]:
    """Every id of ``ids`` assigned at once, the calls spread over ``clients`` (separate connections)."""
    return await asyncio.gather(
        *(
            assign_number(clients[i % len(clients)], prefix=prefix, series="INV", year=2026, document_id=doc)
            for i, doc in enumerate(ids)
        )
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(st.sampled_from([f"inv-{i}" for i in range(60)]), min_size=1, max_size=150),
    clients=st.integers(min_value=1, max_value=4),
)
def test_concurrent_assigns_number_each_id_once_exactly_1_to_n(
    valkey: ValkeyServer, ids: list[str], clients: int
) -> None:
    async def main() -> None:
        pool = [Redis.from_url(valkey.url, decode_responses=True) for _ in range(clients)]
        prefix = _prefix()
        try:
            got = await _race(pool, prefix, ids)
            again = await _race(list(reversed(pool)), prefix, list(reversed(ids)))
            stored = await numbers_assigned(pool[0], prefix=prefix, series="INV", year=2026)
        finally:
            for client in pool:
                await client.aclose()
        distinct = set(ids)
        assert sorted(stored.values()) == list(range(1, len(distinct) + 1))  # 1..N, no gap, no repeat
        assert set(stored) == distinct
        for doc, number in zip(ids, got, strict=True):
            assert stored[doc] == number  # every call for an id answered its one number
        assert again == [stored[doc] for doc in reversed(ids)]
        assert max(got) == len(distinct)

    asyncio.run(main())


def test_assign_works_on_a_cluster_the_two_keys_in_one_slot(valkey_cluster: ValkeyCluster) -> None:
    async def main() -> None:
        clients = [RedisCluster.from_url(valkey_cluster.url, decode_responses=True) for _ in range(2)]
        prefix = _prefix()
        try:
            slots = {
                await clients[0].cluster_keyslot(key)
                for key in (sequence_key(prefix, "INV", 2026), numbers_key(prefix, "INV", 2026))
            }
            assert len(slots) == 1
            ids = [f"inv-{i % 40}" for i in range(120)]
            got = await asyncio.gather(
                *(
                    assign_number(clients[i % 2], prefix=prefix, series="INV", year=2026, document_id=doc)
                    for i, doc in enumerate(ids)
                )
            )
            batch = [f"inv-{i}" for i in range(30, 60)]  # 30..39 have numbers, 40..59 are new
            batched = await assign_numbers(clients[0], prefix=prefix, series="INV", year=2026, document_ids=batch)
            stored = await numbers_assigned(clients[1], prefix=prefix, series="INV", year=2026)
        finally:
            for client in clients:
                await client.aclose()
        assert sorted(stored.values()) == list(range(1, 61))
        assert all(stored[doc] == number for doc, number in zip(ids, got, strict=True))
        assert batched == [stored[doc] for doc in batch]
        assert batched[10:] == list(range(41, 61))

    asyncio.run(main())


def test_bad_arguments_are_refused_before_redis_is_touched(valkey: ValkeyServer) -> None:
    async def main() -> None:
        redis = Redis.from_url(valkey.url, decode_responses=True)
        prefix = _prefix()
        try:
            for series, year, doc in [("", 2026, "a"), ("IN{V}", 2026, "a"), ("INV", 0, "a"), ("INV", 2026, "")]:
                with pytest.raises(ValueError):
                    await assign_number(redis, prefix=prefix, series=series, year=year, document_id=doc)
            assert await redis.keys(f"{prefix}*") == []
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_format_number() -> None:
    assert format_number("INV", 2026, 42) == "INV-2026-000042"
    assert format_number("CN", 2026, 7) == "CN-2026-000007"
    assert format_number("INV", 2026, 1_234_567) == "INV-2026-1234567"
    for series, year, number in [("INV", 2026, 0), ("INV-X", 2026, 1), ("INV", 10_000, 1), ("", 2026, 1)]:
        with pytest.raises(ValueError):
            format_number(series, year, number)


def test_a_sequence_raised_continues_above_and_is_never_lowered(valkey: ValkeyServer) -> None:
    async def main() -> None:
        redis = Redis.from_url(valkey.url, decode_responses=True)
        prefix = _prefix()
        try:
            assert await raise_sequence(redis, prefix=prefix, series="INV", year=2026, at_least=41) == 41
            assert await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id="a") == 42
            assert await raise_sequence(redis, prefix=prefix, series="INV", year=2026, at_least=10) == 42
            assert await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id="b") == 43
            assert await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id="a") == 42
            with pytest.raises(ValueError):
                await raise_sequence(redis, prefix=prefix, series="INV", year=2026, at_least=-1)
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_a_batch_numbers_new_ids_in_its_order_and_keeps_old_ones(valkey: ValkeyServer) -> None:
    async def main() -> None:
        redis = Redis.from_url(valkey.url, decode_responses=True)
        prefix = _prefix()
        try:
            assert await assign_number(redis, prefix=prefix, series="INV", year=2026, document_id="c") == 1
            ids = [f"d{i}" for i in range(2500)]  # three pipelines
            got = await assign_numbers(
                redis, prefix=prefix, series="INV", year=2026, document_ids=["c", *ids, "c", "d7"]
            )
            assert got == [1, *range(2, 2502), 1, 9]
            assert await assign_numbers(redis, prefix=prefix, series="INV", year=2026, document_ids=[]) == []
            with pytest.raises(ValueError):
                await assign_numbers(redis, prefix=prefix, series="INV", year=2026, document_ids=["x", ""])
        finally:
            await redis.aclose()

    asyncio.run(main())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.sampled_from([f"inv-{i}" for i in range(40)]), max_size=60), min_size=2, max_size=4)
)
def test_racing_batches_and_single_assigns_number_each_id_once(valkey: ValkeyServer, batches: list[list[str]]) -> None:
    async def main() -> None:
        pool = [Redis.from_url(valkey.url, decode_responses=True) for _ in batches]
        prefix = _prefix()
        try:
            results = await asyncio.gather(
                *(
                    assign_numbers(client, prefix=prefix, series="INV", year=2026, document_ids=batch)
                    for client, batch in zip(pool, batches, strict=True)
                ),
                _race(pool, prefix, [doc for batch in batches for doc in reversed(batch)]),
            )
            stored = await numbers_assigned(pool[0], prefix=prefix, series="INV", year=2026)
        finally:
            for client in pool:
                await client.aclose()
        distinct = {doc for batch in batches for doc in batch}
        assert sorted(stored.values()) == list(range(1, len(distinct) + 1))
        for batch, got in zip(batches, results[:-1], strict=True):
            assert got == [stored[doc] for doc in batch]

    asyncio.run(main())


def test_invoice_facts_on_a_cluster(valkey_cluster: ValkeyCluster) -> None:
    """The finalization's pipelines (issue dates, numbers, customer records) on a Valkey Cluster: issue-date
    keys and customer records spread over the masters, the numbers in one slot."""

    async def main() -> None:
        redis = RedisCluster.from_url(valkey_cluster.url, decode_responses=True)
        prefix = _prefix()
        seller = Seller(Party("Seller Ltd"), timezone="UTC", payment_terms_days=10, series="INV")
        invoices: list[Any] = [SimpleNamespace(invoice_id=f"in_{i:024x}", customer_id=f"c{i % 7}") for i in range(50)]
        now = datetime(2026, 12, 31, 12, tzinfo=UTC)
        try:
            await RedisCustomerStore(redis, prefix).put(
                CustomerRecord("c3", "Three", None, now, BillingDetails(legal_name="Three Ltd", payment_terms_days=5))
            )
            facts = await invoice_facts(redis, prefix, seller, invoices, now, highest=lambda series, year: 100)
            again = await invoice_facts(redis, prefix, seller, list(reversed(invoices)), now + timedelta(days=3))
        finally:
            await redis.aclose()
        assert [facts[i.invoice_id].number for i in invoices] == [f"INV-2026-{n:06d}" for n in range(101, 151)]
        assert again == facts  # the same numbers and issue dates, whenever and in whatever order
        three = facts[invoices[3].invoice_id]
        assert (three.buyer, three.due_on) == (Party("Three Ltd"), date(2027, 1, 5))
        assert facts[invoices[0].invoice_id].buyer == Party("c0")
        assert facts[invoices[0].invoice_id].due_on == date(2027, 1, 10)

    asyncio.run(main())
