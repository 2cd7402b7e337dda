"""Which of a plan's charges burn in real time, checked against the catalog and compiled into the limiter's
``credits.charges.RealTimeCharge``, in micro-units of the plan's balance unit. Pure: no I/O, no clock.

A charge *burns in real time* (is priced at admission, by the same atomic call that checks the limits)
when its model prices the period's running quantity exactly request by request (``per_unit``,
``graduated``, ``package``, ``allowance``: an allowance is a graduated charge whose first tier, up to
``included``, is free) and its meter is known when the request is admitted: ``requests`` (1 per request)
or ``cost`` (the route's cost weight). Everything else settles at invoice: flat fees, volume tiers
(their price depends on the period's final quantity), minimum commitments, discounts, charges over
meters known only later (request or response bytes, response fields), and charges using an option known
only at the period's end or finer than a unit (``minimum_amount``, ``maximum_amount``,
``flat_fee_at_zero``, a fractional tier bound: ``_period_end_option``).

Reservations: a prepaid plan's ``prepaid.reserve`` gives, per meter known only after the response
(``response_bytes``, ``response_json``), the quantity a request reserves at admission. A charge over such
a meter then burns in real time: admission prices and burns the reserve like any quantity and records a
reservation keyed by the usage row id; the response settles it with the actual quantity
(``ratelimit.money``, docs/credits.md#reservations).

Which charges burn:

* a **prepaid** plan: ``prepaid.charges`` (default: every charge of the plan that can burn in real time),
  priced in ``prepaid.unit`` (the plan's currency, or a credit unit worth the plan's currency) and burned
  from the customer's balance; the other charges are billed on the invoice as usual;
* a **postpaid** plan with a ``spend_cap``: every charge of the plan that can burn in real time, priced
  in the plan's currency and counted against the cap.

A spend cap is written in the plan's currency; the limiter compares it with prices in the balance unit,
so it is compiled to micro-units of that unit: the currency's for a postpaid plan (exact: the amount
has at most the currency's places), and ``amount / value`` of the credit unit, rounded *down* to a
micro-unit, for a plan prepaid in credits (the cap is never exceeded).
"""

from __future__ import annotations

import decimal
import difflib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Final, Literal

from tollway.credits.charges import RealTimeCharge, TierMicros
from tollway.credits.units import MAX_AMOUNT, MICROS, AmountError, BalanceUnit, from_micros, to_micros
from tollway.currencies import MINOR_UNITS
from tollway.plans.errors import Path, Problem, format_path, render_value
from tollway.plans.money import CreditUnit, Prepaid, SpendCap
from tollway.plans.pricing import (
    AllowanceCharge,
    Charge,
    FlatCharge,
    GraduatedCharge,
    PackageCharge,
    PerUnitCharge,
    Pricing,
    VolumeCharge,
)

if TYPE_CHECKING:
    from tollway.plans.schema import Catalog, Plan, PlanVersion
    from tollway.ratelimit.money import Money

REALTIME_MODELS: Final = ("per_unit", "graduated", "package", "allowance")
ADMISSION_UNITS: Final = frozenset({"requests", "cost"})
"""Meter units whose quantity is known when a request is admitted (the only ones that burn then)."""
AFTER_RESPONSE_UNITS: Final = frozenset({"response_bytes", "response_json"})

RealTimeModelCharge = PerUnitCharge | GraduatedCharge | PackageCharge | AllowanceCharge
_CURRENCY_CODE: Final = re.compile(r"[A-Z]{3}")
_EXACT: Final = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero])
_FLOOR: Final = decimal.Context(prec=80, rounding=ROUND_FLOOR, traps=[decimal.InvalidOperation])


# --- classification ----------------------------------------------------------------------------------


def not_real_time(
    charge: Charge, meter_units: Mapping[str, str | None], reserved: Collection[str] = frozenset()
) -> str | None:
    """Why ``charge`` cannot burn at admission (None: it can). A charge whose meter is unknown or invalid
    gives ``""``: it is reported where it is written, and neither burns nor is an error here. ``reserved``:
    the meters known only after the response that the plan reserves (their charges burn by reservation)."""
    if isinstance(charge, FlatCharge):
        return "a flat fee is billed once per period on the invoice, not per request"
    if isinstance(charge, VolumeCharge):
        return "a volume charge's unit price depends on the period's final quantity, so it settles at invoice"
    option = _period_end_option(charge)
    if option:
        return option
    unit = meter_units.get(charge.meter)
    if unit is None:
        return ""
    if unit in AFTER_RESPONSE_UNITS:
        if charge.meter in reserved:
            return None
        return (
            f"its meter '{charge.meter}' ({unit}) is known only after the response, so it cannot burn at admission "
            f"without a reserve (prepaid.reserve: {{{charge.meter}: <quantity>}})"
        )
    if unit not in ADMISSION_UNITS:
        return f"its meter '{charge.meter}' ({unit}) does not burn at admission: only `requests` and `cost` meters do"
    return None


def _period_end_option(charge: RealTimeModelCharge) -> str | None:
    """Why a per-charge option keeps an otherwise real-time charge from burning at admission (None: none
    does). The limiter burns each request's marginal price in whole units of ``requests`` or ``cost``:
    a fractional tier bound falls inside a unit, and a minimum, a maximum or a flat fee due at zero usage
    is known only when the period ends. Such a charge settles at invoice."""
    if charge.minimum_amount is not None or charge.maximum_amount is not None:
        return "its minimum_amount or maximum_amount is known only at the period's end, so it settles at invoice"
    if isinstance(charge, GraduatedCharge):
        if charge.flat_fee_at_zero:
            return "flat_fee_at_zero bills the first tier's flat fee with no request to burn it: it settles at invoice"
        for index, tier in enumerate(charge.tiers):
            if tier.up_to is not None and tier.up_to != int(tier.up_to):
                return (
                    f"tiers[{index}].up_to {_plain(Decimal(tier.up_to))} is not a whole number: requests burn whole "
                    "units at admission, so a fractional tier bound settles at invoice"
                )
    return None


def _whole(bound: int | Decimal | None) -> int | None:
    """A tier bound as the limiter's integer (``not_real_time`` refuses fractional bounds)."""
    if bound is None:
        return None
    if bound != int(bound):
        raise AmountError(f"tier bound {bound} is not a whole number: it cannot burn in real time")
    return int(bound)


def _prices(charge: RealTimeModelCharge) -> Iterator[tuple[Path, Decimal]]:
    """Every amount of a real-time charge, with its path inside the charge."""
    if isinstance(charge, PerUnitCharge):
        yield ("unit_amount",), charge.unit_amount
    elif isinstance(charge, GraduatedCharge):
        for index, tier in enumerate(charge.tiers):
            yield ("tiers", index, "unit_amount"), tier.unit_amount
            yield ("tiers", index, "flat_amount"), tier.flat_amount
    elif isinstance(charge, PackageCharge):
        yield ("package_amount",), charge.package_amount
    else:
        yield ("overage_unit_amount",), charge.overage_unit_amount


def price_micros(price: Decimal, unit: BalanceUnit) -> int:
    """A price in the unit's currency as micro-units of ``unit``, exactly (``BalanceUnit.from_currency``
    in a context where any rounding raises). AmountError if it is not a whole number of micro-units or
    is above ``MAX_AMOUNT`` units."""
    try:
        with decimal.localcontext(_EXACT):
            converted = unit.from_currency(price)
            micros = to_micros(converted)
    except (decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero):
        raise AmountError(f"{price} {unit.currency} is not a whole number of micro-units of {unit.code}") from None
    if micros > to_micros(MAX_AMOUNT):
        raise AmountError(f"{converted} {unit.code} is above the largest amount, {MAX_AMOUNT}")
    return micros


def cap_micros(amount: Decimal, unit: BalanceUnit) -> int:
    """A spend cap in the unit's currency as micro-units of ``unit``, rounded down."""
    with decimal.localcontext(_FLOOR):
        return int((amount * MICROS / unit.value).to_integral_value())


def currency_unit(currency: str) -> BalanceUnit:
    return BalanceUnit(currency, MINOR_UNITS[currency], currency)


def credit_balance_unit(name: str, credit: CreditUnit) -> BalanceUnit:
    return BalanceUnit(name, credit.decimals, credit.currency, credit.value)


def real_time_charge(
    charge: RealTimeModelCharge, unit: BalanceUnit, period_start_ms: int, period_end_ms: int
) -> RealTimeCharge:
    """The catalog charge as the limiter prices it over ``[period_start_ms, period_end_ms)``, in micro-units
    of ``unit``. ``allowance``: graduated with a free first tier up to ``included`` (per unit when 0 are
    included). AmountError for a price that is not exact in micro-units (the catalog checks refuse those)."""
    name, start, end = charge.id, period_start_ms, period_end_ms
    if isinstance(charge, PerUnitCharge):
        return RealTimeCharge(name, "per_unit", start, end, unit=price_micros(charge.unit_amount, unit))
    if isinstance(charge, GraduatedCharge):
        tiers = tuple(
            TierMicros(_whole(t.up_to), price_micros(t.unit_amount, unit), price_micros(t.flat_amount, unit))
            for t in charge.tiers
        )
        return RealTimeCharge(name, "graduated", start, end, tiers=tiers)
    if isinstance(charge, PackageCharge):
        return RealTimeCharge(
            name,
            "package",
            start,
            end,
            package_size=charge.package_size,
            package=price_micros(charge.package_amount, unit),
            free_units=charge.free_units,
            round_up=charge.rounding == "up",
        )
    overage = price_micros(charge.overage_unit_amount, unit)
    if charge.included == 0:
        return RealTimeCharge(name, "per_unit", start, end, unit=overage)
    tiers = (TierMicros(charge.included, 0), TierMicros(None, overage))
    return RealTimeCharge(name, "graduated", start, end, tiers=tiers)


# --- checks ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoneyParts:
    """The money parts of a plan that validated on their own (``None`` where one did not or is absent).
    ``has_pricing``: the plan writes ``pricing`` (valid or not); ``currency``: its currency if valid;
    ``charge_ids``: the ids of all its charges, valid or not."""

    prepaid: Prepaid | None = None
    spend_cap: SpendCap | None = None
    has_pricing: bool = False
    currency: str | None = None
    charges: Sequence[Charge | None] = ()
    charge_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, plan: Plan | PlanVersion) -> MoneyParts:
        pricing = plan.pricing
        if pricing is None:
            return cls(plan.prepaid, plan.spend_cap)
        ids = frozenset(c.id for c in pricing.charges)
        return cls(plan.prepaid, plan.spend_cap, True, pricing.currency, pricing.charges, ids)


def _problem(path: Path, message: str, value: object) -> Problem:
    shown: str | None = None
    if isinstance(value, Decimal):
        shown = _plain(value)
    elif value is not None:
        shown = render_value(value)
    return Problem(path, f"{format_path(path)}: {message}", shown)


def money_problems(
    credit_units: Mapping[str, CreditUnit | None],
    meter_units: Mapping[str, str | None],
    plans: Mapping[str, MoneyParts],
    bases: Mapping[str, Path] | None = None,
) -> list[Problem]:
    """Cross-object problems of prepaid plans and spend caps. ``credit_units`` and ``meter_units`` name
    every defined credit unit and meter (``None``: one that did not validate: it exists, but is not
    checked against)."""
    problems: list[Problem] = []
    for plan_id, parts in plans.items():
        base = (bases or {}).get(plan_id, ("plans", plan_id))  # a plan version: plans.<id>.versions[<n>]
        _plan_money_problems(problems, base, parts, credit_units, meter_units)
    return problems


def _plan_money_problems(
    out: list[Problem],
    base: Path,
    parts: MoneyParts,
    credit_units: Mapping[str, CreditUnit | None],
    meter_units: Mapping[str, str | None],
) -> None:
    prepaid, cap = parts.prepaid, parts.spend_cap
    if prepaid is None and cap is None:
        return
    if not parts.has_pricing:
        if prepaid is not None:
            message = "a prepaid plan needs `pricing`: its charges are what the balance pays for"
            out.append(_problem((*base, "prepaid"), message, None))
        if cap is not None:
            message = "a spend cap needs `pricing`: it caps the plan's charges, in the plan's currency"
            out.append(_problem((*base, "spend_cap"), message, None))
        return
    currency = parts.currency
    if currency is None:
        return  # reported where it is written
    unit: BalanceUnit | None = currency_unit(currency)
    if prepaid is not None:
        unit = _balance_unit(out, (*base, "prepaid", "unit"), prepaid.unit, currency, credit_units)
    reserved: frozenset[str] = frozenset()
    if prepaid is not None and prepaid.reserve is not None:
        reserved = _reserve_problems(out, (*base, "prepaid", "reserve"), prepaid.reserve, meter_units)
    if prepaid is not None and prepaid.charges is not None:
        burning = _listed(out, (*base, "prepaid", "charges"), prepaid.charges, parts, meter_units, reserved)
    else:
        burning = _default_burning(parts.charges, meter_units, reserved)
    if cap is not None:
        _cap_problems(out, (*base, "spend_cap", "amount"), cap.amount, currency, unit)
    if unit is None:
        return
    if prepaid is not None and prepaid.alerts is not None:
        for index, amount in enumerate(prepaid.alerts):
            if _places(amount) > unit.decimals:
                message = f"a balance alert is an amount of {unit.code}, which has {unit.decimals} decimal places"
                out.append(_problem((*base, "prepaid", "alerts", index), message, amount))
    for index, charge in burning:
        for where, price in _prices(charge):
            why = _price_problem(charge.id, price, unit)
            if why is not None:
                out.append(_problem((*base, "pricing", "charges", index, *where), why, price))


def _price_problem(charge_id: str, price: Decimal, unit: BalanceUnit) -> str | None:
    """Why a price of a real-time charge cannot burn in micro-units of ``unit`` (None: it can)."""
    try:
        price_micros(price, unit)
    except AmountError:
        pass
    else:
        return None
    with decimal.localcontext(decimal.Context(prec=40)):
        converted = price / unit.value
    shown = f"{_plain(price)} {unit.currency}"
    if not unit.is_currency:
        shown += f" = {_plain(converted, 12)} {unit.code}"
    if converted > MAX_AMOUNT:
        return f"charge '{charge_id}' burns in real time, and {shown} is more than the largest amount, {MAX_AMOUNT}"
    return (
        f"charge '{charge_id}' burns in real time, in micro-units (0.000001) of {unit.code}: "
        f"{shown} is not a whole number of them"
    )


def _places(amount: Decimal) -> int:
    exponent = amount.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _plain(amount: Decimal, digits: int | None = None) -> str:
    """``amount`` without an exponent (``0.0000001``, not ``1E-7``), to ``digits`` significant digits."""
    if digits is not None:
        with decimal.localcontext(decimal.Context(prec=digits)):
            amount = +amount
    return format(amount.normalize(), "f")


def _balance_unit(
    out: list[Problem], at: Path, name: str, currency: str, credit_units: Mapping[str, CreditUnit | None]
) -> BalanceUnit | None:
    """The balance unit a prepaid plan names, or None (a problem recorded, or an invalid credit unit)."""
    if name == currency:
        return currency_unit(currency)
    if name in credit_units:
        credit = credit_units[name]
        if credit is None:
            return None
        if credit.currency == currency:
            return credit_balance_unit(name, credit)
        message = (
            f"credit unit '{name}' is worth {credit.currency}, but the plan is priced in {currency}: "
            f"its balance must be in {currency} or a credit unit worth {currency}"
        )
    elif _CURRENCY_CODE.fullmatch(name):
        message = f"the plan is priced in {currency}: its balance must be in {currency} or a credit unit worth it"
    else:
        close = difflib.get_close_matches(name, list(credit_units), n=1)
        known = ", ".join(sorted(credit_units)) or "none defined"
        hint = f"; did you mean '{close[0]}'?" if close else f" (credit units: {known})"
        message = f"unknown unit '{name}': use the plan's currency {currency} or a credit unit{hint}"
    out.append(_problem(at, message, name))
    return None


def _reserve_problems(
    out: list[Problem], base: Path, reserve: Mapping[str, int], meter_units: Mapping[str, str | None]
) -> frozenset[str]:
    """The meters of ``prepaid.reserve`` that may be reserved; a problem for each unknown meter and each
    meter whose quantity is known at admission (nothing to reserve: its charges burn as they are)."""
    ok: set[str] = set()
    for meter in reserve:
        at: Path = (*base, meter)
        if meter not in meter_units:
            close = difflib.get_close_matches(meter, list(meter_units), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            out.append(_problem(at, f"unknown meter '{meter}'{hint}", meter))
            continue
        unit = meter_units[meter]
        if unit is None:
            continue  # the meter is invalid: reported where it is written
        if unit not in AFTER_RESPONSE_UNITS:
            known = "is known at admission" if unit in ADMISSION_UNITS else "is not known from the response"
            units = ", ".join(sorted(AFTER_RESPONSE_UNITS))
            message = (
                f"a reserve applies only to meters known after the response ({units}); meter '{meter}' ({unit}) {known}"
            )
            out.append(_problem(at, message, reserve[meter]))
            continue
        ok.add(meter)
    return frozenset(ok)


def _default_burning(
    charges: Sequence[Charge | None], meter_units: Mapping[str, str | None], reserved: Collection[str] = frozenset()
) -> list[tuple[int, RealTimeModelCharge]]:
    """Every valid charge that can burn at admission (or by reservation), with its index."""
    return [
        (i, c)
        for i, c in enumerate(charges)
        if isinstance(c, RealTimeModelCharge) and not_real_time(c, meter_units, reserved) is None
    ]


def _listed(
    out: list[Problem],
    base: Path,
    listed: Sequence[str],
    parts: MoneyParts,
    meter_units: Mapping[str, str | None],
    reserved: Collection[str] = frozenset(),
) -> list[tuple[int, RealTimeModelCharge]]:
    """The valid charges ``prepaid.charges`` lists; a problem for each unknown, repeated or non-real-time one."""
    by_id = {c.id: (i, c) for i, c in enumerate(parts.charges) if c is not None}
    seen: set[str] = set()
    burning: list[tuple[int, RealTimeModelCharge]] = []
    for index, charge_id in enumerate(listed):
        at: Path = (*base, index)
        if charge_id not in parts.charge_ids:
            close = difflib.get_close_matches(charge_id, list(parts.charge_ids), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (charges: {', '.join(sorted(parts.charge_ids))})"
            out.append(_problem(at, f"unknown charge '{charge_id}': name a charge of this plan{hint}", charge_id))
            continue
        if charge_id in seen:
            out.append(_problem(at, "charge listed twice", charge_id))
            continue
        seen.add(charge_id)
        if charge_id not in by_id:
            continue  # the charge is invalid: reported where it is written
        charge_index, charge = by_id[charge_id]
        reason = not_real_time(charge, meter_units, reserved)
        if reason:
            real_time = ", ".join(REALTIME_MODELS)
            message = f"charge '{charge_id}' cannot burn in real time: {reason} (real-time models: {real_time})"
            out.append(_problem(at, message, charge_id))
        elif reason is None and isinstance(charge, RealTimeModelCharge):
            burning.append((charge_index, charge))
    return burning


def _cap_problems(out: list[Problem], at: Path, amount: Decimal, currency: str, unit: BalanceUnit | None) -> None:
    places = MINOR_UNITS[currency]
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        plural = "s" if places != 1 else ""
        message = f"{currency} has {places} decimal place{plural}: a spend cap is a whole number of its minor unit"
        out.append(_problem(at, message, amount))
    elif unit is not None and not unit.is_currency and cap_micros(amount, unit) > to_micros(MAX_AMOUNT):
        message = (
            f"is more than {MAX_AMOUNT} {unit.code} ({unit.value} {currency} each), the largest amount a balance holds"
        )
        out.append(_problem(at, message, amount))


# --- compiled ----------------------------------------------------------------------------------------

QuantityKind = Literal["requests", "cost", "reserve"]


@dataclass(frozen=True, slots=True)
class BurningCharge:
    """A charge that burns at admission. ``per``: what one request adds (1, the route's cost weight, or
    ``reserve``: the plan's reserve for the meter, settled after the response);
    ``features``: the only features whose requests add to its meter (None: every feature);
    ``prototype``: the compiled charge over a placeholder period."""

    charge_id: str
    model: str
    meter: str
    per: QuantityKind
    features: frozenset[str] | None
    prototype: RealTimeCharge
    reserve: int = 0

    def quantity(self, feature: str, route_cost: int) -> int:
        """What one request of ``feature`` on a route of cost ``route_cost`` adds to the charge's quantity
        at admission (a reserved charge: its reserve)."""
        if self.features is not None and feature not in self.features:
            return 0
        if self.per == "reserve":
            return self.reserve
        return 1 if self.per == "requests" else route_cost

    def over(self, period_ms: tuple[int, int]) -> RealTimeCharge:
        return replace(self.prototype, period_start_ms=period_ms[0], period_end_ms=period_ms[1])


@dataclass(frozen=True, slots=True)
class PlanMoney:
    """A prepaid or spend-capped plan, compiled. ``unit``: the balance unit (the currency for a postpaid
    plan); ``overrun``: how far settlements may take the balance below 0 (micro-units of ``unit``);
    ``cap``: the spend cap per billing period in micro-units of ``unit`` (None: no cap);
    ``settled_at_invoice``: (what, why) for each part of the plan's pricing that does not burn."""

    plan_id: str
    unit: BalanceUnit
    prepaid: bool
    overrun: int
    cap: int | None
    cap_soft: bool
    cap_amount: Decimal | None
    burning: tuple[BurningCharge, ...]
    settled_at_invoice: tuple[tuple[str, str], ...]
    low_alerts: tuple[int, ...] = ()
    """``prepaid.alerts`` in micro-units of ``unit``, ascending (``balance.low`` thresholds)."""

    def money(self, feature: str, period_ms: tuple[int, int], route_cost: int) -> Money:
        """The money part of one request's check: the charges it adds to (those it adds 0 to are left
        out) with their quantities, the balance (prepaid) and the spend cap, over ``period_ms``."""
        from tollway.ratelimit.money import (
            Money,
            MoneyAlerts,
            SpendCap,
        )  # the dataclasses only; keeps redis out of plans

        charges: list[RealTimeCharge] = []
        quantities: list[int] = []
        reserved: list[bool] = []
        for charge in self.burning:
            quantity = charge.quantity(feature, route_cost)
            if quantity > 0:
                charges.append(charge.over(period_ms))
                quantities.append(quantity)
                reserved.append(charge.per == "reserve")
        cap = None
        if self.cap is not None:
            cap = SpendCap(self.cap, period_ms[0], period_ms[1], hard=not self.cap_soft)
        balance_start = period_ms[0] if self.prepaid else None
        alerts = MoneyAlerts(self.unit.code, self.low_alerts)
        if not any(reserved):
            return Money(tuple(charges), tuple(quantities), balance_start, cap, alerts=alerts)
        return Money(
            tuple(charges), tuple(quantities), balance_start, cap, tuple(reserved), self.overrun, alerts=alerts
        )


def compile_plan_money(plan_id: str, plan: Plan, catalog: Catalog) -> PlanMoney | None:
    """The real-time money of a checked catalog's plan (None: neither prepaid nor spend-capped). Raises
    ValueError (AmountError) only for a catalog the checks would refuse."""
    pricing = plan.pricing
    if (plan.prepaid is None and plan.spend_cap is None) or pricing is None:
        return None
    meter_units: dict[str, str | None] = {name: m.unit for name, m in catalog.meters.items()}
    unit = currency_unit(pricing.currency)
    if plan.prepaid is not None and plan.prepaid.unit != pricing.currency:
        unit = credit_balance_unit(plan.prepaid.unit, catalog.credit_units[plan.prepaid.unit])
    listed = plan.prepaid.charges if plan.prepaid is not None else None
    reserve: dict[str, int] = dict(plan.prepaid.reserve or {}) if plan.prepaid is not None else {}
    burning: list[BurningCharge] = []
    for charge in pricing.charges:
        if not isinstance(charge, RealTimeModelCharge) or not_real_time(charge, meter_units, reserve) is not None:
            continue
        if listed is not None and charge.id not in listed:
            continue
        meter = catalog.meters[charge.meter]
        per: QuantityKind = "requests" if meter.unit == "requests" else "cost"
        if meter.unit in AFTER_RESPONSE_UNITS:
            per = "reserve"
        features = frozenset(meter.features) if meter.features is not None else None
        prototype = real_time_charge(charge, unit, 0, 1)
        burning.append(
            BurningCharge(charge.id, charge.model, charge.meter, per, features, prototype, reserve.get(charge.meter, 0))
        )
    names = {b.charge_id for b in burning}
    cap = plan.spend_cap
    return PlanMoney(
        plan_id,
        unit,
        plan.prepaid is not None,
        to_micros(plan.prepaid.overrun) if plan.prepaid is not None else 0,
        cap_micros(cap.amount, unit) if cap is not None else None,
        cap.soft if cap is not None else False,
        cap.amount if cap is not None else None,
        tuple(burning),
        _settled_at_invoice(pricing, names, meter_units, listed is not None, reserve),
        tuple(sorted({to_micros(a) for a in (plan.prepaid.alerts or ())})) if plan.prepaid is not None else (),
    )


def _settled_at_invoice(
    pricing: Pricing,
    burning: set[str],
    meter_units: Mapping[str, str | None],
    listed: bool,
    reserved: Collection[str] = frozenset(),
) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for charge in pricing.charges:
        if charge.id in burning:
            continue
        reason = not_real_time(charge, meter_units, reserved)
        if reason:
            out.append((f"{charge.id} ({charge.model})", reason))
        elif listed:
            out.append((f"{charge.id} ({charge.model})", "not in prepaid.charges: billed postpaid"))
    if pricing.minimum_commitment is not None:
        out.append((f"minimum commitment {pricing.minimum_commitment} {pricing.currency}", "known at period end"))
    for discount in pricing.discounts:
        off = f"{discount.percent}%" if discount.percent is not None else f"{discount.amount} {pricing.currency}"
        out.append((f"discount {discount.id} ({off} off {discount.applies_to})", "applied on the invoice"))
    return tuple(out)


def explain(money: PlanMoney) -> list[str]:
    """A short human-readable account of which charges burn in real time and which settle at invoice."""
    unit = money.unit
    if money.prepaid:
        worth = "" if unit.is_currency else f" (worth {unit.value} {unit.currency} each)"
        head = f"prepaid in {unit.code}{worth}"
        if money.overrun:
            head += f", overrun up to {_amount(money.overrun)} {unit.code}"
    else:
        head = "postpaid"
    if money.cap_amount is not None:
        kind = "soft" if money.cap_soft else "hard"
        head += f"; spend cap {money.cap_amount} {unit.currency} per period ({kind})"
        if not unit.is_currency and money.cap is not None:
            head += f" = {_amount(money.cap)} {unit.code}"
    lines = [f"  plan {money.plan_id}: {head}"]
    lines.append("    burns in real time:" if money.burning else "    burns in real time: nothing")
    for charge in money.burning:
        if charge.per == "reserve":
            per = f"reserves {charge.reserve} per request, settled with the actual quantity after the response"
        else:
            per = "1 per request" if charge.per == "requests" else "the route's cost per request"
        only = f", only for {', '.join(sorted(charge.features))}" if charge.features is not None else ""
        lines.append(f"      {charge.charge_id} ({charge.model}): {charge.meter}, {per}{only}")
    if money.settled_at_invoice:
        lines.append("    settles at invoice:")
        lines.extend(f"      {what}: {why}" for what, why in money.settled_at_invoice)
    return lines


def _amount(micros: int) -> str:
    return str(from_micros(micros))
