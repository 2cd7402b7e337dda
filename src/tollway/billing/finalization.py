"""The facts of the invoices a run finalizes (``documents.InvoiceFacts``): issue date, number, due date,
payment terms, seller and buyer, found in Redis and the customer records just before the invoices are
written (``invoice_store.save``).

Each invoice first gets its issue date, kept in Redis under its id the first time
(``{p}docissued:{<invoice id>}``), then, in the order given (the order they are finalized in), its number
in the seller's series and that date's year (``numbering.assign_numbers``, idempotent per invoice id);
then the buyers' records are read. Each step is pipelined (a round trip per thousand invoices). So a run killed
after numbering and before ClickHouse was written, or one that lost a race to finalize the same
invoice, leaves no gap: finalizing that invoice again (a re-run) finds the same date and number,
whatever day it runs on.

Before the first number of a year, the sequence is raised to the highest number of that series and year
the warehouse already holds (``highest``: ``invoice_store.highest_number``), so a Redis restored from an
older backup, or emptied, never hands out a stored invoice's number again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Final

from redis.exceptions import RedisError

from tollway.billing.documents import InvoiceFacts, buyer_party, due_date, issue_date
from tollway.billing.errors import BillingError
from tollway.billing.invoices import Invoice
from tollway.billing.numbering import BATCH, assign_numbers, format_number, raise_sequence
from tollway.billing.seller import Seller
from tollway.customers.store import CustomerRecord, RedisCustomerStore
from tollway.parties import Party
from tollway.redis_types import RedisClient

ISSUED_LUA: Final = """
local found = redis.call('GET', KEYS[1])
if found then
  return found
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class NumberingUnavailable(BillingError):
    """Redis could not be reached to number the invoices: nothing was written (numbers already given
    stay reserved for their invoices: the next run uses them)."""


def issued_key(prefix: str, document_id: str) -> str:
    return f"{prefix}docissued:{{{document_id}}}"


async def fixed_issue_dates(redis: RedisClient, *, prefix: str, document_ids: Sequence[str], today: date) -> list[date]:
    """The issue date kept for each of ``document_ids``: ``today`` unless an earlier call kept another
    (pipelined, ``numbering.BATCH`` a round trip)."""
    found: list[date] = []
    for start in range(0, len(document_ids), BATCH):
        pipe = redis.pipeline(transaction=False)
        for document_id in document_ids[start : start + BATCH]:
            pipe.eval(ISSUED_LUA, 1, issued_key(prefix, document_id), today.isoformat())
        found.extend(date.fromisoformat(str(kept)) for kept in await pipe.execute())
    return found


def _buyer(customer_id: str, record: CustomerRecord | None) -> tuple[Party, int | None]:
    if record is None:
        return buyer_party(customer_id), None
    billing = record.billing
    party = buyer_party(
        customer_id,
        display_name=record.display_name,
        email=record.email,
        legal_name=billing.legal_name,
        address=billing.address,
        country=billing.country,
        tax_id=billing.tax_id,
        billing_email=billing.email,
    )
    return party, billing.payment_terms_days


async def invoice_facts(
    redis: RedisClient,
    prefix: str,
    seller: Seller,
    invoices: Sequence[Invoice],
    now: datetime,
    highest: Callable[[str, int], int] | None = None,
) -> dict[str, InvoiceFacts]:
    """Invoice id → its facts, for ``invoices`` about to be finalized, numbered in this order.
    ``highest(series, year)``: the highest number already stored (the sequence is raised to it first).
    Pipelined: a few round trips per thousand invoices. ``NumberingUnavailable`` when Redis fails."""
    ids = [invoice.invoice_id for invoice in invoices]
    today = issue_date(now, seller.timezone)
    try:
        issued = dict(
            zip(ids, await fixed_issue_dates(redis, prefix=prefix, document_ids=ids, today=today), strict=True)
        )
        numbers: dict[str, int] = {}
        for year in sorted({day.year for day in issued.values()}):
            if highest is not None:
                stored = highest(seller.series, year)
                await raise_sequence(redis, prefix=prefix, series=seller.series, year=year, at_least=stored)
            of_year = [i for i in ids if issued[i].year == year]  # in the order given
            got = await assign_numbers(redis, prefix=prefix, series=seller.series, year=year, document_ids=of_year)
            numbers.update(zip(of_year, got, strict=True))
        records = await RedisCustomerStore(redis, prefix).get_many(sorted({i.customer_id for i in invoices}))
    except RedisError as exc:
        raise NumberingUnavailable(f"cannot number the invoices: Redis: {exc}; nothing was written") from exc
    found: dict[str, InvoiceFacts] = {}
    for invoice in invoices:
        buyer, terms = _buyer(invoice.customer_id, records.get(invoice.customer_id))
        days = seller.payment_terms_days if terms is None else terms
        day = issued[invoice.invoice_id]
        found[invoice.invoice_id] = InvoiceFacts(
            number=format_number(seller.series, day.year, numbers[invoice.invoice_id]),
            issued_on=day,
            due_on=due_date(day, days),
            payment_terms_days=days,
            seller=seller.party,
            buyer=buyer,
        )
    return found
