"""Issuing a credit note: one invoice at a time, numbered, stored once (Redis and ClickHouse).

ClickHouse has no transactions, so "what remains to credit" read from ``credit_notes`` and the insert
of the new credit note would race between two callers crediting the same invoice at once (both read
6.65 left, both credit 6.65). The issue is serialised per invoice by a Redis lock::

    {p}creditnote:lock:{<invoice id>}   string  the holder's random token, PX LOCK_TTL_MS

taken with ``SET NX PX`` and released by a script that deletes it only if it still holds the caller's
token. Under the lock: read the invoice and its credit notes, check the request
(``credit_notes.draft_credit_note``), assign the number (``numbering.assign_number``, series ``CN``, the
credit note id as document id; the sequence first raised to the highest ``CN`` number of the year stored in
``credit_notes``, so a Redis emptied or restored from an older backup never gives a number again), insert
the row. A caller that finds the lock taken waits for it
(polling) up to ``wait_s``, then gives up with ``CreditNoteBusy``; nothing was written.

A process killed under the lock leaves it until ``LOCK_TTL_MS`` passes (30 s: far above the two reads
and one insert the section does). One killed after the number was assigned and before the insert
leaves that number unused until the same request is sent again (same idempotency key: the same id gets
the same number and the insert completes); without a key, the CLI draws a random one, so a crashed
command should be re-run with ``--idempotency-key``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar
from zoneinfo import ZoneInfo

from tollway.billing import credit_note_store
from tollway.billing.credit_notes import (
    SERIES,
    CreditNoteBusy,
    CreditRequest,
    IdempotencyConflict,
    InvoiceNotFound,
    check_idempotency_key,
    credit_note_id,
    draft_credit_note,
    is_retry_of,
)
from tollway.billing.invoice_store import highest_number, load_current
from tollway.billing.numbering import assign_number, format_number, raise_sequence
from tollway.redis_types import RedisClient

T = TypeVar("T")

LOCK_TTL_MS: Final = 30_000
WAIT_S: Final = 10.0
POLL_S: Final = 0.02

RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class WarehouseRunner(Protocol):
    """Runs ``query(client, database)`` against ClickHouse (in a worker thread) and returns its result."""

    async def run(self, query: Callable[[Any, str], T]) -> T: ...


class ClientRunner:
    """A ``WarehouseRunner`` over an open clickhouse-connect client (the CLI's)."""

    def __init__(self, client: Any, database: str) -> None:
        self._client = client
        self._database = database

    async def run(self, query: Callable[[Any, str], T]) -> T:
        return await asyncio.to_thread(query, self._client, self._database)


@dataclass(frozen=True, slots=True)
class Issued:
    """The credit note document, and whether it was issued now (False: a retry found it issued)."""

    document: dict[str, Any]
    created: bool


def lock_key(prefix: str, invoice_id: str) -> str:
    return f"{prefix}creditnote:lock:{{{invoice_id}}}"


class CreditNoteIssuer:
    """Issues credit notes with ``redis`` (lock, numbers) and a warehouse (invoices, credit notes)."""

    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "tw:",
        *,
        lock_ttl_ms: int = LOCK_TTL_MS,
        wait_s: float = WAIT_S,
        timezone: str = "UTC",
        after_read: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``timezone``: the IANA zone of the credit notes' ``issued_on`` (and so of their number's year):
        the seller's. ``after_read``: awaited between reading the invoice's credit notes and writing
        (tests widen the race window with it)."""
        self._redis = redis
        self._prefix = prefix
        self._lock_ttl_ms = lock_ttl_ms
        self._wait_s = wait_s
        self._after_read = after_read
        self._zone = ZoneInfo(timezone)
        self._release: Any = redis.register_script(RELEASE_LUA)

    async def issue(
        self,
        warehouse: WarehouseRunner,
        request: CreditRequest,
        *,
        now: datetime,
        customer_id: str | None = None,
    ) -> Issued:
        """Issue the credit note ``request`` asks for (or find it issued: same idempotency key).

        ``customer_id``: the invoice must be that customer's (else ``InvoiceNotFound``). Raises the
        ``credit_notes`` errors (``InvoiceNotFound``, ``InvoiceNotFinalized``, ``InvalidCredit``,
        ``CreditTooLarge``, ``IdempotencyConflict``, ``CreditNoteBusy``); nothing is written then."""
        key = (
            secrets.token_hex(16) if request.idempotency_key is None else check_idempotency_key(request.idempotency_key)
        )
        note_id = credit_note_id(request.invoice_id, key)
        now = now.astimezone(UTC)
        token = await self._acquire(request.invoice_id)
        try:
            stored = await warehouse.run(lambda c, db: load_current(c, db, [request.invoice_id]))
            invoice = stored.get(request.invoice_id)
            if invoice is None or (customer_id is not None and invoice.document.get("customer_id") != customer_id):
                raise InvoiceNotFound(request.invoice_id, customer_id)
            earlier = await warehouse.run(lambda c, db: credit_note_store.for_invoice(c, db, request.invoice_id))
            for document in earlier:
                if document.get("credit_note_id") == note_id:
                    if is_retry_of(document, request):
                        return Issued(document, created=False)
                    raise IdempotencyConflict(
                        f"the idempotency key was used for credit note {document.get('number')} "
                        f"({note_id}) of invoice {request.invoice_id}, with a different request"
                    )
            note = draft_credit_note(
                invoice.document,
                earlier,
                request,
                credit_note_id=note_id,
                issued_at=now,
                issued_on=now.astimezone(self._zone).date(),
            )
            if self._after_read is not None:
                await self._after_read()
            year = note.issued_on.year
            # A Redis emptied or restored from an older backup continues after the highest number stored.
            stored_highest = await warehouse.run(lambda c, db: highest_number(c, db, SERIES, year, "credit_notes"))
            await raise_sequence(self._redis, prefix=self._prefix, series=SERIES, year=year, at_least=stored_highest)
            number = await assign_number(
                self._redis, prefix=self._prefix, series=SERIES, year=year, document_id=note_id
            )
            document = replace(note, number=format_number(SERIES, year, number)).as_dict()
            await warehouse.run(lambda c, db: credit_note_store.insert(c, db, document))
            return Issued(document, created=True)
        finally:
            await self._release(keys=[lock_key(self._prefix, request.invoice_id)], args=[token])

    async def _acquire(self, invoice_id: str) -> str:
        token = secrets.token_hex(16)
        key = lock_key(self._prefix, invoice_id)
        deadline = time.monotonic() + self._wait_s
        while not await self._redis.set(key, token, nx=True, px=self._lock_ttl_ms):
            if time.monotonic() >= deadline:
                raise CreditNoteBusy(
                    f"another credit note of invoice {invoice_id} is being issued; try again in a moment"
                )
            await asyncio.sleep(POLL_S)
        return token
