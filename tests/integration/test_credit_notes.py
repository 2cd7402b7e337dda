"""Credit notes issued against real Valkey (lock, numbers) and the embedded ClickHouse (invoices, the
``credit_notes`` table): the acceptance (a credit note restores a corrected amount), consecutive
``CN`` numbers, idempotency, nothing written on a refusal, and two credit notes issued at once for the
same invoice never crediting more than it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.chdb_engine import ChdbDatabase
from tests.support.invoice_documents import invoice_document, store_invoice
from tollway.billing import credit_note_store
from tollway.billing.credit_notes import (
    CreditNoteBusy,
    CreditRequest,
    CreditTooLarge,
    IdempotencyConflict,
    InvalidCredit,
    InvoiceNotFinalized,
    InvoiceNotFound,
    LineCredit,
    credited,
)
from tollway.billing.crediting import ClientRunner, CreditNoteIssuer, lock_key
from tollway.billing.numbering import numbers_assigned
from tollway.harness.valkey import ValkeyServer
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
INVOICE = "in_" + "a" * 24
DRAFT = "in_" + "d" * 24


@pytest.fixture
def invoices(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    store_invoice(client, database, invoice_document(INVOICE))
    store_invoice(client, database, invoice_document(DRAFT, status="draft"))
    return chdb_db


def rows(chdb: ChdbDatabase) -> int:
    client, database = chdb
    return int(client.query(f"SELECT count() FROM {database}.credit_notes FINAL").result_rows[0][0])


async def issue(
    valkey: ValkeyServer, chdb: ChdbDatabase, *requests: CreditRequest, issuer_options: dict[str, Any] | None = None
) -> list[Any]:
    """Issue ``requests`` one after the other; each result is the ``Issued`` or the error raised."""
    redis = Redis.from_url(valkey.url, decode_responses=True)
    runner = ClientRunner(*chdb)
    issuer = CreditNoteIssuer(redis, **(issuer_options or {}))
    results: list[Any] = []
    try:
        for request in requests:
            try:
                results.append(await issuer.issue(runner, request, now=NOW))
            except Exception as exc:
                results.append(exc)
    finally:
        await redis.aclose()
    return results


def test_a_credit_note_restores_a_corrected_amount(valkey_fresh: ValkeyServer, invoices: ChdbDatabase) -> None:
    # The invoice billed 76.65 USD, of which egress 6.65 was wrongly charged: 76.65 − 6.65 = 70.00 is owed.
    request = CreditRequest(INVOICE, "egress double-counted on 2026-11-03", "6.65", idempotency_key="fix-1")
    [issued] = asyncio.run(issue(valkey_fresh, invoices, request))
    document = issued.document
    assert issued.created
    assert document["number"] == "CN-2026-000001"
    assert document["invoice_number"] == "INV-2026-000042"
    assert (document["total"], document["currency"], document["customer_id"]) == ("6.65", "USD", "acme")
    assert document["issued_on"] == "2026-12-07"
    client, database = invoices
    stored = credit_note_store.for_invoice(client, database, INVOICE)
    assert stored == [document]
    assert Decimal("76.65") - credited(stored) == Decimal("70.00")
    # The invoice itself never changed.
    [[text]] = client.query(
        f"SELECT document FROM {database}.invoices FINAL WHERE invoice_id = '{INVOICE}'"
    ).result_rows
    assert '"total": "76.65"' in text


def test_numbers_are_consecutive_and_a_retry_is_the_same_credit_note(
    valkey_fresh: ValkeyServer, invoices: ChdbDatabase
) -> None:
    first = CreditRequest(INVOICE, "egress", None, (LineCredit(3),), idempotency_key="k1")
    second = CreditRequest(INVOICE, "calls overcharged", None, (LineCredit(2, "1.00"),), idempotency_key="k2")
    other = CreditRequest(INVOICE, "calls overcharged", None, (LineCredit(2, "2.00"),), idempotency_key="k2")
    results = asyncio.run(issue(valkey_fresh, invoices, first, second, first, second, other))
    a, b, a_again, b_again, conflict = results
    assert [r.document["number"] for r in (a, b)] == ["CN-2026-000001", "CN-2026-000002"]
    assert (a.created, b.created, a_again.created, b_again.created) == (True, True, False, False)
    assert a_again.document == a.document
    assert b_again.document == b.document
    assert isinstance(conflict, IdempotencyConflict)
    assert rows(invoices) == 2
    assert a.document["lines"] == [{"description": "line 3: Egress", "amount": "6.65", "invoice_line": 3}]

    async def assigned() -> dict[str, int]:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            return await numbers_assigned(redis, prefix="tw:", series="CN", year=2026)
        finally:
            await redis.aclose()

    assert asyncio.run(assigned()) == {a.document["credit_note_id"]: 1, b.document["credit_note_id"]: 2}


def test_a_redis_emptied_between_two_credit_notes_continues_after_the_highest_number_stored(
    valkey_fresh: ValkeyServer, invoices: ChdbDatabase
) -> None:
    first = CreditRequest(INVOICE, "egress", None, (LineCredit(3),), idempotency_key="k1")
    second = CreditRequest(INVOICE, "calls overcharged", None, (LineCredit(2, "1.00"),), idempotency_key="k2")
    third = CreditRequest(INVOICE, "calls overcharged again", None, (LineCredit(2, "0.50"),), idempotency_key="k3")
    a, b = asyncio.run(issue(valkey_fresh, invoices, first, second))
    assert [r.document["number"] for r in (a, b)] == ["CN-2026-000001", "CN-2026-000002"]

    async def flush() -> None:  # a Redis lost, or restored from a backup older than both numbers
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()

    asyncio.run(flush())
    [c] = asyncio.run(issue(valkey_fresh, invoices, third))
    assert c.document["number"] == "CN-2026-000003"
    assert rows(invoices) == 3


def test_refusals_write_nothing(valkey_fresh: ValkeyServer, invoices: ChdbDatabase) -> None:
    first = CreditRequest(INVOICE, "most of it", "70.00")
    too_large = CreditRequest(INVOICE, "a cent too much", "6.66")
    draft = CreditRequest(DRAFT, "draft", "1.00")
    unknown = CreditRequest("in_" + "0" * 24, "nobody", "1.00")
    places = CreditRequest(INVOICE, "places", "1.001")
    line = CreditRequest(INVOICE, "no such line", None, (LineCredit(9),))
    results = asyncio.run(issue(valkey_fresh, invoices, first, too_large, draft, unknown, places, line))
    assert results[0].document["total"] == "70.00"
    assert isinstance(results[1], CreditTooLarge)
    assert "6.66 USD is larger than what remains to credit" in str(results[1])
    assert "6.65 USD (total 76.65, credited 70.00)" in str(results[1])
    assert isinstance(results[2], InvoiceNotFinalized)
    assert isinstance(results[3], InvoiceNotFound)
    assert isinstance(results[4], InvalidCredit)
    assert isinstance(results[5], InvalidCredit)
    assert rows(invoices) == 1

    async def leftovers() -> list[str]:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            return [key async for key in redis.scan_iter("tw:creditnote:lock:*")]
        finally:
            await redis.aclose()

    assert asyncio.run(leftovers()) == []  # every refusal released its lock


def test_two_credit_notes_at_once_never_credit_more_than_the_invoice(
    valkey_fresh: ValkeyServer, invoices: ChdbDatabase
) -> None:
    """Each caller reads what remains (76.65), then pauses before writing, so without the lock both
    would issue 70.00 (140.00 of a 76.65 invoice). With it the second reads after the first wrote."""

    async def scenario() -> list[Any]:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        runner = ClientRunner(*invoices)
        issuers = [CreditNoteIssuer(redis, after_read=lambda: asyncio.sleep(0.3)) for _ in range(2)]

        async def one(issuer: CreditNoteIssuer, key: str) -> Any:
            try:
                return await issuer.issue(runner, CreditRequest(INVOICE, "race", "70.00", idempotency_key=key), now=NOW)
            except CreditTooLarge as exc:
                return exc

        try:
            return list(await asyncio.gather(one(issuers[0], "a"), one(issuers[1], "b")))
        finally:
            await redis.aclose()

    results = asyncio.run(scenario())
    assert sorted(type(r).__name__ for r in results) == ["CreditTooLarge", "Issued"]
    assert rows(invoices) == 1
    client, database = invoices
    assert credited(credit_note_store.for_invoice(client, database, INVOICE)) == Decimal("70.00")


def test_a_held_lock_makes_the_caller_wait_then_give_up(valkey_fresh: ValkeyServer, invoices: ChdbDatabase) -> None:
    async def hold() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            await redis.set(lock_key("tw:", INVOICE), "someone-else", px=60_000)
        finally:
            await redis.aclose()

    asyncio.run(hold())
    [result] = asyncio.run(
        issue(valkey_fresh, invoices, CreditRequest(INVOICE, "r", "1.00"), issuer_options={"wait_s": 0.2})
    )
    assert isinstance(result, CreditNoteBusy)
    assert "being issued" in str(result)
    assert rows(invoices) == 0


def test_the_issue_date_and_the_numbers_year_are_in_the_sellers_timezone(
    valkey_fresh: ValkeyServer, invoices: ChdbDatabase
) -> None:
    async def scenario() -> Any:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            issuer = CreditNoteIssuer(redis, timezone="Pacific/Auckland")
            new_year = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)  # 1 January 2027, 01:00 in Auckland
            return await issuer.issue(ClientRunner(*invoices), CreditRequest(INVOICE, "r", "1.00"), now=new_year)
        finally:
            await redis.aclose()

    document = asyncio.run(scenario()).document
    assert (document["issued_on"], document["number"]) == ("2027-01-01", "CN-2027-000001")
    assert document["issued_at"] == "2026-12-31T12:00:00.000000Z"
