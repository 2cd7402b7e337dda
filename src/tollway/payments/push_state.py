"""What has been pushed to Stripe, in Redis (docs/payments.md, "Push state").

Keys (``{p}`` is ``TOLLWAY_REDIS_PREFIX``; ``{cust}`` the customer's hash tag):

    {p}stripe:customer:{<cust>}                 string  the Stripe customer id (cus_…)
    {p}stripe:invoice:{<cust>}:<invoice_id>     hash    invoice (in_…), item:<n> (ii_… of line n),
                                                        status (finalized, once Stripe finalized it),
                                                        stripe_status, stripe_number, pushed_at

Each Stripe object's id is written as soon as Stripe returned it, one ``HSET``/``SET`` each: a re-run
skips what is recorded and resumes what is not. The state is a cache of what Stripe holds, never the
only record: a lost or partial state is rebuilt from Stripe itself (customers by metadata, the invoice
by listing the customer's invoices, items by listing the invoice's items) before anything is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tollway.redis_types import RedisClient

FINALIZED: Final = "finalized"


class PushState:
    """The push state of invoices and customers in Redis."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def customer_key(self, customer_id: str) -> str:
        return f"{self._prefix}stripe:customer:{{{customer_id}}}"

    def invoice_key(self, customer_id: str, invoice_id: str) -> str:
        return f"{self._prefix}stripe:invoice:{{{customer_id}}}:{invoice_id}"

    async def customer(self, customer_id: str) -> str | None:
        found = await self._redis.get(self.customer_key(customer_id))
        return None if found is None else str(found)

    async def set_customer(self, customer_id: str, stripe_id: str) -> None:
        await self._redis.set(self.customer_key(customer_id), stripe_id)

    async def invoice(self, customer_id: str, invoice_id: str) -> dict[str, str]:
        found = await self._redis.hgetall(self.invoice_key(customer_id, invoice_id))
        return {str(k): str(v) for k, v in found.items()}

    async def record(self, customer_id: str, invoice_id: str, fields: Mapping[str, str]) -> None:
        mapping: dict[Any, Any] = dict(fields)
        await self._redis.hset(self.invoice_key(customer_id, invoice_id), mapping=mapping)
