"""Add-ons: plans bought on top of a base plan, and how a base plan and its add-ons combine. Pure.

An add-on is a plan with ``addon:`` terms (``schema.AddOnTerms``); a base plan lists the add-ons it may
be sold with in ``addons``. A subscription holds its add-ons (each with a quantity) beside its plan
(``subscriptions.model.AddOn``); the gateway enforces, and the usage headers report, the combination
(:func:`combine`) of the plan held and the add-ons held at the moment, under the combined id
``pro+boost*2`` (``plans.combined_ids``), which ``CompiledCatalog`` builds once and looks up like a plan.

The rules (docs/entitlements.md#add-ons):

- **features** are the union: the base plan's, then each add-on's not already granted;
- **quotas add**: an add-on's quota adds its limit × quantity to the base plan's quota of the same name
  (the same counter: quota counters are keyed by customer, policy name and period, so buying an add-on
  mid-period raises the limit of the count already made); a quota only an add-on has is added as it is
  written, its limit × quantity;
- **rate limits: the strictest wins**: of a base limit and an add-on's limit of the same name, the lower
  one holds (an add-on's limit not in the base plan is added); unless the add-on says ``limits: replace``:
  then its limit replaces the base plan's of the same name (and of several replacing add-ons, the
  highest limit holds). Rate limits do not scale with the quantity;
- a policy keeps the base plan's definition (meter, features, enforcement, alerts); only its limit
  changes. The customer's own overrides still win over the combined limit;
- everything else (pricing, money terms, outage policy, usage headers, display name) is the base plan's.
  Add-ons are priced by flat fees only (times the quantity, prorated over the time held), on a section of
  their own of the customer's invoice (``billing.invoices``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.pricing import FlatCharge
from tollway.plans.schema import Plan, PlanVersion, Quota, RateLimit
from tollway.plans.versions import bodies, split_plan_id

MAX_POLICY_LIMIT: Final = 2**63 - 1
"""A combined quota never exceeds what a Redis integer holds."""


def bare_id(plan_id: str) -> str:
    """``boost@2`` → ``boost`` (a malformed version suffix is left as it is)."""
    try:
        return split_plan_id(plan_id)[0]
    except ValueError:
        return plan_id


def allows(plans: Mapping[str, Plan], plan_id: str, addon_id: str) -> str | None:
    """Why plan ``plan_id`` cannot be sold with add-on ``addon_id`` (either may name a version), or None."""
    plan = plans.get(plan_id)
    if plan is None:
        return f"plan {plan_id!r} is not in the catalog"
    addon = plans.get(addon_id)
    if addon is None or addon.addon is None:
        known = sorted(pid for pid, p in plans.items() if p.addon is not None and "@" not in pid)
        what = "is not in the catalog" if addon is None else "is a plan, not an add-on"
        return f"add-on {addon_id!r} {what} (add-ons: {', '.join(known) or 'none'})"
    allowed = plan.addons or []
    if bare_id(addon_id) not in allowed:
        listed = ", ".join(allowed) or "none"
        return f"plan {plan_id!r} does not allow add-on {bare_id(addon_id)!r} (it allows: {listed})"
    return None


def check_quantity(plans: Mapping[str, Plan], addon_id: str, quantity: int) -> str | None:
    """Why ``quantity`` of add-on ``addon_id`` cannot be held, or None."""
    addon = plans.get(addon_id)
    most = addon.addon.max_quantity if addon is not None and addon.addon is not None else 1
    if not 1 <= quantity <= most:
        return f"add-on {addon_id!r} is sold in quantities from 1 to {most}, not {quantity}"
    return None


def combine(base: Plan, held: Sequence[tuple[Plan, int]]) -> Plan:
    """The plan a subscriber of ``base`` holding ``held`` (add-on, quantity) is entitled by (module doc)."""
    features = list(base.features)
    quotas: dict[str, Quota] = {quota.name: quota for quota in base.quotas}
    limits: dict[str, RateLimit] = {limit.name: limit for limit in base.limits}
    replaced: dict[str, int] = {}
    for addon, quantity in held:
        features.extend(f for f in addon.features if f not in features)
        for quota in addon.quotas:
            extra = quota.limit * quantity
            found = quotas.get(quota.name)
            total = extra if found is None else found.limit + extra
            quotas[quota.name] = (found or quota).model_copy(update={"limit": min(total, MAX_POLICY_LIMIT)})
        replace = addon.addon is not None and addon.addon.limits == "replace"
        for limit in addon.limits:
            found_limit = limits.get(limit.name)
            if replace:
                replaced[limit.name] = max(replaced.get(limit.name, 0), limit.limit)
            elif found_limit is None:
                limits[limit.name] = limit
            elif limit.limit < found_limit.limit:
                limits[limit.name] = found_limit.model_copy(update={"limit": limit.limit})
    for name, value in replaced.items():
        found_limit = limits.get(name)
        if found_limit is None:
            source = next(limit for addon, _ in held for limit in addon.limits if limit.name == name)
            limits[name] = source.model_copy(update={"limit": value})
        else:
            limits[name] = found_limit.model_copy(update={"limit": value})
    return base.model_copy(
        update={"features": features, "quotas": list(quotas.values()), "limits": list(limits.values())}
    )


def addon_problems(plans: Mapping[str, Plan]) -> list[Problem]:
    """Catalog problems of add-ons (as written, before versions are expanded), each at its path."""
    problems: list[Problem] = []
    for plan_id, plan in plans.items():
        if plan.addon is not None:
            if plan.addons:
                problems.append(_problem(("plans", plan_id, "addons"), "an add-on cannot itself list add-ons", None))
            for _, base, body in bodies({plan_id: plan}):
                problems.extend(_body_problems(base, body))
        for index, addon_id in enumerate(plan.addons or ()):
            at: Path = ("plans", plan_id, "addons", index)
            addon = plans.get(addon_id)
            if addon is None or addon.addon is None:
                known = sorted(pid for pid, p in plans.items() if p.addon is not None)
                what = "is not in the catalog" if addon is None else "is a plan without `addon:` terms"
                problems.append(
                    _problem(at, f"add-on '{addon_id}' {what} (add-ons: {', '.join(known) or 'none'})", addon_id)
                )
            elif addon_id in (plan.addons or [])[:index]:
                problems.append(_problem(at, f"add-on '{addon_id}' is listed twice", addon_id))
            else:
                problems.extend(_fit_problems(at, plans, plan_id, addon_id))
    return problems


def _body_problems(base: Path, body: Plan | PlanVersion) -> Iterator[Problem]:
    if body.prepaid is not None:
        yield _problem((*base, "prepaid"), "an add-on cannot be prepaid (the base plan's money terms hold)", None)
    if body.spend_cap is not None:
        yield _problem((*base, "spend_cap"), "an add-on has no spend cap (the base plan's holds)", None)
    pricing = body.pricing
    if pricing is None:
        return
    for index, charge in enumerate(pricing.charges):
        if not isinstance(charge, FlatCharge):
            yield _problem(
                (*base, "pricing", "charges", index),
                "an add-on is priced by flat fees only (times its quantity); usage is priced by the base plan",
                charge.model,
            )
    for name in ("minimum_commitment", "coupons", "progressive_billing"):
        if getattr(pricing, name):
            yield _problem((*base, "pricing", name), f"an add-on has no {name} (the base plan's applies)", None)


def _fit_problems(at: Path, plans: Mapping[str, Plan], plan_id: str, addon_id: str) -> Iterator[Problem]:
    """An add-on must bill in the currency and on the interval of every version of the plan allowing it."""
    mine = [body.pricing for _, _, body in bodies({plan_id: plans[plan_id]}) if body.pricing is not None]
    theirs = [body.pricing for _, _, body in bodies({addon_id: plans[addon_id]}) if body.pricing is not None]
    for own in mine:
        for other in theirs:
            if (own.currency, own.interval) != (other.currency, other.interval):
                yield _problem(
                    at,
                    f"add-on '{addon_id}' is priced in {other.currency} per {other.interval}, plan '{plan_id}' in "
                    f"{own.currency} per {own.interval}: an add-on bills on its plan's invoice and periods",
                    addon_id,
                )
                return


def _problem(path: Path, message: str, value: object) -> Problem:
    return Problem(path, f"{format_path(path)}: {message}", render_value(value) if value is not None else None)
