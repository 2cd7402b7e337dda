"""The facts a finalized invoice states besides its lines (docs/billing.md, "Numbers, issue and due
dates"): its number, issue date, due date, payment terms, seller and buyer. Pure: ``finalization`` finds
the inputs (the number in Redis, the buyer's record) and ``invoice_store.save`` adds ``as_dict`` to the
stored document of each invoice finalized now; drafts have none of these keys.

* ``issued_on``: the day the invoice was first numbered, in the seller's time zone (``TOLLWAY_SELLER_
  TIMEZONE``); the number's year is this date's year.
* ``due_on``: ``issued_on`` plus ``payment_terms_days`` (the customer record's
  ``billing.payment_terms_days``, else the seller's ``TOLLWAY_SELLER_PAYMENT_TERMS_DAYS``).
* ``buyer``: the record's ``billing.legal_name`` (else its display name, else the customer id), address,
  country, tax id, and ``billing.email`` (else the record's email).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tollway.parties import Party


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    number: str
    issued_on: date
    due_on: date
    payment_terms_days: int
    seller: Party
    buyer: Party

    def as_dict(self) -> dict[str, Any]:
        """The keys a finalized invoice's document gains."""
        return {
            "number": self.number,
            "issued_on": self.issued_on.isoformat(),
            "due_on": self.due_on.isoformat(),
            "payment_terms_days": self.payment_terms_days,
            "seller": self.seller.as_dict(),
            "buyer": self.buyer.as_dict(),
        }


def issue_date(now: datetime, timezone: str) -> date:
    """The calendar day ``now`` is in ``timezone``."""
    return now.astimezone(ZoneInfo(timezone)).date()


def due_date(issued_on: date, payment_terms_days: int) -> date:
    return issued_on + timedelta(days=payment_terms_days)


def buyer_party(
    customer_id: str,
    *,
    display_name: str | None = None,
    email: str | None = None,
    legal_name: str | None = None,
    address: tuple[str, ...] = (),
    country: str | None = None,
    tax_id: str | None = None,
    billing_email: str | None = None,
) -> Party:
    """The buyer as the invoice names it, from what the customer record has (nothing: its id)."""
    return Party(legal_name or display_name or customer_id, address, country, tax_id, billing_email or email)
