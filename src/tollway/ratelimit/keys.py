"""Counter key names and the validation every backend applies to a check before touching anything.

All keys of one check share the hash tag ``{<partition>}``, so they live in one Redis Cluster slot and
one Lua script may touch them all. The partition is the customer id: never anything derived from a
secret (it is visible in key names and may be reported as a RateLimit partition key).
"""

from __future__ import annotations

from collections.abc import Sequence

from tollway.ratelimit.policies import Policy, WindowPolicy


def window_key(prefix: str, partition: str, name: str) -> str:
    return f"{prefix}rl:{{{partition}}}:{name}"


def quota_key(prefix: str, partition: str, name: str, period_start_ms: int) -> str:
    return f"{prefix}q:{{{partition}}}:{name}:{period_start_ms}"


def policy_key(prefix: str, partition: str, policy: Policy) -> str:
    if isinstance(policy, WindowPolicy):
        return window_key(prefix, partition, policy.name)
    return quota_key(prefix, partition, policy.name, policy.period_start_ms)


def checked_costs(partition: str, policies: Sequence[Policy], cost: int | Sequence[int]) -> tuple[int, ...]:
    """Validate a check and return one cost per policy (an int applies to every policy).

    Costs are per policy because policies may count different meters (requests, tokens, bytes); a
    policy with cost 0 is reported but neither consumed nor able to refuse.
    """
    if not partition or "{" in partition or "}" in partition:
        raise ValueError(f"partition {partition!r} must be non-empty and without braces")
    costs = (cost,) * len(policies) if isinstance(cost, int) else tuple(cost)
    if len(costs) != len(policies):
        raise ValueError(f"{len(costs)} costs for {len(policies)} policies")
    if any(c < 0 for c in costs):
        raise ValueError("costs must be >= 0")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique within a check: {names}")
    return costs


def charge_key(prefix: str, partition: str, charge: str, period_start_ms: int) -> str:
    """The period's quantity of a real-time charge (``ratelimit.money``)."""
    return f"{prefix}cq:{{{partition}}}:{charge}:{period_start_ms}"


def grants_key(prefix: str, partition: str) -> str:
    """The customer's grants: grant id -> record (``credits.grants``)."""
    return f"{prefix}cr:{{{partition}}}"


def spend_key(prefix: str, partition: str, period_start_ms: int) -> str:
    """Micro-units of real-time charges spent in the period."""
    return f"{prefix}sp:{{{partition}}}:{period_start_ms}"


def funding_key(prefix: str, partition: str) -> str:
    """The customer's funding epoch: bumped by every grant or top-up (``credits.store``), part of the ids
    of ``balance.low`` and ``balance.exhausted`` (``ratelimit.alerts``), so each funding may fire them once."""
    return f"{prefix}cre:{{{partition}}}"


def leases_key(prefix: str, partition: str) -> str:
    """The records of the customer's money-carrying capacity leases not yet closed (``ratelimit.money``)."""
    return f"{prefix}ls:{{{partition}}}"
