"""Checks of a plan's invoice-level terms: fixed-amount coupons carried across invoices (``coupons``)
and progressive billing (``progressive_billing``). Pure.

Each amount is money on an invoice, so it must be in the plan's currency (a ``currency`` written beside
it is checked, not converted) and have no more places than that currency's minor unit: a coupon of
``10.005`` USD could never be used up exactly. Coupon ids are unique in the plan and distinct from its
discount ids (both name the invoice line they give, in ``discount_id``). Like ``checks``, this runs on
whatever validated structurally (``None`` marks an entry that did not).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeVar

from pydantic import TypeAdapter, ValidationError

from tollway.currencies import MINOR_UNITS
from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.pricing import Coupon, Currency, ProgressiveBilling
from tollway.plans.schema import Plan, PlanVersion

_T = TypeVar("_T")
_COUPON: Final = TypeAdapter(Coupon)
_PROGRESSIVE: Final = TypeAdapter(ProgressiveBilling)
_CURRENCY: Final = TypeAdapter(Currency)


@dataclass(frozen=True, slots=True)
class InvoicingParts:
    """What the checks need of one plan's pricing, at its list indexes (``None``: did not validate)."""

    currency: str | None = None
    discount_ids: frozenset[str] = frozenset()
    coupons: Sequence[Coupon | None] = ()
    progressive: ProgressiveBilling | None = None

    @classmethod
    def of(cls, plan: Plan | PlanVersion) -> InvoicingParts:
        pricing = plan.pricing
        if pricing is None:
            return cls()
        ids = frozenset(discount.id for discount in pricing.discounts)
        return cls(pricing.currency, ids, pricing.coupons, pricing.progressive_billing)

    @classmethod
    def from_raw(cls, raw: object) -> InvoicingParts:
        """From a plan that did not validate as a whole: each part that validates on its own."""
        plan = raw if isinstance(raw, dict) else {}
        pricing = plan.get("pricing")
        if not isinstance(pricing, dict):
            return cls()
        discounts = pricing.get("discounts")
        ids = (
            frozenset(d["id"] for d in discounts if isinstance(d, dict) and isinstance(d.get("id"), str))
            if isinstance(discounts, list)
            else frozenset()
        )
        coupons = pricing.get("coupons")
        progressive = pricing.get("progressive_billing")
        return cls(
            _valid(_CURRENCY, pricing.get("currency")),
            ids,
            [_valid(_COUPON, item) for item in coupons] if isinstance(coupons, list) else [],
            _valid(_PROGRESSIVE, progressive) if progressive is not None else None,
        )


def _valid(adapter: TypeAdapter[_T], value: object) -> _T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def invoicing_problems(plans: Mapping[str, InvoicingParts], bases: Mapping[str, Path] | None = None) -> list[Problem]:
    """Every problem of the plans' coupons and progressive billing (see the module docstring); ``bases``:
    where a plan's body is written (a plan version: ``plans.<id>.versions[<n>]``)."""
    problems: list[Problem] = []
    for plan_id, parts in plans.items():
        base = (bases or {}).get(plan_id, ("plans", plan_id))
        problems.extend(_plan_problems((*base, "pricing"), parts))
    return problems


def _plan_problems(base: Path, parts: InvoicingParts) -> Iterator[Problem]:
    seen: set[str] = set()
    for index, coupon in enumerate(parts.coupons):
        if coupon is None:
            continue
        at: Path = (*base, "coupons", index)
        if coupon.id in seen:
            yield _problem((*at, "id"), "coupon id used twice in this plan", coupon.id)
        elif coupon.id in parts.discount_ids:
            yield _problem((*at, "id"), "a discount of this plan has this id: give the coupon its own", coupon.id)
        seen.add(coupon.id)
        yield from _money_problems(at, "amount", coupon.amount, coupon.currency, parts.currency, "coupon")
    if parts.progressive is not None:
        progressive = parts.progressive
        at = (*base, "progressive_billing")
        yield from _money_problems(
            at, "threshold", progressive.threshold, progressive.currency, parts.currency, "threshold"
        )


def _money_problems(
    at: Path, field: str, amount: Decimal, currency: str | None, plan_currency: str | None, what: str
) -> Iterator[Problem]:
    if plan_currency is None:  # the plan's own currency is reported where it is written
        return
    if currency is not None and currency != plan_currency:
        yield _problem(
            (*at, "currency"),
            f"the {what} is in {currency} but the plan bills in {plan_currency}: amounts are never converted",
            currency,
        )
    places = MINOR_UNITS.get(plan_currency)
    if places is not None and amount != amount.quantize(Decimal(1).scaleb(-places)):
        unit = f"at most {places} decimal places" if places else "no decimal places"
        yield _problem((*at, field), f"an amount billed in {plan_currency} has {unit}", amount)


def _problem(path: Path, message: str, value: object) -> Problem:
    return Problem(path, f"{format_path(path)}: {message}", render_value(value))
