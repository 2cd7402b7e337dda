"""``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-11) as
Structured-Field Lists (RFC 9651).

    RateLimit-Policy: "burst";q=100;w=1, "monthly";q=100000;w=2592000
    RateLimit: "burst";r=42;t=1, "monthly";r=99958;t=1728000

Policy names come from the plan catalog (identifiers, so never secret-derived); no partition key
(``pk``) is sent. Quota units other than requests are named with ``qu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

POLICY_HEADER: Final = "ratelimit-policy"
STATE_HEADER: Final = "ratelimit"

# Tollway meter units → the draft's quota units. Requests are the default and are not written.
QUOTA_UNITS: Final = {"request_bytes": "content-bytes", "response_bytes": "content-bytes"}


@dataclass(frozen=True, slots=True)
class AdvertisedPolicy:
    """One policy as a client sees it."""

    name: str
    quota: int
    window_s: int
    remaining: int
    reset_s: int
    unit: str = "requests"


@lru_cache(maxsize=4096)
def sf_string(value: str) -> str:
    """An RFC 9651 sf-string: printable ASCII with ``"`` and ``\\`` escaped."""
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{value!r} cannot be a structured-field string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_field(policies: Sequence[AdvertisedPolicy]) -> str:
    """The policy field changes only with the limits themselves: built once per distinct set."""
    return _policy_field(tuple((p.name, p.quota, p.window_s, p.unit) for p in policies))


@lru_cache(maxsize=4096)
def _policy_field(policies: tuple[tuple[str, int, int, str], ...]) -> str:
    items = []
    for name, quota, window_s, unit in policies:
        item = f"{sf_string(name)};q={max(quota, 0)};w={max(window_s, 0)}"
        quota_unit = QUOTA_UNITS.get(unit)
        if quota_unit is not None:
            item += f";qu={sf_string(quota_unit)}"
        items.append(item)
    return ", ".join(items)


def state_field(policies: Sequence[AdvertisedPolicy]) -> str:
    return ", ".join(f"{sf_string(p.name)};r={max(p.remaining, 0)};t={max(p.reset_s, 0)}" for p in policies)


def ratelimit_headers(policies: Sequence[AdvertisedPolicy]) -> tuple[tuple[str, str], ...]:
    if not policies:
        return ()
    return ((POLICY_HEADER, policy_field(policies)), (STATE_HEADER, state_field(policies)))
