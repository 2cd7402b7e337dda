"""Overdue policies: what a customer with an overdue invoice gets at the gateway (``overdue:`` on a plan,
docs/catalog-reference.md#overdue). Pure.

A plan declares either another plan of the catalog whose answers such a customer gets (``plan: free``: its
features, limits, quotas and money terms, with none of the customer's overrides or add-ons) or a 402 refusal
(``refuse: true``). The subscription itself never changes: billing goes on pricing the plan held
(docs/payments.md#overdue-customers-at-the-gateway).
"""

from __future__ import annotations

from collections.abc import Mapping

from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.schema import Plan
from tollway.plans.versions import bodies, split_plan_id


def overdue_problems(plans: Mapping[str, Plan]) -> list[Problem]:
    """Each ``overdue.plan`` names a plan (or a version of one) of the catalog that is not the plan itself,
    not an add-on and declares no overdue policy of its own (the fallback is where an overdue customer
    stays: it is not itself sent on)."""
    compiled = {compiled_id for compiled_id, _, _ in bodies(plans)}
    compiled |= {plan_id for plan_id, plan in plans.items() if plan.versions and 1 in plan.versions}
    problems: list[Problem] = []
    for plan_id, plan in plans.items():
        target = plan.overdue.plan if plan.overdue is not None else None
        if target is None:
            continue
        at: Path = ("plans", plan_id, "overdue", "plan")
        base, _ = split_plan_id(target)
        fallback = plans.get(base)
        if target not in compiled or fallback is None:
            known = ", ".join(sorted(compiled - {plan_id})) or "none"
            message = f"overdue plan '{target}' is not in the catalog (plans: {known})"
        elif base == plan_id:
            message = f"a plan cannot be its own overdue plan ('{target}'): name another plan, or `refuse: true`"
        elif fallback.addon is not None:
            message = f"overdue plan '{target}' is an add-on: name a plan a customer can hold alone"
        elif fallback.overdue is not None:
            message = (
                f"overdue plan '{target}' declares an overdue policy of its own: the overdue plan is where an "
                "overdue customer stays, so it must not declare `overdue`"
            )
        else:
            continue
        problems.append(Problem(at, f"{format_path(at)}: {message}", render_value(target)))
    return problems


def overdue_answer(plan: Plan) -> str | bool | None:
    """What an overdue customer of ``plan`` gets: the id of the plan in force instead, ``True`` (refused with
    a 402) or ``None`` (no policy: the plan stays in force)."""
    policy = plan.overdue
    if policy is None:
        return None
    return True if policy.refuse else policy.plan
