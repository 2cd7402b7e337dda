"""Plan phases: trials and ramps without a notion of phases anywhere else. Pure.

A plan body (a plan, or one of its versions) may list ``phases``: a new subscription to it runs through
them first (``subscriptions.phases``). Loading compiles each phase of a compiled plan ``P`` (``pro``,
``pro@2``) into an ordinary plan ``P:<phase id>`` (``pro@2:trial``) of the catalog — catalog plan ids
cannot contain ``:``, subscription plan ids can, so the ids never collide:

- same features, outage policy, limits, quotas and usage headers as ``P``: the gateway enforces the
  phase's plan like any plan, and quota counters (keyed by customer, policy name and period, never by
  plan) carry a period's usage across a phase change;
- ``free: true`` (a trial): the pricing keeps ``P``'s currency and interval and nothing else (no
  charge, minimum, discount, coupon or progressive billing: every invoice part of the phase is 0), and
  no prepaid balance or spend cap, so the gateway burns nothing while it lasts;
- ``percent_off: N`` (a ramp): ``P``'s pricing with one more invoice discount of N percent
  (``phase-<id>``); its money terms are ``P``'s (a prepaid plan cannot have a discounted phase: the
  gateway burns at the undiscounted prices, see :func:`phase_problems`).

A catalog without phases compiles to exactly what it compiled to before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tollway.plans.errors import Path, Problem, format_path
from tollway.plans.pricing import Discount, Pricing
from tollway.plans.schema import Catalog, Phase, Plan, PlanVersion

SEPARATOR: Final = ":"


def phase_plan_id(plan_id: str, phase_id: str) -> str:
    """``("pro@2", "trial")`` → ``"pro@2:trial"``: the plan a subscription holds during that phase."""
    return f"{plan_id}{SEPARATOR}{phase_id}"


def split_phase(plan_id: str) -> tuple[str, str | None]:
    """``"pro@2:trial"`` → ``("pro@2", "trial")``; ``"pro@2"`` → ``("pro@2", None)``."""
    base, separator, phase = plan_id.partition(SEPARATOR)
    return (base, phase) if separator else (plan_id, None)


def expand(catalog: Catalog) -> Catalog:
    """The catalog with a plan ``<id>:<phase>`` for every phase of every compiled plan (after
    ``versions.expand``); a catalog without phases is returned as it is."""
    if all(plan.phases is None for plan in catalog.plans.values()):
        return catalog
    plans = dict(catalog.plans)
    for plan_id, plan in catalog.plans.items():
        for phase in plan.phases or ():
            plans[phase_plan_id(plan_id, phase.id)] = phase_plan(plan, phase)
    return catalog.model_copy(update={"plans": plans})


def phase_plan(plan: Plan, phase: Phase) -> Plan:
    """What a subscription holds during ``phase`` of ``plan`` (see the module docstring)."""
    pricing = plan.pricing
    prepaid, spend_cap = plan.prepaid, plan.spend_cap
    if pricing is not None and phase.free:
        pricing = Pricing.model_construct(
            currency=pricing.currency,
            interval=pricing.interval,
            charges=[],
            minimum_commitment=None,
            discounts=[],
            rounding=pricing.rounding,
            coupons=[],
            progressive_billing=None,
        )
        prepaid = spend_cap = None
    elif pricing is not None and phase.percent_off is not None:
        discount = Discount.model_construct(
            id=f"phase-{phase.id}", percent=phase.percent_off, amount=None, applies_to="invoice", periods=None
        )
        pricing = pricing.model_copy(update={"discounts": [*pricing.discounts, discount]})
    name = plan.display_name
    return Plan.model_construct(
        display_name=f"{name} ({phase.id})" if name else None,
        description=plan.description,
        features=plan.features,
        outage_policy=plan.outage_policy,
        limits=plan.limits,
        quotas=plan.quotas,
        pricing=pricing,
        usage_headers=plan.usage_headers,
        prepaid=prepaid,
        spend_cap=spend_cap,
        published=None,
        correction=None,
        phases=None,
        versions=None,
        addon=None,
        addons=plan.addons,  # add-ons may be bought during a phase, as on the plan it leads to
        overdue=plan.overdue,  # an overdue customer in a phase gets what the plan declares
    )


def phase_problems(bodies: Mapping[str, tuple[Path, Plan | PlanVersion]]) -> list[Problem]:
    """Phases that cannot be compiled: two with one id, phases of a plan without pricing, a discounted
    phase of a prepaid plan."""
    problems: list[Problem] = []
    for base, body in bodies.values():
        seen: set[str] = set()
        for position, phase in enumerate(body.phases or ()):
            at: Path = (*base, "phases", position)
            if phase.id in seen:
                where = (*at, "id")
                problems.append(Problem(where, f"{format_path(where)}: phase {phase.id!r} is listed twice", phase.id))
            seen.add(phase.id)
            if body.pricing is None:
                where = (*base, "phases")
                message = f"{format_path(where)}: phases price the plan in turn: a plan with phases needs `pricing`"
                problems.append(Problem(where, message, None, on_key=True))
                break
            if phase.percent_off is not None and body.prepaid is not None:
                where = (*at, "percent_off")
                message = (
                    f"{format_path(where)}: a prepaid plan cannot have a discounted phase (the gateway burns its "
                    "balance at the plan's own prices): use `free: true`, or a plan version with the lower prices"
                )
                problems.append(Problem(where, message, str(phase.percent_off)))
    return problems


def default_phases(plans: Mapping[str, Plan], plan_id: str) -> tuple[tuple[str, Phase], ...]:
    """The phases a new subscription to ``plan_id`` runs through, as ``(phase plan id, phase)``; none
    for a plan without phases or one the catalog lacks."""
    plan = plans.get(plan_id)
    if plan is None or not plan.phases:
        return ()
    return tuple((phase_plan_id(plan_id, phase.id), phase) for phase in plan.phases)
