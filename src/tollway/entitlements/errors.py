"""Typed entitlement refusals. No HTTP status here: the edge (extproc/problems.py) maps them."""

from __future__ import annotations

from collections.abc import Sequence

from tollway.entitlements.rules import PolicyRule
from tollway.ratelimit import Verdict
from tollway.ratelimit.money import MoneyState


class EntitlementError(Exception):
    """The caller is known but may not do this. ``reason`` is a stable slug."""

    reason = "not-entitled"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NoSubscription(EntitlementError):
    reason = "no-subscription"


class PaymentOverdue(EntitlementError):
    """An invoice of the customer is overdue and their plan's overdue policy refuses (``refuse: true``):
    the edge answers 402 (``extproc.problems.Refusals.payment_overdue``)."""

    reason = "payment-overdue"

    def __init__(self, detail: str, plan_id: str = "", invoices: int = 0) -> None:
        super().__init__(detail)
        self.plan_id = plan_id
        self.invoices = invoices


class PlanUnavailable(EntitlementError):
    """The subscription names a plan the live catalog does not have."""

    reason = "plan-unavailable"


class RouteNotGranted(EntitlementError):
    """No feature of the catalog covers this method and path: refused by default."""

    reason = "route-not-granted"


class FeatureNotEntitled(EntitlementError):
    reason = "feature-not-entitled"


class MissingScope(EntitlementError):
    """A bearer token lacks a scope the request's feature requires (authorization, not authentication:
    the caller is known). ``scopes`` are the missing ones."""

    reason = "insufficient-scope"

    def __init__(self, scopes: Sequence[str], plan_id: str = "", feature: str = "", route: str = "") -> None:
        names = ", ".join(f"'{s}'" for s in scopes)
        plural = "s" if len(scopes) > 1 else ""
        super().__init__(f"The token lacks the scope{plural} {names}, required for the '{feature}' feature.")
        self.scopes = tuple(scopes)
        self.plan_id = plan_id
        self.feature = feature
        self.route = route


class LimitExceeded(Exception):
    """An enforced limit or quota would be exceeded; nothing was consumed."""

    reason = "quota-exceeded"

    def __init__(
        self,
        verdict: Verdict,
        rules: Sequence[PolicyRule],
        plan_id: str,
        feature: str,
        route: str = "",
        cost: int = 1,
    ) -> None:
        super().__init__(f"{', '.join(verdict.violated)} exceeded")
        self.verdict = verdict
        self.rules = tuple(rules)
        self.plan_id = plan_id
        self.feature = feature
        self.route = route
        self.cost = cost


class PaymentRequired(Exception):
    """The request's price does not fit: the prepaid balance cannot cover it (``insufficient-credits``) or
    it would take the period's spend past a hard cap (``spend-cap-reached``); nothing was consumed."""

    def __init__(
        self,
        verdict: Verdict,
        money: MoneyState,
        balance_unit: str,
        currency: str,
        plan_id: str,
        feature: str,
        route: str = "",
        cost: int = 1,
    ) -> None:
        assert money.refused is not None
        super().__init__(money.refused)
        self.reason: str = money.refused
        self.verdict = verdict
        self.money = money
        self.balance_unit = balance_unit
        self.currency = currency
        self.plan_id = plan_id
        self.feature = feature
        self.route = route
        self.cost = cost


class EntitlementsUnavailable(Exception):
    """Subscriptions or limits could not be checked in time and the plan fails closed."""

    reason = "entitlements-unavailable"
