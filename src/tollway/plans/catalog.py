"""A validated catalog ready for the decision core: route table, digest and per-(plan, feature) look-ups. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from tollway.credits.units import BalanceUnit
from tollway.currencies import MINOR_UNITS
from tollway.plans.addons import combine
from tollway.plans.combined_ids import PLUS, split_combined_id
from tollway.plans.errors import UnknownMeter, UnknownPlan
from tollway.plans.realtime import PlanMoney, compile_plan_money, credit_balance_unit, currency_unit
from tollway.plans.routes import RouteTable
from tollway.plans.schema import Catalog, Meter, Plan, Quota, RateLimit

if TYPE_CHECKING:
    from tollway.ratelimit.money import Money

_Window = TypeVar("_Window", RateLimit, Quota)
_MONEY_CACHE_MAX: Final = 16_384
"""``money_for`` answers kept per catalog (one per plan, feature, period and route cost in use): past it
the memo starts over (a new period, or a new catalog, makes the old entries useless anyway)."""


def _applying(items: Sequence[_Window], feature: str) -> tuple[_Window, ...]:
    return tuple(x for x in items if x.features is None or feature in x.features)


def catalog_digest(catalog: Catalog) -> str:
    """``sha256:`` + hex of the catalog's canonical JSON (sorted keys, defaults filled in, money as strings).

    Formatting, comments, key order and the ConfigMap wrapper do not change it; any change of meaning does.
    """
    canonical = json.dumps(
        catalog.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CompiledCatalog:
    """Immutable once built; swap the whole object to change catalogs."""

    __slots__ = (
        "_combined",
        "_grants",
        "_limits",
        "_money",
        "_money_memo",
        "_quotas",
        "_scopes",
        "catalog",
        "digest",
        "routes",
    )

    def __init__(self, catalog: Catalog, routes: RouteTable, digest: str) -> None:
        self.catalog = catalog
        self.routes = routes
        self.digest = digest
        self._grants: dict[str, frozenset[str]] = {pid: frozenset(p.features) for pid, p in catalog.plans.items()}
        self._scopes: dict[str, frozenset[str]] = {
            name: frozenset(feature.scopes) for name, feature in catalog.features.items() if feature.scopes
        }
        self._limits: dict[tuple[str, str], tuple[RateLimit, ...]] = {}
        self._quotas: dict[tuple[str, str], tuple[Quota, ...]] = {}
        for plan_id, plan in catalog.plans.items():
            for feature in catalog.features:
                key = (plan_id, feature)
                self._limits[key] = _applying(plan.limits, feature)
                self._quotas[key] = _applying(plan.quotas, feature)
        self._money: dict[str, PlanMoney | None] = {
            plan_id: compile_plan_money(plan_id, plan, catalog) for plan_id, plan in catalog.plans.items()
        }
        self._money_memo: dict[tuple[str, str, tuple[int, int], int], Money | None] = {}
        # A plan combined with add-ons (``pro+boost*2``, ``plans.addons``), built on first use.
        self._combined: dict[str, Plan] = {}

    @classmethod
    def build(cls, catalog: Catalog) -> CompiledCatalog:
        return cls(catalog, RouteTable.build(catalog), catalog_digest(catalog))

    @property
    def name(self) -> str:
        return self.catalog.metadata.name

    @property
    def version(self) -> str:
        return self.catalog.metadata.version

    @property
    def plans(self) -> Mapping[str, Plan]:
        return self.catalog.plans

    def plan(self, plan_id: str) -> Plan:
        """A plan of the catalog, or a plan combined with add-ons (``pro+boost*2``: :meth:`combined`)."""
        try:
            return self.catalog.plans[plan_id]
        except KeyError:
            if PLUS in plan_id:
                return self.combined(plan_id)
            raise UnknownPlan(plan_id) from None

    def combined(self, combined_id: str) -> Plan:
        """The plan ``pro+boost*2`` names: the base plan combined with its add-ons (``plans.addons.combine``),
        compiled once per catalog, after which every look-up by that id is a dict look-up like a plan's.
        Raises ``UnknownPlan`` when the base plan or an add-on is not in the catalog (or is not an add-on).
        Whether the base plan *allows* the add-on is checked when it is sold, not here: a subscriber keeps
        an add-on the catalog stops offering, as they keep a plan version."""
        found = self._combined.get(combined_id)
        if found is not None:
            return found
        try:
            base_id, held = split_combined_id(combined_id)
        except ValueError:
            raise UnknownPlan(combined_id) from None
        base = self.catalog.plans.get(base_id)
        if base is None:
            raise UnknownPlan(base_id)
        addons = []
        for addon_id, quantity in held:
            addon = self.catalog.plans.get(addon_id)
            if addon is None or addon.addon is None:
                raise UnknownPlan(addon_id)
            addons.append((addon, quantity))
        plan = combine(base, addons)
        if len(self._combined) >= _MONEY_CACHE_MAX:  # bounded: start over (each is rebuilt on its next use)
            for stale in self._combined:
                self._grants.pop(stale, None)
                self._money.pop(stale, None)
            self._limits = {k: v for k, v in self._limits.items() if k[0] not in self._combined}
            self._quotas = {k: v for k, v in self._quotas.items() if k[0] not in self._combined}
            self._combined.clear()
        self._combined[combined_id] = plan
        self._grants[combined_id] = frozenset(plan.features)
        for feature in self.catalog.features:
            self._limits[(combined_id, feature)] = _applying(plan.limits, feature)
            self._quotas[(combined_id, feature)] = _applying(plan.quotas, feature)
        self._money[combined_id] = self._money.get(base_id)  # the base plan's money terms
        return plan

    def plan_grants(self, plan_id: str, feature: str) -> bool:
        """Whether the plan grants the feature. Raises ``UnknownPlan`` for a plan the catalog lacks."""
        try:
            return feature in self._grants[plan_id]
        except KeyError:
            if PLUS in plan_id:
                return feature in self.combined(plan_id).features
            raise UnknownPlan(plan_id) from None

    def scopes_for(self, feature: str) -> frozenset[str]:
        """The OAuth scopes a bearer token needs for the feature (empty: none)."""
        return self._scopes.get(feature, frozenset())

    def limits_for(self, plan_id: str, feature: str) -> Sequence[RateLimit]:
        """The plan's limits that apply to requests of this feature (``features`` unset or naming it)."""
        found = self._limits.get((plan_id, feature))
        if found is None:
            return _applying(self.plan(plan_id).limits, feature)
        return found

    def quotas_for(self, plan_id: str, feature: str) -> Sequence[Quota]:
        """The plan's quotas that apply to requests of this feature (``features`` unset or naming it)."""
        found = self._quotas.get((plan_id, feature))
        if found is None:
            return _applying(self.plan(plan_id).quotas, feature)
        return found

    def money_terms(self, plan_id: str) -> PlanMoney | None:
        """The plan's prepaid balance and spend cap, compiled (None: the plan has neither). Raises
        ``UnknownPlan``."""
        try:
            return self._money[plan_id]
        except KeyError:
            if PLUS in plan_id:
                self.combined(plan_id)
                return self._money[plan_id]
            raise UnknownPlan(plan_id) from None

    def balance_unit(self, plan_id: str) -> BalanceUnit | None:
        """The unit a prepaid plan's balance is in (None: the plan is not prepaid). Raises ``UnknownPlan``."""
        terms = self.money_terms(plan_id)
        return terms.unit if terms is not None and terms.prepaid else None

    def unit_named(self, code: str) -> BalanceUnit | None:
        """A balance unit by name: a currency Tollway bills in (``USD``) or a credit unit of the catalog
        (``credits``); None for anything else."""
        credit = self.catalog.credit_units.get(code)
        if credit is not None:
            return credit_balance_unit(code, credit)
        return currency_unit(code) if code in MINOR_UNITS else None

    def money_for(self, plan_id: str, feature: str, period_ms: tuple[int, int], route_cost: int) -> Money | None:
        """The money part of a check of one request of ``feature`` (on a route of cost ``route_cost``) in
        the billing period ``period_ms`` (``[start, end)`` epoch ms): None when the plan is neither prepaid
        nor spend-capped; else the real-time charges the request adds to (those it adds 0 to are left out;
        there may be none: a prepaid check still reads the balance), with the balance (prepaid) and the
        spend cap (see ``plans.realtime``). Memoised: the same arguments return the same object.
        Raises ``UnknownPlan``."""
        key = (plan_id, feature, period_ms, route_cost)
        try:
            return self._money_memo[key]
        except KeyError:
            pass
        terms = self.money_terms(plan_id)
        money = terms.money(feature, period_ms, route_cost) if terms is not None else None
        if len(self._money_memo) >= _MONEY_CACHE_MAX:
            self._money_memo.clear()
        self._money_memo[key] = money
        return money

    def meter(self, name: str) -> Meter:
        try:
            return self.catalog.meters[name]
        except KeyError:
            raise UnknownMeter(name) from None

    def __repr__(self) -> str:
        return f"CompiledCatalog(name={self.name!r}, version={self.version!r}, digest={self.digest!r})"
