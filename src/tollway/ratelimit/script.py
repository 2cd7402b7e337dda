"""The Lua script (package data) and its SHA-1, computed once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files

from tollway.ratelimit.keys import policy_key
from tollway.ratelimit.policies import Policy, WindowPolicy

SCRIPT = files("tollway.ratelimit").joinpath("consume.lua").read_text(encoding="utf-8")
SHA = hashlib.sha1(SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
REFUND_SCRIPT = files("tollway.ratelimit").joinpath("refund.lua").read_text(encoding="utf-8")

KIND_WINDOW = 0
KIND_QUOTA = 1


def script_keys_and_args(
    prefix: str, partition: str, policies: Sequence[Policy], costs: Sequence[int], now_ms: int
) -> tuple[list[str], list[int | str]]:
    """KEYS and ARGV of one check, in the layout ``consume.lua`` reads: ``now_ms``, then per policy one
    argument "kind limit cost enforced a b" (window: a = bucket_ms, b = buckets; quota: a = period end)."""
    keys: list[str] = []
    args: list[int | str] = [now_ms]
    for policy, cost in zip(policies, costs, strict=True):
        keys.append(policy_key(prefix, partition, policy))
        if isinstance(policy, WindowPolicy):
            args.append(f"{KIND_WINDOW} {policy.limit} {cost} {policy.enforced:d} {policy.bucket_ms} {policy.buckets}")
        else:
            args.append(f"{KIND_QUOTA} {policy.limit} {cost} {policy.enforced:d} {policy.period_end_ms} 0")
    return keys, args


def refund_keys_and_args(
    prefix: str, partition: str, policies: Sequence[Policy], units: Sequence[int], taken_ms: int
) -> tuple[list[str], list[int | str]]:
    """KEYS and ARGV of a refund, in the layout ``refund.lua`` reads: per policy "kind units bucket" (the
    bucket of ``taken_ms``, when the units were leased; 0 for a quota)."""
    keys: list[str] = []
    args: list[int | str] = []
    for policy, count in zip(policies, units, strict=True):
        keys.append(policy_key(prefix, partition, policy))
        if isinstance(policy, WindowPolicy):
            args.append(f"{KIND_WINDOW} {count} {taken_ms // policy.bucket_ms}")
        else:
            args.append(f"{KIND_QUOTA} {count} 0")
    return keys, args
