"""Rules that span objects: references, unique names, route conflicts, tier order. Pure.

They run on whatever parts of the catalog validated structurally (``None`` marks an entry that did
not), so one pass reports structural and cross-reference problems together without cascading: a
feature with a type error still exists as a name for the plans that grant it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.pricing import INVOICE, Charge, Discount, GraduatedCharge, MeteredCharge, Tier, VolumeCharge
from tollway.plans.schema import Feature, Plan, PlanVersion, Quota, RateLimit


@dataclass(frozen=True, slots=True)
class PlanParts:
    """The parts of a plan that validated on their own (``None`` where one did not), at their list indexes."""

    features: Sequence[str | None] = ()
    limits: Sequence[RateLimit | None] = ()
    quotas: Sequence[Quota | None] = ()
    charges: Sequence[Charge | None] = ()
    discounts: Sequence[Discount | None] = ()
    charge_ids: frozenset[str] | None = None  # ids of all charges, valid or not (default: of the valid ones)

    @classmethod
    def of(cls, plan: Plan | PlanVersion) -> PlanParts:
        pricing = plan.pricing
        return cls(
            plan.features,
            plan.limits,
            plan.quotas,
            pricing.charges if pricing else (),
            pricing.discounts if pricing else (),
        )


# Limits and quotas are checked when Envoy asks, before the request body or any response exists: they
# can count only what is known then. Response-side meters are metered and billed, not limited.
GATEWAY_UNITS: Final = frozenset({"requests", "cost"})


def check_catalog(
    meters: Collection[str],
    features: Mapping[str, Feature | None],
    plans: Mapping[str, PlanParts],
    gateway_meters: Collection[str] | None = None,
    meter_features: Mapping[str, Sequence[str | None]] | None = None,
    bases: Mapping[str, Path] | None = None,
) -> list[Problem]:
    """Cross-object problems. ``features`` maps every defined name to its model (``None`` if it is invalid);
    ``gateway_meters`` are the meters a limit or quota may count (default: all); ``meter_features`` maps a
    ``response_json`` meter to its ``features`` list (``None`` for an entry that is not an identifier);
    ``bases``: where a plan body is written when not at ``plans.<id>`` (a version: ``plans.pro.versions[2]``)."""
    problems = list(_meter_problems(meter_features or {}, features))
    problems.extend(_route_conflicts(features))
    for plan_id, plan in plans.items():
        base = (bases or {}).get(plan_id, ("plans", plan_id))
        problems.extend(_plan_problems(base, plan, meters, features, gateway_meters))
    return problems


def _problem(path: Path, message: str, value: object) -> Problem:
    return Problem(path, f"{format_path(path)}: {message}", render_value(value))


def _unknown(kind: str, name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"unknown {kind} '{name}'; did you mean '{close[0]}'?"
    listed = ", ".join(sorted(known)) or "none defined"
    return f"unknown {kind} '{name}' (known: {listed})"


def _meter_problems(
    meter_features: Mapping[str, Sequence[str | None]], features: Mapping[str, Feature | None]
) -> Iterator[Problem]:
    """Every feature a ``response_json`` meter reads bodies of must exist (Envoy sends only their bodies)."""
    for meter, listed in meter_features.items():
        seen: set[str] = set()
        for index, feature_id in enumerate(listed):
            if feature_id is None:
                continue
            at: Path = ("meters", meter, "features", index)
            if feature_id not in features:
                yield _problem(at, _unknown("feature", feature_id, features), feature_id)
            elif feature_id in seen:
                yield _problem(at, "feature listed twice", feature_id)
            seen.add(feature_id)


def _route_conflicts(features: Mapping[str, Feature | None]) -> Iterator[Problem]:
    """A request must map to one feature: the same method and path pattern may not appear twice."""
    seen: dict[tuple[str, str], list[tuple[str, int, frozenset[str]]]] = {}
    for feature_id, feature in features.items():
        if feature is None:
            continue
        for index, route in enumerate(feature.routes):
            pattern = route.pattern
            methods = frozenset(route.methods)
            key = (pattern.kind, pattern.shape)
            where: Path = ("features", feature_id, "routes", index, "path" if route.path is not None else "prefix")
            for other_id, other_index, other_methods in seen.get(key, []):
                if "*" in methods or "*" in other_methods or methods & other_methods:
                    shown = f"{','.join(route.methods)} {pattern.text}"
                    if other_id == feature_id:
                        message = f"duplicate route: routes[{other_index}] of this feature already covers it"
                    else:
                        message = (
                            f"route already belongs to feature '{other_id}' "
                            f"(features.{other_id}.routes[{other_index}]); a method and path must map to one feature"
                        )
                    yield _problem(where, message, shown)
                    break
            seen.setdefault(key, []).append((feature_id, index, methods))


def _plan_problems(
    base: Path,
    plan: PlanParts,
    meters: Collection[str],
    features: Mapping[str, Feature | None],
    gateway_meters: Collection[str] | None,
) -> Iterator[Problem]:
    granted = {f for f in plan.features if f is not None}
    listed: set[str] = set()
    for index, feature_id in enumerate(plan.features):
        if feature_id is None:
            continue
        if feature_id not in features:
            yield _problem((*base, "features", index), _unknown("feature", feature_id, features), feature_id)
        elif feature_id in listed:
            yield _problem((*base, "features", index), "feature listed twice", feature_id)
        listed.add(feature_id)

    policies: dict[str, Path] = {}
    windows: Sequence[tuple[str, Sequence[RateLimit | Quota | None]]] = (
        ("limits", plan.limits),
        ("quotas", plan.quotas),
    )
    for section, items in windows:
        for index, item in enumerate(items):
            if item is None:
                continue
            at: Path = (*base, section, index)
            if item.name in policies:
                first = format_path(policies[item.name])
                yield _problem(
                    (*at, "name"),
                    f"policy name already used by {first} (limits and quotas share one namespace)",
                    item.name,
                )
            else:
                policies[item.name] = at
            if item.meter is not None and item.meter not in meters:
                yield _problem((*at, "meter"), _unknown("meter", item.meter, meters), item.meter)
            elif item.meter is not None and gateway_meters is not None and item.meter not in gateway_meters:
                yield _problem(
                    (*at, "meter"),
                    "limits and quotas are checked before the request is served, so they can count only "
                    "`requests` or `cost` meters (bytes and response fields are metered and billed, not limited)",
                    item.meter,
                )
            for f_index, feature_id in enumerate(item.features or ()):
                if feature_id not in features:
                    yield _problem((*at, "features", f_index), _unknown("feature", feature_id, features), feature_id)
                elif feature_id not in granted:
                    yield _problem((*at, "features", f_index), "feature is not granted by this plan", feature_id)
    yield from _pricing_problems((*base, "pricing"), plan, meters)


def _pricing_problems(base: Path, plan: PlanParts, meters: Collection[str]) -> Iterator[Problem]:
    charge_ids: set[str] = set()
    for index, charge in enumerate(plan.charges):
        if charge is None:
            continue
        at: Path = (*base, "charges", index)
        if charge.id == INVOICE:
            yield _problem((*at, "id"), f"'{INVOICE}' is reserved (discounts use it for the whole invoice)", charge.id)
        elif charge.id in charge_ids:
            yield _problem((*at, "id"), "charge id used twice in this plan", charge.id)
        charge_ids.add(charge.id)
        if isinstance(charge, MeteredCharge) and charge.meter not in meters:
            yield _problem((*at, "meter"), _unknown("meter", charge.meter, meters), charge.meter)
        if isinstance(charge, GraduatedCharge | VolumeCharge):
            yield from _tier_problems((*at, "tiers"), charge.tiers)
        if isinstance(charge, MeteredCharge):
            low, high = charge.minimum_amount, charge.maximum_amount
            if low is not None and high is not None and low > high:
                message = f"maximum_amount must be at least minimum_amount ({low}): the charge cannot be both"
                yield _problem((*at, "maximum_amount"), message, high)
    discount_ids: set[str] = set()
    for index, discount in enumerate(plan.discounts):
        if discount is None:
            continue
        at = (*base, "discounts", index)
        if discount.id in discount_ids:
            yield _problem((*at, "id"), "discount id used twice in this plan", discount.id)
        discount_ids.add(discount.id)
        known = plan.charge_ids if plan.charge_ids is not None else charge_ids
        if discount.applies_to != INVOICE and discount.applies_to not in known:
            close = difflib.get_close_matches(discount.applies_to, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            message = f"unknown charge '{discount.applies_to}': name a charge of this plan or '{INVOICE}'{hint}"
            yield _problem((*at, "applies_to"), message, discount.applies_to)


def _tier_problems(base: Path, tiers: Sequence[Tier]) -> Iterator[Problem]:
    previous: int | Decimal | None = None
    for index, tier in enumerate(tiers):
        at: Path = (*base, index, "up_to")
        last = index == len(tiers) - 1
        if tier.up_to is None:
            if not last:
                yield _problem(at, "only the last tier may have up_to: null", None)
            continue
        if last:
            yield _problem(at, "the last tier needs up_to: null (no upper bound)", tier.up_to)
        if previous is not None and tier.up_to <= previous:
            yield _problem(at, f"tiers must ascend: up_to must be above the previous tier's {previous}", tier.up_to)
        previous = tier.up_to
