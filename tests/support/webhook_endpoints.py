"""A plaintext :class:`EndpointDirectory` for the dispatcher's own tests: endpoints as Redis hashes whose
secrets are stored as they are (never do this in production: ``notifications.endpoint_store`` seals them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tollway.notifications import keys
from tollway.notifications.dispatcher import Target
from tollway.redis_types import RedisClient

_DISABLE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'enabled' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'disabled', 'disabled_at', ARGV[1], 'disabled_reason', ARGV[2])
return 1
"""


class RedisEndpoints:
    """A minimal :class:`EndpointDirectory` over the ``keys.endpoint_key`` hashes: ``url``, ``secrets`` (JSON
    list of ``whsec_`` strings), ``types`` (JSON list; empty = all), ``state`` (``enabled`` | ``disabled``)."""

    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._disable: Any = redis.register_script(_DISABLE)

    async def put(self, target: Target) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.endpoint_key(self._prefix, target.id),
                mapping={
                    "url": target.url,
                    "secrets": json.dumps(list(target.secrets)),
                    "types": json.dumps(sorted(target.types)),
                    "state": "enabled" if target.enabled else "disabled",
                },
            )
            pipe.sadd(keys.endpoints_key(self._prefix), target.id)
            await pipe.execute()

    async def targets(self) -> Sequence[Target]:
        ids = sorted(str(i) for i in await self._redis.smembers(keys.endpoints_key(self._prefix)))
        out = []
        for endpoint_id in ids:
            row = await self._redis.hgetall(keys.endpoint_key(self._prefix, endpoint_id))
            if not row:
                continue
            out.append(
                Target(
                    str(endpoint_id),
                    str(row.get("url", "")),
                    tuple(json.loads(row.get("secrets", "[]"))),
                    frozenset(json.loads(row.get("types", "[]"))),
                    row.get("state", "enabled") == "enabled",
                )
            )
        return out

    async def disable(self, endpoint_id: str, reason: str, at_ms: int) -> bool:
        done = await self._disable(keys=[keys.endpoint_key(self._prefix, endpoint_id)], args=[str(at_ms), reason])
        return bool(done)
