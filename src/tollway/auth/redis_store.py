"""Key store on Redis (or Valkey).

Layout (``{p}`` is the configured prefix, ``tw:`` by default)::

    {p}apikey:<digest>          hash   the KeyRecord fields (never the key)
    {p}apikey-id:<key_id>       string the digest, for management by key id
    {p}apikeys                  set    every key id
    {p}customer-apikeys:<cust>  set    a customer's key ids
    {p}apikey-changes           pub/sub channel: digests whose record changed

Keys of one record live in different hash slots so a Redis Cluster spreads them; writes are therefore
ordered, not transactional: indexes first, the record last, so a reader never sees a record whose
indexes are missing, and an interrupted create leaves only an index entry that listing skips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from redis.exceptions import RedisError

from tollway.auth.errors import CredentialStoreUnavailable
from tollway.auth.records import KeyRecord
from tollway.change_feed import follow_channel
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)


class RedisKeyStore:
    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "tw:",
        *,
        subscriber: RedisClient | None = None,
        resubscribe_delay: float = 0.2,
    ) -> None:
        """``subscriber`` is a client for the change channel; it must not have the short socket
        timeout of the hot-path client, or an idle subscription would time out."""
        self._redis = redis
        self._subscriber = subscriber or redis
        self._prefix = prefix
        self._channel = f"{prefix}apikey-changes"
        self._resubscribe_delay = resubscribe_delay

    def _record_key(self, digest: str) -> str:
        return f"{self._prefix}apikey:{digest}"

    def _id_key(self, key_id: str) -> str:
        return f"{self._prefix}apikey-id:{key_id}"

    def _customer_key(self, customer_id: str) -> str:
        return f"{self._prefix}customer-apikeys:{customer_id}"

    async def fetch(self, digest: str) -> KeyRecord | None:
        try:
            fields = cast(dict[str, str], await self._redis.hgetall(self._record_key(digest)))
        except (RedisError, OSError) as exc:
            raise CredentialStoreUnavailable(str(exc)) from exc
        return KeyRecord.from_fields(fields) if fields else None

    async def insert(self, digest: str, record: KeyRecord) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._id_key(record.key_id), digest)
            pipe.sadd(f"{self._prefix}apikeys", record.key_id)
            pipe.sadd(self._customer_key(record.customer_id), record.key_id)
            pipe.hset(self._record_key(digest), mapping=_mapping(record))
            await pipe.execute()
        await self._redis.publish(self._channel, digest)  # not pipelined: Redis Cluster refuses that

    async def find(self, key_id: str) -> tuple[str, KeyRecord] | None:
        digest = cast(str | None, await self._redis.get(self._id_key(key_id)))
        if digest is None:
            return None
        record = await self.fetch(digest)
        return (digest, record) if record is not None else None

    async def update(self, digest: str, record: KeyRecord) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._record_key(digest), mapping=_mapping(record))
            await pipe.execute()
        await self._redis.publish(self._channel, digest)  # not pipelined: Redis Cluster refuses that

    async def list(self, customer_id: str | None = None) -> list[KeyRecord]:
        index = self._customer_key(customer_id) if customer_id else f"{self._prefix}apikeys"
        key_ids = cast(set[str], await self._redis.smembers(index))
        records = []
        for key_id in sorted(key_ids):
            found = await self.find(key_id)
            if found is not None:
                records.append(found[1])
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    async def watch_changes(self, on_change: Callable[[str], None], on_resync: Callable[[], None]) -> None:
        await follow_channel(
            self._subscriber, self._channel, on_change, on_resync, resubscribe_delay=self._resubscribe_delay
        )


def _mapping(record: KeyRecord) -> dict[Any, Any]:
    return dict(record.to_fields())
