"""Customer records: the display name and email an operator gives a customer, and the billing details an
invoice names the buyer by. Optional — a customer is known by its keys and subscription (``tollway keys
create --customer`` needs no record) — and never read on the request path.

Layout (``{p}`` is ``TOLLWAY_REDIS_PREFIX``), following the subscription store's::

    {p}customer:{<customer>}    hash    customer_id, display_name, email, created_at,
                                        billing_legal_name, billing_address (JSON list of lines),
                                        billing_country, billing_tax_id, billing_email,
                                        billing_payment_terms_days
    {p}customers                set     every customer id with a record

An empty or absent field is unset: a record written before the billing fields existed reads as before,
with no billing details. The customer id is a Redis Cluster hash tag, so the record shares a slot with
the customer's subscription and counters. The set is written before the record (listing skips a missing
record).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from tollway.auth.records import format_instant
from tollway.redis_types import RedisClient

_BILLING = "billing_"


@dataclass(frozen=True, slots=True)
class BillingDetails:
    """What an invoice says about the buyer beyond the record's name and email (``tollway.parties`` has
    the rules each field follows): the legal name, the address lines, the country (ISO 3166-1 alpha-2),
    the tax id, the email invoices go to, and payment terms in days that replace the seller's."""

    legal_name: str | None = None
    address: tuple[str, ...] = ()
    country: str | None = None
    tax_id: str | None = None
    email: str | None = None
    payment_terms_days: int | None = None

    def is_empty(self) -> bool:
        return self == BillingDetails()

    def as_dict(self) -> dict[str, Any]:
        return {
            "legal_name": self.legal_name,
            "address": list(self.address),
            "country": self.country,
            "tax_id": self.tax_id,
            "email": self.email,
            "payment_terms_days": self.payment_terms_days,
        }

    def fields(self) -> dict[str, str]:
        """The hash fields (every one, empty when unset: ``put`` replaces what was stored)."""
        return {
            f"{_BILLING}legal_name": self.legal_name or "",
            f"{_BILLING}address": json.dumps(list(self.address), ensure_ascii=False) if self.address else "",
            f"{_BILLING}country": self.country or "",
            f"{_BILLING}tax_id": self.tax_id or "",
            f"{_BILLING}email": self.email or "",
            f"{_BILLING}payment_terms_days": "" if self.payment_terms_days is None else str(self.payment_terms_days),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> BillingDetails:
        address = fields.get(f"{_BILLING}address") or ""
        terms = fields.get(f"{_BILLING}payment_terms_days") or ""
        return cls(
            legal_name=fields.get(f"{_BILLING}legal_name") or None,
            address=tuple(str(line) for line in json.loads(address)) if address else (),
            country=fields.get(f"{_BILLING}country") or None,
            tax_id=fields.get(f"{_BILLING}tax_id") or None,
            email=fields.get(f"{_BILLING}email") or None,
            payment_terms_days=int(terms) if terms else None,
        )


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    customer_id: str
    display_name: str | None
    email: str | None
    created_at: datetime
    billing: BillingDetails = field(default_factory=BillingDetails)

    def as_dict(self) -> dict[str, Any]:
        """The record as the audit log shows it; ``billing`` only when it has details (a record without
        them looks as it always did)."""
        found: dict[str, Any] = {
            "customer_id": self.customer_id,
            "display_name": self.display_name,
            "email": self.email,
            "created_at": format_instant(self.created_at),
        }
        if not self.billing.is_empty():
            found["billing"] = self.billing.as_dict()
        return found


class RedisCustomerStore:
    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._all = f"{prefix}customers"

    def record_key(self, customer_id: str) -> str:
        return f"{self._prefix}customer:{{{customer_id}}}"

    async def get(self, customer_id: str) -> CustomerRecord | None:
        fields = cast(dict[str, str], await self._redis.hgetall(self.record_key(customer_id)))
        return self._record(fields)

    async def get_many(self, customer_ids: Sequence[str], batch: int = 1000) -> dict[str, CustomerRecord | None]:
        """The record of each of ``customer_ids`` (None without one), pipelined ``batch`` a round trip."""
        found: dict[str, CustomerRecord | None] = {}
        for start in range(0, len(customer_ids), batch):
            chunk = customer_ids[start : start + batch]
            pipe = self._redis.pipeline(transaction=False)
            for customer_id in chunk:
                pipe.hgetall(self.record_key(customer_id))
            replies = await pipe.execute()
            found.update((c, self._record(cast(dict[str, str], r))) for c, r in zip(chunk, replies, strict=True))
        return found

    @staticmethod
    def _record(fields: dict[str, str]) -> CustomerRecord | None:
        if not fields:
            return None
        return CustomerRecord(
            customer_id=fields["customer_id"],
            display_name=fields.get("display_name") or None,
            email=fields.get("email") or None,
            created_at=datetime.fromisoformat(fields["created_at"]),
            billing=BillingDetails.from_fields(fields),
        )

    async def put(self, record: CustomerRecord) -> None:
        fields: dict[str, str] = {
            "customer_id": record.customer_id,
            "display_name": record.display_name or "",
            "email": record.email or "",
            "created_at": format_instant(record.created_at),
            **record.billing.fields(),
        }
        await self._redis.sadd(self._all, record.customer_id)
        await self._redis.hset(self.record_key(record.customer_id), mapping=cast(dict[Any, Any], fields))

    async def ids(self) -> set[str]:
        return cast(set[str], await self._redis.smembers(self._all))
