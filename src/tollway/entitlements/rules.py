"""A plan's limits and quotas as they apply to one feature: the static part of every check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tollway.notifications.thresholds import Alert
from tollway.plans.alerts import alert_labels
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.combined_ids import PLUS
from tollway.ratelimit import Policy, QuotaPolicy, WindowPolicy
from tollway.ratelimit.policies import Alerting


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
    alerts: tuple[Alert, ...] = ()
    plan: str = ""
    feature: str = ""

    def alerting(self, limit: int) -> Alerting | None:
        """The policy's alert levels for the customer's effective ``limit`` (None: no alerts)."""
        if not self.alerts:
            return None
        levels, labels = alert_labels(self.alerts, limit)
        return Alerting(levels, labels, self.plan, self.feature)

    def policy(self, limit: int, period_ms: tuple[int, int]) -> Policy:
        alerting = self.alerting(limit) if self.alerts else None
        if self.window_ms:
            return WindowPolicy.sliding(
                self.name, limit, self.window_ms, hard=self.hard, shadow=self.shadow, alerting=alerting
            )
        return QuotaPolicy(
            self.name, limit, period_ms[0], period_ms[1], hard=self.hard, shadow=self.shadow, alerting=alerting
        )


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
                *_alerts(limit.alerts, plan_id, feature),
            )
        )
    for quota in catalog.quotas_for(plan_id, feature):
        unit = catalog.meter(quota.meter).unit if quota.meter else "requests"
        rules.append(
            PolicyRule(
                quota.name,
                quota.limit,
                0,
                quota.enforcement == "hard",
                quota.shadow,
                unit == "cost",
                unit,
                *_alerts(quota.alerts, plan_id, feature),
            )
        )
    return rules


def _alerts(alerts: Sequence[Alert] | None, plan_id: str, feature: str) -> tuple[tuple[Alert, ...], str, str]:
    """A rule's alerts with the plan (the base plan of one combined with add-ons) and feature its events
    name (left empty without alerts)."""
    return (tuple(alerts), plan_id.partition(PLUS)[0], feature) if alerts else ((), "", "")
