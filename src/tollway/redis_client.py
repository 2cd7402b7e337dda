"""Redis clients built from settings: a hot-path client with short, bounded timeouts and no retries
(a slow Redis must turn into a quick 503, never a hang), and a long-lived one for pub/sub."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tollway.settings import Settings


def hot_path_client(settings: Settings) -> Redis:
    timeout = settings.redis_timeout_ms / 1000
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=settings.redis_max_connections,
    )


def subscriber_client(settings: Settings) -> Redis:
    return Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_keepalive=True,
        health_check_interval=5,
    )


def admin_client(settings: Settings) -> Redis:
    """For the CLI: patient timeouts, a few retries."""
    return Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
