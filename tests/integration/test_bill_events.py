"""Invoice events of ``tollway bill`` (docs/notifications.md): ``--finalize`` run twice gives one
``invoice.finalized`` per invoice; a draft gives none; late usage adjusted on a later invoice gives one
``invoice.adjusted`` per adjusted invoice. With the billing tests' dataset, store and command."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.test_bill import (  # the billing tests' dataset and helpers
    NOW,
    SUBSCRIPTIONS,
    billed_db,  # noqa: F401 - a fixture
    catalog,
    command_setup,
    row,
    subscribe,
    tollway,
)
from tests.support.chdb_engine import ChdbDatabase
from tollway.cli.bill import BillReport, announce, bill
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event, event_id
from tollway.notifications.outbox import OutboxWriter
from tollway.warehouse.connection import insert_json_rows

pytestmark = pytest.mark.integration


def announced(valkey: ValkeyServer, report: BillReport) -> int:
    async def go() -> int:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await announce(report, OutboxWriter(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


def outbox(valkey: ValkeyServer, customers: list[str]) -> dict[str, list[Event]]:
    async def go() -> dict[str, list[Event]]:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return {
                c: [Event.from_stream(f) for _, f in await client.xrange(keys.stream_key("tw:", c))] for c in customers
            }
        finally:
            await client.aclose()

    return asyncio.run(go())


CUSTOMERS = ["acme", "kiwi", "late", "anniv"]


def test_finalizing_twice_gives_one_invoice_finalized_per_invoice(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)

    def run(**options: Any) -> BillReport:
        return bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, **options)

    assert announced(valkey_fresh, run()) == 0  # drafts: nothing to tell
    first = run(finalize=True)
    assert announced(valkey_fresh, first) == 4
    again = run(finalize=True)
    assert {r.action for r in again.results} == {"unchanged"}
    assert announced(valkey_fresh, again) == 0
    found = outbox(valkey_fresh, CUSTOMERS)
    documents = {r.document["customer_id"]: r.document for r in first.results}
    for customer in CUSTOMERS:
        [event] = found[customer]
        document = documents[customer]
        assert event.type == "invoice.finalized"
        assert event.id == event_id("invoice.finalized", document["invoice_id"])
        assert event.data == {
            "invoice_id": document["invoice_id"],
            "period_start": document["period"]["start"].replace("Z", ".000Z"),
            "period_end": document["period"]["end"].replace("Z", ".000Z"),
            "currency": "USD",
            "total": document["total"],
        }
    assert found["acme"][0].data["total"] == "13.22"


def test_late_usage_adjusted_on_a_later_invoice_is_told_once(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    october = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True)
    announced(valkey_fresh, october)
    insert_json_rows(client, database, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1}))
    december_2 = datetime(2026, 12, 2, tzinfo=UTC)
    for _ in range(2):
        november = bill(client, database, catalog(), subscriptions, "2026-11", now=december_2, finalize=True)
        announced(valkey_fresh, november)
    october_id = october.results[0].document["invoice_id"]
    november_id = november.results[0].document["invoice_id"]
    found = outbox(valkey_fresh, ["acme"])["acme"]
    assert [(e.type, e.id) for e in found] == [
        ("invoice.finalized", event_id("invoice.finalized", october_id)),
        ("invoice.finalized", event_id("invoice.finalized", november_id)),
        ("invoice.adjusted", event_id("invoice.adjusted", october_id, november_id)),
    ]
    assert found[2].data == {"invoice_id": october_id, "adjusted_by": november_id, "amount": "0.50", "currency": "USD"}


def test_the_command_finalizing_twice_emits_one_invoice_finalized(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    env = command_setup(valkey_fresh, tmp_path)
    argv = ("bill", "--period", "2026-10", "--customer", "acme", "--plans", "catalog.yaml", "--finalize")
    for note in ("finalized", "already finalized, left unchanged"):
        done = tollway(env, tmp_path, *argv)
        assert done.code == 0, done.stderr
        assert note in done.stdout
    [event] = outbox(valkey_fresh, ["acme"])["acme"]
    assert (event.type, event.data["total"]) == ("invoice.finalized", "13.22")
