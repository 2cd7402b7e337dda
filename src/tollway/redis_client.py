"""Redis clients built from settings: a hot-path client with short, bounded timeouts and no retries
(a slow Redis must turn into a quick 503, never a hang), a long-lived one for pub/sub, and a patient
one for the CLI. ``TOLLWAY_REDIS_CLUSTER=true`` makes each a Redis Cluster client (the URL names any
node); one customer's keys share a hash tag, so every hot-path call touches one slot."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tollway.redis_types import RedisClient
from tollway.settings import Settings


def _client(settings: Settings, **options: Any) -> RedisClient:
    if settings.redis_cluster:
        options.pop("max_connections", None)
        return RedisCluster.from_url(settings.redis_url, decode_responses=True, **options)
    return Redis.from_url(settings.redis_url, decode_responses=True, **options)


def hot_path_client(settings: Settings) -> RedisClient:
    timeout = settings.redis_timeout_ms / 1000
    return _client(
        settings,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=settings.redis_max_connections,
    )


def subscriber_client(settings: Settings) -> RedisClient:
    return _client(settings, socket_connect_timeout=1.0, socket_keepalive=True, health_check_interval=5)


def admin_client(settings: Settings) -> RedisClient:
    """For the CLI: patient timeouts."""
    return _client(settings, socket_timeout=5, socket_connect_timeout=5)
