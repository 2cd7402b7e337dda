"""A plan's limits and quotas as they apply to one feature: the static part of every check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tollway.plans.catalog import CompiledCatalog
from tollway.ratelimit import Policy, QuotaPolicy, WindowPolicy


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A plan's limit or quota as it applies to one feature, before the customer's overrides."""

    name: str
    limit: int
    window_ms: int  # 0 for a quota (its window is the billing period)
    hard: bool
    shadow: bool
    counts_cost: bool  # a `cost` meter: the route's weight; otherwise one per request
    unit: str

    def policy(self, limit: int, period_ms: tuple[int, int]) -> Policy:
        if self.window_ms:
            return WindowPolicy.sliding(self.name, limit, self.window_ms, hard=self.hard, shadow=self.shadow)
        return QuotaPolicy(self.name, limit, period_ms[0], period_ms[1], hard=self.hard, shadow=self.shadow)


def rules_for(catalog: CompiledCatalog, plan_id: str, feature: str) -> Sequence[PolicyRule]:
    rules = []
    for limit in catalog.limits_for(plan_id, feature):
        unit = catalog.meter(limit.meter).unit if limit.meter else "requests"
        rules.append(
            PolicyRule(
                limit.name,
                limit.limit,
                limit.window_seconds * 1000,
                limit.enforcement == "hard",
                limit.shadow,
                unit == "cost",
                unit,
            )
        )
    for quota in catalog.quotas_for(plan_id, feature):
        unit = catalog.meter(quota.meter).unit if quota.meter else "requests"
        rules.append(
            PolicyRule(quota.name, quota.limit, 0, quota.enforcement == "hard", quota.shadow, unit == "cost", unit)
        )
    return rules
