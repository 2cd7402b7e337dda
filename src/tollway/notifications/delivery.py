"""One delivery attempt per the Standard Webhooks specification, the retry schedule, and the address check.

Signing: ``webhook-signature`` is ``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`` for every
live secret of the endpoint, space separated (during a rotation both the old and the new secret sign, so a
receiver verifying with either accepts it); the secret is ``whsec_`` + base64 of its bytes. The same
computation as ``standardwebhooks.Webhook.sign`` (tests verify with that library), done here with the
secret's bytes decoded once per endpoint.

An attempt: ``POST`` the event's payload with ``webhook-id`` (the event id: the same on every attempt and
replay, so receivers deduplicate on it), ``webhook-timestamp`` (seconds, this attempt), the signatures and
``content-type: application/json`` (``http_post.HttpPoster``); a timeout per attempt; redirects are not
followed (a 3xx is a failure).
Any 2xx is delivered; anything else (status, timeout, connection error, refused address) is a failure
retried on :data:`SCHEDULE_S`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from tollway.notifications.http_post import HttpError, HttpPoster

SCHEDULE_S: Final[tuple[float, ...]] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000, 36000)
"""Delay before each attempt (seconds): immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 10 h — nine
attempts over 37 h 35 min (at least 30 h even with every delay 20 % short)."""
JITTER: Final = 0.2
ERROR_CHARS: Final = 300


def next_delay_s(
    attempt: int, schedule: Sequence[float] = SCHEDULE_S, rng: random.Random | None = None
) -> float | None:
    """The delay before attempt ``attempt + 1`` after attempt ``attempt`` (1 = the first) failed, with ±20 %
    jitter; None when the schedule is spent (give up)."""
    if attempt >= len(schedule):
        return None
    base = schedule[attempt]
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


def secret_bytes(secret: str) -> bytes:
    """The key of a ``whsec_`` secret (base64 after the prefix; as the standardwebhooks library reads it)."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


@lru_cache(maxsize=4096)
def _keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(secret_bytes(s) for s in secrets)


def sign(secrets: Sequence[str], event_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<sig>`` per secret, space separated."""
    message = f"{event_id}.{timestamp_s}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
        for key in _keys(tuple(secrets))
    )


class RefusedAddress(Exception):
    """The endpoint's host resolves to an address the dispatcher may not call (SSRF)."""


AddressCheck = Callable[[str], Awaitable[None]]
"""Raises ``RefusedAddress`` (or OSError) for a URL whose host must not be called."""


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def address_check(allow_private: bool, ttl_s: float = 30.0) -> AddressCheck:
    """The default check until ``notifications.endpoints.resolve_and_check`` (h2) replaces it: every address
    the host resolves to must be global (not loopback, link-local, private, reserved, multicast) unless
    ``allow_private``; resolutions cached ``ttl_s``."""
    cache: dict[str, tuple[float, RefusedAddress | None]] = {}

    async def check(url: str) -> None:
        if allow_private:
            return
        host = urlsplit(url).hostname or ""
        now = time.monotonic()
        hit = cache.get(host)
        if hit is None or hit[0] < now:
            refused: RefusedAddress | None = None
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
                bad = sorted({str(info[4][0]) for info in infos if _private(str(info[4][0]))})
                if bad:
                    refused = RefusedAddress(f"{host} resolves to a non-public address ({', '.join(bad)})")
            except OSError as exc:
                refused = RefusedAddress(f"{host} does not resolve: {exc}")
            if len(cache) > 4096:
                cache.clear()
            hit = cache[host] = (now + ttl_s, refused)
        if hit[1] is not None:
            raise hit[1]

    return check


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt got: ``status`` (0: no response), ``ok`` (2xx), ``error`` (short, no secret)."""

    status: int
    ok: bool
    duration_ms: int
    error: str = ""


async def attempt(
    client: HttpPoster,
    url: str,
    secrets: Sequence[str],
    event_id: str,
    body: bytes,
    timeout_s: float,
    check: AddressCheck,
    now_s: Callable[[], float] = time.time,
) -> Attempt:
    """POST one signed delivery; never raises for what the receiver or the network does."""
    started = time.monotonic()
    try:
        await check(url)
        stamp = int(now_s())
        headers = {
            "webhook-id": event_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secrets, event_id, stamp, body),
            "content-type": "application/json",
            "user-agent": "tollway-webhooks",
        }
        response = await client.post(url, body, headers, timeout_s)
        status = response.status
        elapsed = int((time.monotonic() - started) * 1000)
        if 200 <= status < 300:
            return Attempt(status, True, elapsed)
        error = f"redirect to {response.headers.get('location', '?')} not followed" if 300 <= status < 400 else ""
        return Attempt(status, False, elapsed, error[:ERROR_CHARS])
    except TimeoutError:
        return Attempt(0, False, int((time.monotonic() - started) * 1000), f"timed out after {timeout_s:g} s")
    except (HttpError, RefusedAddress, OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Attempt(0, False, int((time.monotonic() - started) * 1000), message[:ERROR_CHARS])
