"""The entitlement gate: an authenticated customer and a request in, an :class:`Admission` out, or a
typed refusal. Decision order:

1. the customer's subscription (cached ≤ 1 s; none → :class:`NoSubscription`), as it stands now (a plan
   change scheduled for later, e.g. a migration to another plan version, is not in force yet); while an
   invoice of the customer is overdue, the plan's overdue policy (``plans.overdue``): its overdue plan in
   force instead, or :class:`PaymentOverdue` (the flag travels with the cached subscription: no I/O);
2. the plan (or plan version, ``pro@2``: ``plans.versions``) it names in the live catalog (missing →
   :class:`PlanUnavailable`);
3. route → feature, pure and in-process (no feature covers it → :class:`RouteNotGranted`: deny by default);
   for a bearer-token caller, the token must grant every scope the feature requires (→ :class:`MissingScope`;
   API keys carry no scopes and skip this);
4. does the plan grant the feature? (no → :class:`FeatureNotEntitled`);
5. every limit and the quota that apply to the feature, with the customer's overrides, and the money of
   the request (its real-time price, burned from a prepaid balance or counted against a spend cap: the
   lower of the plan's and the customer's own, ``credits.spend_caps``, cached ≤ 1 s, read only for plans
   with a cap),
   checked and consumed in one limiter call (all or nothing); an enforced limit exceeded →
   :class:`LimitExceeded`; else a price that does not fit → :class:`PaymentRequired`.

Everything before the limiter call is in-process. The static part of a check (the rules of a plan and
feature, and the policies and costs built from them for one customer's limits and billing period) is
memoised, so a request builds no policy objects: only the limiter call and its verdict are per request.

With capacity leases on (``max_lease_ms > 0``, see ``tollway.ratelimit.leases``), a busy customer's
checks are answered in process from a lease: :meth:`EntitlementGate.admit_now` decides such a request
synchronously (no I/O at all when the subscription is cached), or says it must wait for :meth:`admit`.

When subscriptions or limits cannot be checked in time, the plan's ``outage_policy`` decides: fail
closed (:class:`EntitlementsUnavailable`) or fail open (admitted, ``limits_checked=False``). While the
subscription store cannot be reached, the customer's last-known subscription stands in (see
``SubscriptionResolver``); a customer with none fails closed: without it there is no plan to ask.

One deadline per check (``admit(..., deadline=)``, event-loop time, set by the edge when the check
starts): the subscription lookup, any wait for a lease being taken or refunded, and the limiter call all
end by then, so the plan's policy answers before Envoy's own timeout would.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, NamedTuple

from tollway.clock import Clock
from tollway.credits.spend_caps import CapLookupFailed, CustomerCap, CustomerCapResolver, customer_money
from tollway.entitlements.checks import Check, CheckKey
from tollway.entitlements.errors import (
    EntitlementsUnavailable,
    FeatureNotEntitled,
    LimitExceeded,
    MissingScope,
    NoSubscription,
    PaymentRequired,
    PlanUnavailable,
    RouteNotGranted,
)
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.entitlements.overdue import in_force_while_overdue
from tollway.entitlements.rules import PolicyRule, rules_for
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import UnknownPlan
from tollway.plans.routes import RouteMatch
from tollway.ratelimit import Limiter, LimiterUnavailable, Verdict, epoch_ms
from tollway.ratelimit.leasing import LeasingLimiter
from tollway.ratelimit.money import Money
from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import MISS, SubscriptionResolver

log = logging.getLogger(__name__)

_MEMO_MAX_ENTRIES = 10_000
_SLACK_S = 0.001
"""A limiter call made within this of the check's start is bounded by the limiter's own timeout (no
timer of its own: the common case costs nothing); later ones are bounded by the check's deadline."""


class Admission(NamedTuple):
    customer_id: str
    plan_id: str
    feature: str
    route: str
    rules: tuple[PolicyRule, ...]
    verdict: Verdict | None  # None: nothing to check, or not checked (see limits_checked)
    limits_checked: bool = True
    cost: int = 1  # the route's cost weight (the `cost` meters)
    check: Check | None = None  # the memoised limiter check (None: nothing to check)


class EntitlementGate:
    def __init__(
        self,
        catalog: LiveCatalog,
        subscriptions: SubscriptionResolver,
        limiter: Limiter,
        clock: Clock,
        *,
        max_lease_ms: int = 0,
        limiter_timeout_s: float | None = None,
        customer_caps: CustomerCapResolver | None = None,
    ) -> None:
        """``limiter`` answers within its own time bound, ``limiter_timeout_s`` (None: unknown), or raises
        :class:`LimiterUnavailable`. ``max_lease_ms``: the longest a capacity lease lasts (0: no leases,
        every check asks ``limiter``). ``customer_caps``: customers' own spend caps (None: none are
        read), looked up only for plans with a spend cap."""
        self._catalog = catalog
        self._subscriptions = subscriptions
        self._limiter = LeasingLimiter(limiter, max_lease_ms=max_lease_ms)
        self._direct = limiter  # checks that reserve (never leased: each reservation is keyed by its request)
        self._clock = clock
        self._limiter_timeout = limiter_timeout_s
        self._caps = customer_caps
        self._rules: dict[tuple[str, str, str], tuple[PolicyRule, ...]] = {}
        self._checks: dict[CheckKey, Check] = {}
        # Per customer, feature and route cost: the subscription, catalog and customer cap objects a check
        # was built for, and its lease key, reused while those objects stay current and the period lasts.
        self._recent: dict[
            tuple[str, str, int], tuple[Subscription, CompiledCatalog, tuple[str, Check], CustomerCap | None]
        ] = {}

    @property
    def catalog(self) -> LiveCatalog:
        return self._catalog

    @property
    def leases(self) -> LeasingLimiter:
        return self._limiter

    @property
    def subscriptions(self) -> SubscriptionResolver:
        return self._subscriptions

    def admit_now(
        self, customer_id: str, method: str, path: str, scopes: frozenset[str] | None = None
    ) -> Admission | None:
        """The admission if it needs no I/O (cached subscription; no limits, or a lease that covers the
        request); None: call :meth:`admit`. Raises the same refusals as :meth:`admit`, except those that
        need the limiter."""
        found = self._subscriptions.cached(customer_id)
        if found is MISS:
            return None
        if found is None:
            raise NoSubscription("This account has no subscription to a plan.")
        if found.needs_view:  # a plan change may be scheduled, or an invoice is overdue
            found = self._in_force(found)
        catalog, match, rules = self._route(found, method, path, scopes)
        if not rules and catalog.money_terms(found.plan_id) is None:
            return Admission(customer_id, found.plan_id, match.feature, match.route, rules, None, True, match.cost)
        cap = self._cap_now(catalog, found)
        if cap is False:
            return None
        now_ms = self._clock.now_ms()
        lease_key = self._check_for(catalog, found, match.feature, match.cost, rules, now_ms, cap)
        if lease_key[1].reserves:
            return None  # a reservation goes to the limiter, keyed by the request's row id
        verdict = self._limiter.try_now(lease_key, now_ms)
        if verdict is None:
            return None
        return Admission(
            customer_id, found.plan_id, match.feature, match.route, rules, verdict, True, match.cost, lease_key[1]
        )

    async def admit(
        self,
        customer_id: str,
        method: str,
        path: str,
        scopes: frozenset[str] | None = None,
        deadline: float | None = None,
        row_id: str = "",
    ) -> Admission:
        """``scopes``: a bearer token's granted scopes, checked against the feature's required ones
        (None: an API key, to which scopes do not apply). ``deadline`` (event-loop time): by then the
        check is answered, the plan's outage policy deciding what could not be checked. ``row_id``: the
        request's usage row id, the key of its reservation when the plan reserves for the feature (such
        a check is never leased: it goes to the limiter on its own)."""
        subscription = await self._subscription(customer_id, deadline)
        catalog, match, rules = self._route(subscription, method, path, scopes)
        if not rules and catalog.money_terms(subscription.plan_id) is None:
            return Admission(
                customer_id, subscription.plan_id, match.feature, match.route, rules, None, True, match.cost
            )
        cap = self._cap_now(catalog, subscription)
        if cap is False:
            cap = await self._resolve_cap(catalog, subscription, deadline)
        now_ms = self._clock.now_ms()
        lease_key = self._check_for(catalog, subscription, match.feature, match.cost, rules, now_ms, cap)
        check = lease_key[1]
        try:
            bound = self._limiter_timeout
            if check.reserves and check.money is not None:
                verdict = await self._reserve(customer_id, check, check.money.for_row(row_id), now_ms, deadline)
            elif deadline is None or (
                bound is not None and deadline - asyncio.get_running_loop().time() >= bound - _SLACK_S
            ):
                # Nothing waited yet: the limiter's own bound ends with the deadline (no timer of our own).
                # Only a wait for a lease being taken needs the deadline: the leasing limiter times it.
                verdict = await self._limiter.consume(
                    lease_key, customer_id, check.policies, check.costs, now_ms, deadline, check.money
                )
            else:
                verdict = await self._consume_by(deadline, lease_key, check, now_ms)
        except LimiterUnavailable as exc:
            if catalog.plans[subscription.plan_id].outage_policy == "fail_open":
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
            money = verdict.money
            if verdict.violated or money is None or money.refused is None:
                raise LimitExceeded(verdict, rules, subscription.plan_id, match.feature, match.route, match.cost)
            plan = catalog.plans[subscription.plan_id]
            raise PaymentRequired(
                verdict,
                money,
                check.balance_unit,
                plan.pricing.currency if plan.pricing else "",
                subscription.plan_id,
                match.feature,
                match.route,
                match.cost,
            )
        if verdict.shadow_exceeded:
            log.info(
                "shadow limit exceeded (not enforced): customer %s plan %s policies %s",
                customer_id,
                subscription.plan_id,
                ",".join(verdict.shadow_exceeded),
            )
        return Admission(
            customer_id, subscription.plan_id, match.feature, match.route, rules, verdict, True, match.cost, check
        )

    async def _reserve(
        self, customer_id: str, check: Check, money: Money, now_ms: int, deadline: float | None
    ) -> Verdict:
        """A check with a reservation, straight to the limiter (within the check's deadline, if any)."""
        call = self._direct.consume(customer_id, check.policies, check.costs, now_ms, None, money)
        if deadline is None:
            return await call
        if deadline <= asyncio.get_running_loop().time():
            call.close()
            raise LimiterUnavailable("the check's deadline passed before its limits could be checked")
        try:
            async with asyncio.timeout_at(deadline):
                return await call
        except TimeoutError as exc:
            raise LimiterUnavailable("no answer within the check's deadline") from exc

    async def _consume_by(self, deadline: float, lease_key: tuple[str, Check], check: Check, now_ms: int) -> Verdict:
        """The limiter call of a check that already waited (a lookup, …): ended by its ``deadline``."""
        if deadline <= asyncio.get_running_loop().time():
            raise LimiterUnavailable("the check's deadline passed before its limits could be checked")
        try:
            async with asyncio.timeout_at(deadline):
                return await self._limiter.consume(
                    lease_key, lease_key[0], check.policies, check.costs, now_ms, None, check.money
                )
        except TimeoutError as exc:
            raise LimiterUnavailable("no answer within the check's deadline") from exc

    async def sweep_leases(self) -> int:
        """Give back the unused units of capacity leases that ended (run every lease period)."""
        return await self._limiter.sweep(epoch_ms(self._clock))

    async def drain_leases(self) -> int:
        """Give back every capacity lease's unused units (shutting down)."""
        return await self._limiter.drain(epoch_ms(self._clock))

    async def run_lease_sweeper(self) -> None:
        """Background: every half lease period, give back what ended leases did not use (until cancelled)."""
        period_s = self._limiter.book.max_lease_ms / 2000
        if period_s <= 0:
            return
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.sweep_leases()
            except Exception:  # never let the sweeper die: leases would only waste capacity
                log.exception("capacity lease sweep failed")

    def _route(
        self, subscription: Subscription, method: str, path: str, scopes: frozenset[str] | None = None
    ) -> tuple[CompiledCatalog, RouteMatch, tuple[PolicyRule, ...]]:
        """Steps 2 to 4: the live catalog, the route's feature (and a token's scopes for it) and the rules
        of the plan for it."""
        catalog = self._catalog.current
        plan = catalog.plans.get(subscription.plan_id)
        if plan is None:
            log.warning(
                "customer %s is subscribed to plan %r, which the live catalog lacks",
                subscription.customer_id,
                subscription.plan_id,
            )
            raise PlanUnavailable(f"The plan '{subscription.plan_id}' of this account is not available.")
        match = catalog.routes.match(method, path)
        if match is None:
            raise RouteNotGranted(f"No plan grants {method} {path.split('?', 1)[0]}.")
        if scopes is not None:
            required = catalog.scopes_for(match.feature)
            if required and not required <= scopes:
                missing = tuple(sorted(required - scopes))
                raise MissingScope(missing, subscription.plan_id, match.feature, match.route)
        # With add-ons, the plan combined with those held now (``pro+boost*2``, ``plans.addons``): one
        # memoised comparison, and only for customers who ever held an add-on.
        entitled = subscription.entitled_plan(self._clock.now_ms()) if subscription.addons else subscription.plan_id
        try:
            granted = catalog.plan_grants(entitled, match.feature)
        except UnknownPlan as exc:  # an add-on the live catalog lacks (the plan itself was checked above)
            log.warning(
                "customer %s holds add-on %r, which the live catalog lacks", subscription.customer_id, exc.plan_id
            )
            raise PlanUnavailable(f"The add-on '{exc.plan_id}' of this account is not available.") from None
        if not granted:
            raise FeatureNotEntitled(
                f"The {plan.display_name or subscription.plan_id} plan does not include the '{match.feature}' feature."
            )
        return catalog, match, self._rules_for(catalog, entitled, match.feature)

    async def _subscription(self, customer_id: str, deadline: float | None = None) -> Subscription:
        found = self._subscriptions.cached(customer_id)
        if found is MISS:
            try:
                found = await self._subscriptions.resolve(customer_id, deadline)
            except SubscriptionStoreUnavailable as exc:
                raise EntitlementsUnavailable(str(exc)) from exc
        if found is None:
            raise NoSubscription("This account has no subscription to a plan.")
        if found.needs_view:  # a plan change may be scheduled, or an invoice is overdue
            return self._in_force(found)
        return found

    def _in_force(self, found: Subscription) -> Subscription:
        """The subscription the gateway enforces now: without the plan changes still to come (a migration
        from the next period on), and, while an invoice is overdue, as the plan's overdue policy says (its
        overdue plan, or :class:`PaymentOverdue`). Called only for subscriptions that need it."""
        if found.changes:
            found = found.as_of(self._clock.now_ms())
        if found.overdue:
            return in_force_while_overdue(found, self._catalog.current.plans)
        return found

    def forget_customer_cap(self, customer_id: str) -> None:
        """The customer changed their own spend cap: read it again at their next check."""
        if self._caps is not None:
            self._caps.evict(customer_id)

    def _cap_now(self, catalog: CompiledCatalog, subscription: Subscription) -> CustomerCap | Literal[False] | None:
        """The customer's own spend cap if their plan has a spend cap and it is cached (None: none, or not
        looked up); False: await :meth:`_resolve_cap`. No I/O, no allocation."""
        caps = self._caps
        if caps is None:
            return None
        terms = catalog.money_terms(subscription.plan_id)
        if terms is None or terms.cap is None:
            return None
        return caps.cached(subscription.customer_id)

    async def _resolve_cap(
        self, catalog: CompiledCatalog, subscription: Subscription, deadline: float | None
    ) -> CustomerCap | None:
        """The customer's own spend cap from the store. When it cannot be read, a plan that fails open
        checks the plan's cap alone; one that fails closed refuses (:class:`EntitlementsUnavailable`)."""
        assert self._caps is not None
        try:
            return await self._caps.resolve(subscription.customer_id, deadline)
        except CapLookupFailed as exc:
            if catalog.plans[subscription.plan_id].outage_policy == "fail_open":
                log.warning("spend cap of customer %s not read (plan fails open): %s", subscription.customer_id, exc)
                return None
            raise EntitlementsUnavailable(f"the spend cap could not be read: {exc}") from exc

    def _check_for(
        self,
        catalog: CompiledCatalog,
        subscription: Subscription,
        feature: str,
        route_cost: int,
        rules: tuple[PolicyRule, ...],
        now_ms: int,
        cap: CustomerCap | None = None,
    ) -> tuple[str, Check]:
        """The lease key ``(customer id, check)`` of one request: the check's policies (with the customer's
        overrides, in the current billing period), costs and money (with the customer's own spend ``cap``
        where it is below the plan's), built once per customer limits, period, route cost and cap and
        memoised; per customer, the last one is reused while its subscription, catalog and cap objects are
        the current ones and ``now_ms`` is in its period."""
        customer_id = subscription.customer_id
        recent_key = (customer_id, feature, route_cost)
        recent = self._recent.get(recent_key)
        # The id the rules were built for: the plan, or the plan combined with the add-ons held now.
        entitled = subscription.entitled_plan(now_ms) if subscription.addons else subscription.plan_id
        if recent is not None and recent[0] is subscription and recent[1] is catalog and recent[3] is cap:
            lease_key = recent[2]
            start_ms, end_ms = lease_key[1].period_ms
            if start_ms <= now_ms < end_ms and (not subscription.addons or lease_key[1].key[1] == entitled):
                return lease_key
        period = subscription.current_period(self._clock.now())
        period_ms = (int(period.start.timestamp() * 1000), int(period.end.timestamp() * 1000))
        limits = tuple(subscription.limit(rule.name, rule.limit) for rule in rules) if subscription.overrides else None
        money = None
        own_cap = None
        if cap is not None:
            money = catalog.money_for(subscription.plan_id, feature, period_ms, route_cost)
            terms = catalog.money_terms(subscription.plan_id)
            if money is not None and terms is not None:
                own_cap, money = customer_money(money, cap, terms.unit)
        key = (catalog.digest, entitled, feature, route_cost, limits, period_ms, own_cap)
        check = self._checks.get(key)
        if check is None:
            if len(self._checks) > _MEMO_MAX_ENTRIES:
                self._checks.clear()
            if money is None:
                money = catalog.money_for(subscription.plan_id, feature, period_ms, route_cost)
            unit = catalog.balance_unit(subscription.plan_id) if money is not None and money.prepaid else None
            check = self._checks[key] = Check(
                key,
                tuple(rule.policy(subscription.limit(rule.name, rule.limit), period_ms) for rule in rules),
                tuple(route_cost if rule.counts_cost else 1 for rule in rules),
                money,
                unit.code if unit is not None else "",
            )
        if len(self._recent) > _MEMO_MAX_ENTRIES:
            self._recent.clear()
        lease_key = (customer_id, check)
        self._recent[recent_key] = (subscription, catalog, lease_key, cap)
        return lease_key

    def _rules_for(self, catalog: CompiledCatalog, plan_id: str, feature: str) -> tuple[PolicyRule, ...]:
        key = (catalog.digest, plan_id, feature)
        rules = self._rules.get(key)
        if rules is None:
            if len(self._rules) > _MEMO_MAX_ENTRIES:
                self._rules.clear()
            rules = tuple(rules_for(catalog, plan_id, feature))
            self._rules[key] = rules
        return rules
