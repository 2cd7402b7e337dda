"""Change announcements over Redis pub/sub: how every Tollway process hears at once that a key or a
subscription changed, and evicts it from its cache.

Delivery is best effort: messages published while a process is not subscribed are lost, so each
(re)subscription calls ``on_resync`` (the caller empties its cache). While the channel is down the
caches are kept: their entries expire within their TTL (≤ 1 s) anyway, and emptying them would turn a
Redis blip into refusals for every cached caller (and defeat fail-open plans).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)


async def follow_channel(
    subscriber: RedisClient,
    channel: str,
    on_change: Callable[[str], None],
    on_resync: Callable[[], None],
    *,
    resubscribe_delay: float = 0.2,
) -> None:
    """Run until cancelled: ``on_change(payload)`` per message, ``on_resync()`` at each (re)subscription."""
    lost = False
    while True:
        try:
            async with subscriber.pubsub(ignore_subscribe_messages=False) as pubsub:
                await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        on_resync()
                        if lost:
                            log.info("change channel %s restored", channel)
                        lost = False
                    elif message["type"] == "message":
                        on_change(message["data"])
        except (RedisError, OSError) as exc:
            if not lost:
                log.warning("change channel %s lost (%s); caches fall back to their TTL", channel, exc)
            lost = True
            await asyncio.sleep(resubscribe_delay)
