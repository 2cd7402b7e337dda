"""``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-11) as
Structured-Field Lists (RFC 9651).

    RateLimit-Policy: "burst";q=100;w=1, "monthly";q=100000;w=2592000
    RateLimit: "burst";r=42;t=1, "monthly";r=99958;t=1728000

Policy names come from the plan catalog (identifiers, so never secret-derived); no partition key
(``pk``) is sent. Quota units other than requests are named with ``qu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final, NamedTuple

from tollway.ratelimit import PolicyState
from tollway.structured_fields import sf_string

POLICY_HEADER: Final = "ratelimit-policy"
STATE_HEADER: Final = "ratelimit"

# Tollway meter units → the draft's quota units. Requests are the default and are not written.
QUOTA_UNITS: Final = {"request_bytes": "content-bytes", "response_bytes": "content-bytes"}


class AdvertisedPolicy(NamedTuple):
    """One policy as a client sees it."""

    name: str
    quota: int
    window_s: int
    remaining: int
    reset_s: int
    unit: str = "requests"


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


class FieldShape:
    """What both fields keep from one request to the next for one check (the same policies, limits and
    windows): the whole ``RateLimit-Policy`` value and the start of each ``RateLimit`` item, with the
    index of its policy in a verdict's states. :meth:`fields` then formats only the two numbers that
    change; it gives exactly what ``ratelimit_headers`` gives for the same states."""

    __slots__ = ("_items", "policy_field")

    def __init__(self, advertised: Sequence[tuple[int, AdvertisedPolicy]]) -> None:
        self.policy_field = policy_field([policy for _, policy in advertised])
        self._items = tuple((index, f"{sf_string(policy.name)};r=") for index, policy in advertised)

    def fields(self, states: Sequence[PolicyState]) -> tuple[tuple[str, str], ...]:
        if not self._items:
            return ()
        items = []
        for index, start in self._items:
            state = states[index]
            remaining, reset_s = state.remaining, state.reset_s
            items.append(f"{start}{remaining if remaining > 0 else 0};t={reset_s if reset_s > 0 else 0}")
        return ((POLICY_HEADER, self.policy_field), (STATE_HEADER, ", ".join(items)))
