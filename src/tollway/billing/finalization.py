"""The facts of the invoices a run finalizes (``documents.InvoiceFacts``): issue date, number, due date,
payment terms, seller and buyer, found in Redis and the customer records just before the invoices are
written (``invoice_store.save``).

Each invoice, in the order given (the order they are finalized in), first gets its issue date, kept in
Redis under its id the first time (``{p}docissued:{<invoice id>}``), then its number in the seller's
series and that date's year (``numbering.assign_number``, idempotent per invoice id). So a run killed
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
from typing import Any, Final

from redis.exceptions import RedisError

from tollway.billing.documents import InvoiceFacts, buyer_party, due_date, issue_date
from tollway.billing.errors import BillingError
from tollway.billing.invoices import Invoice
from tollway.billing.numbering import assign_number, format_number, raise_sequence
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


async def fixed_issue_date(redis: RedisClient, *, prefix: str, document_id: str, today: date) -> date:
    """The issue date kept for ``document_id``: ``today`` unless an earlier call kept another."""
    script: Any = redis.register_script(ISSUED_LUA)
    kept = await script(keys=[issued_key(prefix, document_id)], args=[today.isoformat()])
    return date.fromisoformat(str(kept))


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
    ``NumberingUnavailable`` when Redis fails."""
    customers = RedisCustomerStore(redis, prefix)
    today = issue_date(now, seller.timezone)
    found: dict[str, InvoiceFacts] = {}
    records: dict[str, CustomerRecord | None] = {}
    raised: set[int] = set()
    try:
        for invoice in invoices:
            customer = invoice.customer_id
            if customer not in records:
                records[customer] = await customers.get(customer)
            buyer, terms = _buyer(customer, records[customer])
            days = seller.payment_terms_days if terms is None else terms
            issued = await fixed_issue_date(redis, prefix=prefix, document_id=invoice.invoice_id, today=today)
            if highest is not None and issued.year not in raised:
                stored = highest(seller.series, issued.year)
                await raise_sequence(redis, prefix=prefix, series=seller.series, year=issued.year, at_least=stored)
                raised.add(issued.year)
            number = await assign_number(
                redis, prefix=prefix, series=seller.series, year=issued.year, document_id=invoice.invoice_id
            )
            found[invoice.invoice_id] = InvoiceFacts(
                number=format_number(seller.series, issued.year, number),
                issued_on=issued,
                due_on=due_date(issued, days),
                payment_terms_days=days,
                seller=seller.party,
                buyer=buyer,
            )
    except RedisError as exc:
        raise NumberingUnavailable(f"cannot number the invoices: Redis: {exc}; nothing was written") from exc
    return found
