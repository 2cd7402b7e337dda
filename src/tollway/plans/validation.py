"""Plain data → ``Catalog``, with every structural and cross-reference problem as a path-based ``Problem``.

Pydantic errors are translated into short messages; their ``loc`` is resolved against the data so
the loader can point at the YAML node (union tags in ``loc`` are skipped, ``[key]`` points at a key,
a missing field at its mapping).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal
from typing import Any, Final, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from tollway.plans import phases, versions
from tollway.plans.addons import addon_problems
from tollway.plans.checks import GATEWAY_UNITS, PlanParts, check_catalog
from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.fields import Identifier
from tollway.plans.invoicing import InvoicingParts, invoicing_problems
from tollway.plans.money import CreditUnit, Prepaid, SpendCap
from tollway.plans.overdue import overdue_problems
from tollway.plans.pricing import Charge, Currency, Discount
from tollway.plans.realtime import MoneyParts, money_problems
from tollway.plans.schema import Catalog, Feature, MeterUnit, Quota, RateLimit

_T = TypeVar("_T")

_SIMPLE_MESSAGES: Final = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "is_instance_of": 'expected a decimal string such as "49.00"',
}


def validate_catalog(data: object) -> tuple[Catalog | None, list[Problem]]:
    """The catalog if ``data`` is valid, else ``None`` and every problem found."""
    problems: list[Problem] = []
    catalog: Catalog | None = None
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        problems.extend(_translate(error, data) for error in exc.errors())
    if catalog is not None:
        features: Mapping[str, Feature | None] = catalog.features
        written = list(versions.bodies(catalog.plans))  # a versioned plan: each version, at its own path
        bases = {plan_id: base for plan_id, base, _ in written}
        plans = {plan_id: PlanParts.of(body) for plan_id, _, body in written}
        gateway = {name for name, meter in catalog.meters.items() if meter.unit in GATEWAY_UNITS}
        read = {name: meter.features for name, meter in catalog.meters.items() if meter.features}
        problems.extend(check_catalog(catalog.meters.keys(), features, plans, gateway, read, bases))
        problems.extend(
            money_problems(
                catalog.credit_units,
                {name: meter.unit for name, meter in catalog.meters.items()},
                {plan_id: MoneyParts.of(body) for plan_id, _, body in written},
                bases,
            )
        )
        problems.extend(invoicing_problems({plan_id: InvoicingParts.of(body) for plan_id, _, body in written}, bases))
        problems.extend(versions.version_problems(catalog.plans))
        problems.extend(phases.phase_problems({plan_id: (base, body) for plan_id, base, body in written}))
        problems.extend(addon_problems(catalog.plans))
        problems.extend(overdue_problems(catalog.plans))
    else:  # check what did validate, so one pass reports structural and reference problems together
        features = {name: _valid(_FEATURE, value) for name, value in _section(data, "features").items()}
        raw_plans = dict(_raw_bodies(_section(data, "plans")))
        bases = {plan_id: base for plan_id, (base, _) in raw_plans.items()}
        plans = {plan_id: _plan_parts(value) for plan_id, (_, value) in raw_plans.items()}
        meters = _section(data, "meters")
        gateway = {
            name for name, meter in meters.items() if isinstance(meter, dict) and meter.get("unit") in GATEWAY_UNITS
        }
        listed = {name: _items(_IDENTIFIER, m.get("features")) for name, m in meters.items() if isinstance(m, dict)}
        problems.extend(check_catalog(meters.keys(), features, plans, gateway, listed, bases))
        problems.extend(
            money_problems(
                {name: _valid(_CREDIT_UNIT, value) for name, value in _section(data, "credit_units").items()},
                {
                    name: _valid(_METER_UNIT, m.get("unit") if isinstance(m, dict) else None)
                    for name, m in meters.items()
                },
                {plan_id: _money_parts(value) for plan_id, (_, value) in raw_plans.items()},
                bases,
            )
        )
        problems.extend(
            invoicing_problems({plan_id: InvoicingParts.from_raw(v) for plan_id, (_, v) in raw_plans.items()}, bases)
        )
    if problems or catalog is None:
        return None, problems
    return phases.expand(versions.expand(catalog)), problems


def _raw_bodies(plans: Mapping[str, object]) -> Iterator[tuple[str, tuple[Path, object]]]:
    """The plan bodies of plans that did not all validate, like ``versions.bodies``."""
    for plan_id, raw in plans.items():
        listed = raw.get("versions") if isinstance(raw, dict) else None
        if not isinstance(listed, dict):
            yield plan_id, (("plans", plan_id), raw)
            continue
        for number, body in listed.items():
            if isinstance(number, int) and not isinstance(number, bool):
                yield versions.versioned_id(plan_id, number), (("plans", plan_id, "versions", number), body)


_FEATURE: Final = TypeAdapter(Feature)
_IDENTIFIER: Final = TypeAdapter(Identifier)
_LIMIT: Final = TypeAdapter(RateLimit)
_QUOTA: Final = TypeAdapter(Quota)
_CHARGE: Final = TypeAdapter(Charge)
_DISCOUNT: Final = TypeAdapter(Discount)
_CREDIT_UNIT: Final = TypeAdapter(CreditUnit)
_METER_UNIT: Final = TypeAdapter(MeterUnit)
_CURRENCY: Final = TypeAdapter(Currency)
_PREPAID: Final = TypeAdapter(Prepaid)
_SPEND_CAP: Final = TypeAdapter(SpendCap)


def _section(data: object, key: str) -> dict[str, object]:
    raw = data.get(key) if isinstance(data, dict) else None
    return {k: v for k, v in raw.items() if isinstance(k, str)} if isinstance(raw, dict) else {}


def _valid(adapter: TypeAdapter[_T], value: object) -> _T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _items(adapter: TypeAdapter[_T], value: object) -> list[_T | None]:
    return [_valid(adapter, item) for item in value] if isinstance(value, list) else []


def _plan_parts(raw: object) -> PlanParts:
    plan = raw if isinstance(raw, dict) else {}
    pricing = plan.get("pricing")
    pricing = pricing if isinstance(pricing, dict) else {}
    raw_charges = pricing.get("charges")
    charge_ids = {c.get("id") for c in raw_charges if isinstance(c, dict)} if isinstance(raw_charges, list) else set()
    features = _items(_IDENTIFIER, plan.get("features"))
    limits = _items(_LIMIT, plan.get("limits"))
    quotas = _items(_QUOTA, plan.get("quotas"))
    charges = _items(_CHARGE, raw_charges)
    discounts = _items(_DISCOUNT, pricing.get("discounts"))
    known = frozenset(i for i in charge_ids if isinstance(i, str))
    return PlanParts(features, limits, quotas, charges, discounts, known)


def _money_parts(raw: object) -> MoneyParts:
    plan = raw if isinstance(raw, dict) else {}
    prepaid = _valid(_PREPAID, plan["prepaid"]) if plan.get("prepaid") is not None else None
    cap = _valid(_SPEND_CAP, plan["spend_cap"]) if plan.get("spend_cap") is not None else None
    pricing = plan.get("pricing")
    if not isinstance(pricing, dict):
        return MoneyParts(prepaid, cap, pricing is not None)
    raw_charges = pricing.get("charges")
    ids = {c.get("id") for c in raw_charges if isinstance(c, dict)} if isinstance(raw_charges, list) else set()
    known = frozenset(i for i in ids if isinstance(i, str))
    currency = _valid(_CURRENCY, pricing.get("currency"))
    charges = _items(_CHARGE, raw_charges)
    return MoneyParts(prepaid, cap, True, currency, charges, known)


def _translate(error: ErrorDetails, data: object) -> Problem:
    loc = error["loc"]
    kind = error["type"]
    path: list[str | int] = []
    node: object = data
    for position, part in enumerate(loc):
        if part == "[key]":
            key_path = tuple(path)
            message = f"{format_path(key_path)}: name {_message(error, path[-1])}"
            return Problem(key_path, message, render_value(path[-1]), on_key=True)
        if _has(node, part):
            path.append(part)
            node = node[part]  # type: ignore[index]
        elif position == len(loc) - 1 and kind == "missing":
            where = tuple(path)
            return Problem(where, f"{format_path(where)}: missing required field '{part}'", render_value(node))
        # anything else is a union tag pydantic adds to loc: not a place in the document
    where = tuple(path)
    if kind == "extra_forbidden":
        return Problem(where, f"{format_path(where)}: {_unknown_field(loc)}", render_value(path[-1]), on_key=True)
    if kind in ("union_tag_invalid", "union_tag_not_found") and isinstance(node, dict):
        tag = str(error.get("ctx", {}).get("discriminator", "'model'")).strip("'")
        if kind == "union_tag_not_found":
            return Problem(where, f"{format_path(where)}: missing required field '{tag}'", render_value(node))
        where = (*where, tag)
        expected = error.get("ctx", {}).get("expected_tags", "")
        return Problem(where, f"{format_path(where)}: expected one of {expected}", render_value(node.get(tag)))
    return Problem(where, f"{format_path(where)}: {_message(error, node)}", render_value(node))


def _has(node: object, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _message(error: ErrorDetails, value: object) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "string_type":
        if isinstance(value, int | Decimal | date):
            return "expected a string; quote it to keep it as text"
        return "expected a string"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the allowed values')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} items"
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind]
    return str(error["msg"]).removeprefix("Value error, ")


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    allowed = _allowed_fields(loc[:-1])
    name = str(loc[-1])
    if not allowed:
        return f"unknown field '{name}'"
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown field '{name}'; did you mean '{close[0]}'?"
    return f"unknown field '{name}' (allowed: {', '.join(allowed)})"


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str] | None:
    """The field names of the model at ``loc``, found by walking the catalog's type annotations."""
    current: object = Catalog
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {(info.alias or name): info.annotation for name, info in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part]
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin is dict:
            current = args[1]
        elif origin is list:
            current = args[0]
        elif origin in (typing.Union, types.UnionType):
            current = next((a for a in args if _tag(a) == part), None)
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [(info.alias or name) for name, info in current.model_fields.items()]
    return None


def _unwrap(annotation: object) -> object:
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
        else:
            return annotation


def _tag(candidate: object) -> object:
    if isinstance(candidate, type) and issubclass(candidate, BaseModel) and "model" in candidate.model_fields:
        literal = typing.get_args(candidate.model_fields["model"].annotation)
        return literal[0] if literal else None
    return None
