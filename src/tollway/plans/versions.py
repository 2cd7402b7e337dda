"""Plan versions: grandfathering without a database. Pure.

A plan may list ``versions`` (``1``, ``2``, …), each a whole plan body (features, limits, quotas, pricing,
money terms); a plan without ``versions`` is its own version 1 (every catalog written before versions
loads and prices as it did). The loaded catalog holds every version as an ordinary plan under the id
``<plan>@<n>`` (``pro@2``): a subscription pins the version it was sold at by naming that id, so the
gateway, billing and every report need no notion of versions. The bare id of a versioned plan (``pro``)
is its version 1: a subscription stored before its plan had versions keeps what it was sold at. The
management faces resolve a bare id given for a *new* subscription or a plan change to the latest
version (:func:`pin`).

Immutability: ``published`` is the digest (:func:`version_digest`) of a version's priced and enforced
content — everything but ``display_name``, ``description``, ``published`` and ``correction``, with
defaults left out, so an option added later with a default equal to today's behaviour does not change
it. A published version whose content no longer matches is refused (:func:`version_problems`) unless it
says why it was edited in place (``correction``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Final

from tollway.plans.errors import Path, Problem, UnknownPlan, format_path
from tollway.plans.schema import Catalog, Plan, PlanVersion

SEPARATOR: Final = "@"
BODY_FIELDS: Final = (
    "features",
    "outage_policy",
    "limits",
    "quotas",
    "pricing",
    "usage_headers",
    "prepaid",
    "spend_cap",
    "phases",
)
"""What a version prices and enforces: a versioned plan keeps these in each version, never beside them."""
_NOT_DIGESTED: Final = frozenset(
    {"display_name", "description", "published", "correction", "versions", "addons", "overdue"}
)
"""``addons`` (which add-ons a plan may be sold with) and ``overdue`` (what an overdue customer gets) are
the plan's, not what a version prices or enforces."""
MAX_VERSION: Final = 1_000_000
_PHASE: Final = ":"  # plans.phases.SEPARATOR: a phase plan's id (pro@2:trial)
_PLAN_WIDE: Final = ("addon", "addons", "overdue")
"""Fields of a plan that every version shares (add-ons: ``plans.addons``; ``overdue``: ``plans.overdue``)."""


def versioned_id(plan_id: str, version: int) -> str:
    """``("pro", 2)`` → ``"pro@2"``: the id a subscription pinned to that version names."""
    return f"{plan_id}{SEPARATOR}{version}"


def split_plan_id(text: str) -> tuple[str, int | None]:
    """``"pro@2"`` → ``("pro", 2)``; ``"pro"`` → ``("pro", None)``. ``ValueError`` for a version that is
    not a whole number from 1 written without leading zeros (``pro@0``, ``pro@02``, ``pro@x``, ``pro@``)."""
    base, separator, number = text.partition(SEPARATOR)
    if not separator:
        return text, None
    if not (number.isascii() and number.isdigit()) or number.startswith("0") or int(number) > MAX_VERSION:
        raise ValueError(
            f"plan {text!r}: the version after {SEPARATOR!r} must be a whole number from 1 to {MAX_VERSION} "
            "(e.g. pro@2)"
        )
    return base, int(number)


def version_digest(body: Plan | PlanVersion) -> str:
    """``sha256:`` + hex of the canonical JSON of what ``body`` prices and enforces (defaults left out)."""
    data = body.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for name in _NOT_DIGESTED:
        data.pop(name, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def bodies(plans: Mapping[str, Plan]) -> Iterator[tuple[str, Path, Plan | PlanVersion]]:
    """Every plan body as written: ``(compiled id, path in the document, body)``. An unversioned plan is
    one body under its own id; a versioned one, one per version (``pro@1`` at ``plans.pro.versions[1]``)."""
    for plan_id, plan in plans.items():
        if plan.versions is None:
            yield plan_id, ("plans", plan_id), plan
            continue
        for number, version in sorted(plan.versions.items()):
            yield versioned_id(plan_id, number), ("plans", plan_id, "versions", number), version


def expand(catalog: Catalog) -> Catalog:
    """The catalog with every version compiled into an ordinary plan (``pro@1``, ``pro@2``, and ``pro``:
    version 1); a catalog without versions is returned as it is."""
    if all(plan.versions is None for plan in catalog.plans.values()):
        return catalog
    plans: dict[str, Plan] = {}
    for plan_id, plan in catalog.plans.items():
        if plan.versions is None:
            plans[plan_id] = plan
            continue
        compiled = {number: _as_plan(plan, version) for number, version in sorted(plan.versions.items())}
        if 1 in compiled:
            plans[plan_id] = compiled[1]
        for number, body in compiled.items():
            plans[versioned_id(plan_id, number)] = body
    return catalog.model_copy(update={"plans": plans})


def _as_plan(plan: Plan, version: PlanVersion) -> Plan:
    values = {name: getattr(version, name) for name in BODY_FIELDS}
    return Plan.model_construct(
        display_name=version.display_name or plan.display_name,
        description=version.description or plan.description,
        published=version.published,
        correction=version.correction,
        **values,
        **{name: getattr(plan, name) for name in _PLAN_WIDE if getattr(plan, name) is not None},
    )


def version_problems(plans: Mapping[str, Plan]) -> list[Problem]:
    """A versioned plan with body fields beside its versions; a published version edited in place."""
    problems: list[Problem] = []
    for plan_id, plan in plans.items():
        if plan.versions is None:
            continue
        for name in (*BODY_FIELDS, "published", "correction"):
            if name in plan.model_fields_set:
                at: Path = ("plans", plan_id, name)
                message = (
                    f"{format_path(at)}: a plan with `versions` keeps `{name}` in each version; move it into "
                    "the versions (beside them a plan holds only display_name and description)"
                )
                problems.append(Problem(at, message, name, on_key=True))
    for compiled_id, base, body in bodies(plans):
        if body.published is None or body.correction is not None:
            continue
        digest = version_digest(body)
        if digest != body.published:
            at = (*base, "published")
            message = (
                f"{format_path(at)}: {compiled_id} is published and its content has changed since "
                f"(it now digests to {digest}): a published version is never edited in place. Publish the "
                "change as a new version, or, to fix a mistake in this one, say why with "
                '`correction: "<reason>"` beside `published`'
            )
            problems.append(Problem(at, message, body.published))
    return problems


def unpublished(plans: Mapping[str, Plan]) -> list[tuple[str, Path, str]]:
    """The bodies not yet published, or corrected since: ``(compiled id, path, the digest to stamp)``."""
    found = []
    for compiled_id, base, body in bodies(plans):
        digest = version_digest(body)
        if body.published != digest:
            found.append((compiled_id, base, digest))
    return found


def versions_of(plans: Mapping[str, Plan], plan_id: str) -> list[int]:
    """The version numbers of ``plan_id`` (a bare id) in a loaded catalog, ascending; [] when unversioned."""
    prefix = plan_id + SEPARATOR
    return sorted(int(key[len(prefix) :]) for key in plans if key.startswith(prefix) and _PHASE not in key)


def pin(plans: Mapping[str, Plan], plan_id: str, held: str | None = None) -> str:
    """The id a new subscription (or a plan change) to ``plan_id`` stores: a bare id of a versioned plan
    becomes its latest version (``pro`` → ``pro@3``), unless the customer already ``held`` a version of
    that plan, which they keep (moving between versions is a migration, never a side effect); any other
    id that the catalog has stays as it is. ``UnknownPlan`` when the catalog lacks it; ``ValueError`` for
    a malformed version."""
    base, version = split_plan_id(plan_id)
    held_base = None if held is None or _PHASE in held else split_plan_id(held)[0]  # a phase plan: not a version
    if version is None and held is not None and held_base == base and held in plans:
        return held
    if version is None:
        numbers = versions_of(plans, base)
        if numbers:
            return versioned_id(base, numbers[-1])
    if plan_id not in plans:
        raise UnknownPlan(plan_id)
    return plan_id


def same_version(plan_id: str, other: str) -> bool:
    """Whether two stored plan ids name one version: ``pro`` is ``pro@1``. A phase plan (``pro@1:trial``,
    ``plans.phases``) is only itself."""
    if _PHASE in plan_id or _PHASE in other:
        return plan_id == other
    return _normal(plan_id) == _normal(other)


def _normal(plan_id: str) -> tuple[str, int]:
    base, version = split_plan_id(plan_id)
    return base, 1 if version is None else version
