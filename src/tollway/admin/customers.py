"""Customer records: the display name and email an operator gives a customer. Optional — a customer is
known by its keys and subscription (``tollway keys create --customer`` needs no record) — and never
read on the request path.

Layout (``{p}`` is ``TOLLWAY_REDIS_PREFIX``), following the subscription store's::

    {p}customer:{<customer>}    hash    customer_id, display_name, email, created_at
    {p}customers                set     every customer id with a record

The customer id is a Redis Cluster hash tag, so the record shares a slot with the customer's
subscription and counters. The set is written before the record (listing skips a missing record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from tollway.auth.records import format_instant
from tollway.redis_types import RedisClient


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    customer_id: str
    display_name: str | None
    email: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, str | None]:
        return {
            "customer_id": self.customer_id,
            "display_name": self.display_name,
            "email": self.email,
            "created_at": format_instant(self.created_at),
        }


class RedisCustomerStore:
    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._all = f"{prefix}customers"

    def record_key(self, customer_id: str) -> str:
        return f"{self._prefix}customer:{{{customer_id}}}"

    async def get(self, customer_id: str) -> CustomerRecord | None:
        fields = cast(dict[str, str], await self._redis.hgetall(self.record_key(customer_id)))
        if not fields:
            return None
        return CustomerRecord(
            customer_id=fields["customer_id"],
            display_name=fields.get("display_name") or None,
            email=fields.get("email") or None,
            created_at=datetime.fromisoformat(fields["created_at"]),
        )

    async def put(self, record: CustomerRecord) -> None:
        fields = {k: v or "" for k, v in record.as_dict().items()}
        await self._redis.sadd(self._all, record.customer_id)
        await self._redis.hset(self.record_key(record.customer_id), mapping=cast(dict[Any, Any], fields))

    async def ids(self) -> set[str]:
        return cast(set[str], await self._redis.smembers(self._all))
