"""The entitlement gate: an authenticated customer and a request in, an :class:`Admission` out, or a
typed refusal. Decision order:

1. the customer's subscription (cached ≤ 1 s; none → :class:`NoSubscription`);
2. the plan it names in the live catalog (missing → :class:`PlanUnavailable`);
3. route → feature, pure and in-process (no feature covers it → :class:`RouteNotGranted`: deny by default);
4. does the plan grant the feature? (no → :class:`FeatureNotEntitled`);
5. every limit and the quota that apply to the feature, with the customer's overrides, checked and
   consumed in one limiter call (all or nothing); an enforced one exceeded → :class:`LimitExceeded`.

Everything before the limiter call is in-process. The static part of a check (the rules of a plan and
feature, and the policies and costs built from them for one customer's limits and billing period) is
memoised, so a request builds no policy objects: only the limiter call and its verdict are per request.

When subscriptions or limits cannot be checked in time, the plan's ``outage_policy`` decides: fail
closed (:class:`EntitlementsUnavailable`) or fail open (admitted, ``limits_checked=False``). A customer
whose subscription cannot be read at all fails closed: without it there is no plan to ask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tollway.clock import Clock
from tollway.entitlements.errors import (
    EntitlementsUnavailable,
    FeatureNotEntitled,
    LimitExceeded,
    NoSubscription,
    PlanUnavailable,
    RouteNotGranted,
)
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.entitlements.rules import PolicyRule, rules_for
from tollway.plans.catalog import CompiledCatalog
from tollway.ratelimit import Limiter, LimiterUnavailable, Policy, Verdict, epoch_ms
from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import MISS, SubscriptionResolver

log = logging.getLogger(__name__)

_MEMO_MAX_ENTRIES = 10_000
# Memo key of a check's policies: catalog digest, plan, feature, route cost, the customer's limits
# (None: the plan's own, no overrides) and the billing period in epoch ms.
_CheckKey = tuple[str, str, str, int, tuple[int, ...] | None, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Admission:
    customer_id: str
    plan_id: str
    feature: str
    route: str
    rules: tuple[PolicyRule, ...]
    verdict: Verdict | None  # None: nothing to check, or not checked (see limits_checked)
    limits_checked: bool = True
    cost: int = 1  # the route's cost weight (the `cost` meters)


class EntitlementGate:
    def __init__(
        self,
        catalog: LiveCatalog,
        subscriptions: SubscriptionResolver,
        limiter: Limiter,
        clock: Clock,
    ) -> None:
        """``limiter`` answers within its own time bound or raises :class:`LimiterUnavailable`."""
        self._catalog = catalog
        self._subscriptions = subscriptions
        self._limiter = limiter
        self._clock = clock
        self._rules: dict[tuple[str, str, str], tuple[PolicyRule, ...]] = {}
        self._checks: dict[_CheckKey, tuple[tuple[Policy, ...], tuple[int, ...]]] = {}

    @property
    def catalog(self) -> LiveCatalog:
        return self._catalog

    async def admit(self, customer_id: str, method: str, path: str) -> Admission:
        subscription = await self._subscription(customer_id)
        catalog = self._catalog.current
        plan = catalog.plans.get(subscription.plan_id)
        if plan is None:
            log.warning(
                "customer %s is subscribed to plan %r, which the live catalog lacks", customer_id, subscription.plan_id
            )
            raise PlanUnavailable(f"The plan '{subscription.plan_id}' of this account is not available.")
        match = catalog.routes.match(method, path)
        if match is None:
            raise RouteNotGranted(f"No plan grants {method} {path.split('?', 1)[0]}.")
        if not catalog.plan_grants(subscription.plan_id, match.feature):
            raise FeatureNotEntitled(
                f"The {plan.display_name or subscription.plan_id} plan does not include the '{match.feature}' feature."
            )
        rules = self._rules_for(catalog, subscription.plan_id, match.feature)
        admission = Admission(
            customer_id, subscription.plan_id, match.feature, match.route, rules, None, True, match.cost
        )
        if not rules:
            return admission
        policies, costs = self._check_for(catalog, subscription, match.feature, match.cost, rules)
        try:
            verdict = await self._limiter.consume(customer_id, policies, costs, epoch_ms(self._clock))
        except LimiterUnavailable as exc:
            if plan.outage_policy == "fail_open":
                log.warning(
                    "limits not checked for customer %s (plan %s fails open): %s",
                    customer_id,
                    subscription.plan_id,
                    exc or "timeout",
                )
                return Admission(
                    customer_id, subscription.plan_id, match.feature, match.route, rules, None, False, match.cost
                )
            raise EntitlementsUnavailable(str(exc)) from exc
        if not verdict.admitted:
            raise LimitExceeded(verdict, rules, subscription.plan_id, match.feature, match.route, match.cost)
        if verdict.shadow_exceeded:
            log.info(
                "shadow limit exceeded (not enforced): customer %s plan %s policies %s",
                customer_id,
                subscription.plan_id,
                ",".join(verdict.shadow_exceeded),
            )
        return Admission(
            customer_id, subscription.plan_id, match.feature, match.route, rules, verdict, True, match.cost
        )

    async def _subscription(self, customer_id: str) -> Subscription:
        found = self._subscriptions.cached(customer_id)
        if found is MISS:
            try:
                found = await self._subscriptions.resolve(customer_id)
            except SubscriptionStoreUnavailable as exc:
                raise EntitlementsUnavailable(str(exc)) from exc
        if found is None:
            raise NoSubscription("This account has no subscription to a plan.")
        return found

    def _check_for(
        self,
        catalog: CompiledCatalog,
        subscription: Subscription,
        feature: str,
        route_cost: int,
        rules: tuple[PolicyRule, ...],
    ) -> tuple[tuple[Policy, ...], tuple[int, ...]]:
        """The policies (with the customer's overrides, in the current billing period) and the costs of
        one check; built once per customer limits, period and route cost, then memoised."""
        period = subscription.current_period(self._clock.now())
        period_ms = (int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000))
        limits = tuple(subscription.limit(rule.name, rule.limit) for rule in rules) if subscription.overrides else None
        key = (catalog.digest, subscription.plan_id, feature, route_cost, limits, period_ms)
        found = self._checks.get(key)
        if found is None:
            if len(self._checks) > _MEMO_MAX_ENTRIES:
                self._checks.clear()
            found = (
                tuple(rule.policy(subscription.limit(rule.name, rule.limit), period_ms) for rule in rules),
                tuple(route_cost if rule.counts_cost else 1 for rule in rules),
            )
            self._checks[key] = found
        return found

    def _rules_for(self, catalog: CompiledCatalog, plan_id: str, feature: str) -> tuple[PolicyRule, ...]:
        key = (catalog.digest, plan_id, feature)
        rules = self._rules.get(key)
        if rules is None:
            if len(self._rules) > _MEMO_MAX_ENTRIES:
                self._rules.clear()
            rules = tuple(rules_for(catalog, plan_id, feature))
            self._rules[key] = rules
        return rules
