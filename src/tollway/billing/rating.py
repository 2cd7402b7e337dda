"""Rating: a plan's pricing and the period's quantity per meter → an ``InvoiceDraft`` (lines and total).

The order of the lines, and of the arithmetic:

1. one line per charge, in catalog order, each followed by the discounts on that charge;
2. the minimum-commitment true-up, when the subtotal so far is below the (prorated) minimum;
3. the discounts on the whole invoice, in catalog order.

Every line is rounded once to the currency's minor unit (``money.round_line``, half to even, or half up
when the plan's ``pricing.rounding`` says so) and the total is the sum of the rounded lines. Meters the
pricing does not charge for are ignored here (the billing job passes every meter it aggregated);
``tollway.billing.quote`` is the strict entry point for typed-in usage. Pure: no I/O, no clock.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from tollway.billing import discounts, minimum
from tollway.billing.charges import FULL_PERIOD, ChargeResult, PeriodContext, Timing, price_charge
from tollway.billing.errors import AmountOutOfRange
from tollway.billing.money import EXACT_DIGITS, exact, format_amount, format_decimal, minor_unit, round_line
from tollway.billing.quantity import check_quantity
from tollway.plans.pricing import INVOICE, Charge, Discount, FlatCharge, Pricing, RoundingMode

LineKind = Literal["charge", "minimum", "discount", "credits", "spend_cap"]
"""``credits`` and ``spend_cap`` lines are added to a draft by ``billing.prepaid.settle``, never by ``rate``."""
MINIMUM_LINE: Final = "minimum_commitment"
"""``charge_id`` of the true-up line (its ``kind`` is ``minimum``, so it cannot be mistaken for a charge)."""


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One rounded line. ``charge_id``: the charge (``kind`` charge), the discounted charge or ``invoice``
    (``kind`` discount, with ``discount_id``), or ``minimum_commitment`` (``kind`` minimum). ``quantity``
    is the usage (a flat fee: the period fraction); None for minimum and discount lines. ``amount`` is
    rounded to the currency (negative for a discount); ``breakdown`` shows the exact arithmetic."""

    kind: LineKind
    charge_id: str
    description: str
    quantity: Decimal | None
    amount: Decimal
    breakdown: tuple[str, ...]
    meter: str | None = None
    discount_id: str | None = None
    timing: Timing = "in_arrears"


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    """A priced period for one plan: the lines in order and their sum. Not yet an invoice (no customer,
    no number, no dates): ``tollway quote`` prints it and the billing job wraps it."""

    plan_id: str
    currency: str
    period: PeriodContext
    lines: tuple[InvoiceLine, ...]
    total: Decimal

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every number a decimal string (amounts with the currency's places)."""
        return {
            "plan": self.plan_id,
            "currency": self.currency,
            "period": {"fraction": format_decimal(self.period.fraction), "index": self.period.index},
            "lines": [
                {
                    "kind": line.kind,
                    "charge_id": line.charge_id,
                    "discount_id": line.discount_id,
                    "meter": line.meter,
                    "description": line.description,
                    "quantity": None if line.quantity is None else format_decimal(line.quantity),
                    "amount": format_amount(line.amount, self.currency),
                    "timing": line.timing,
                    "breakdown": list(line.breakdown),
                }
                for line in self.lines
            ],
            "total": format_amount(self.total, self.currency),
        }


def rate(
    plan_id: str, pricing: Pricing, quantities: Mapping[str, Decimal], period: PeriodContext = FULL_PERIOD
) -> InvoiceDraft:
    """Price the period's usage (``quantities``: meter → quantity; a priced meter absent counts as 0).

    Raises ``UnknownCurrency``, ``InvalidQuantity`` (a float, a negative, ...), ``AmountOutOfRange``."""
    currency = pricing.currency
    minor_unit(currency)  # fail early on an unknown currency
    try:
        with exact():
            lines = _lines(pricing, quantities, period)
            total = sum((line.amount for line in lines), round_line(Decimal(0), currency))
    except decimal.DecimalException as exc:
        raise AmountOutOfRange(
            f"plan {plan_id!r}: an amount needs more than {EXACT_DIGITS} digits to be exact ({type(exc).__name__})"
        ) from None
    return InvoiceDraft(plan_id, currency, period, tuple(lines), total)


def _lines(pricing: Pricing, quantities: Mapping[str, Decimal], period: PeriodContext) -> list[InvoiceLine]:
    """The lines in order; called inside ``money.exact()``, so every sum and difference is exact."""
    currency = pricing.currency
    mode = pricing.effective_rounding
    zero = round_line(Decimal(0), currency)  # 0.00 in USD: sums keep the currency's places
    lines: list[InvoiceLine] = []
    for charge in pricing.charges:
        quantity = Decimal(0) if isinstance(charge, FlatCharge) else _quantity(quantities, charge.meter)
        line = _charge_line(charge, price_charge(charge, quantity, period), currency, mode)
        lines.append(line)
        remaining = line.amount
        for discount in pricing.discounts:
            if discount.applies_to == charge.id and discounts.active(discount, period):
                off = discounts.amount_off(discount, remaining, currency, mode)
                lines.append(_discount_line(discount, off, remaining, line.timing))
                remaining -= off
    if pricing.minimum_commitment is not None:
        subtotal = sum((line.amount for line in lines), zero)
        shortfall = minimum.true_up(pricing.minimum_commitment, subtotal, period)
        amount = round_line(shortfall.amount, currency, mode)
        if amount > 0:
            steps = tuple(str(step) for step in shortfall.breakdown)
            description = f"minimum commitment {format_decimal(pricing.minimum_commitment)}: true-up"
            lines.append(InvoiceLine("minimum", MINIMUM_LINE, description, None, amount, steps))
    for discount in pricing.discounts:
        if discount.applies_to == INVOICE and discounts.active(discount, period):
            remaining = sum((line.amount for line in lines), zero)
            off = discounts.amount_off(discount, remaining, currency, mode)
            lines.append(_discount_line(discount, off, remaining))
    return lines


def _quantity(quantities: Mapping[str, Decimal], meter: str) -> Decimal:
    return check_quantity(quantities.get(meter, Decimal(0)), f"quantity of meter {meter!r}")


def _charge_line(charge: Charge, result: ChargeResult, currency: str, mode: RoundingMode) -> InvoiceLine:
    meter = None if isinstance(charge, FlatCharge) else charge.meter
    model = charge.model.replace("_", "-")
    about = model if meter is None else f"{model}, {meter}"
    description = f"{charge.display_name or charge.id} ({about})"
    return InvoiceLine(
        "charge",
        charge.id,
        description,
        result.quantity,
        round_line(result.amount, currency, mode),
        tuple(str(step) for step in result.breakdown),
        meter,
        timing=result.timing,
    )


def _discount_line(discount: Discount, off: Decimal, remaining: Decimal, timing: Timing = "in_arrears") -> InvoiceLine:
    """``off`` (≥ 0, rounded) taken from ``remaining``: the line's amount is ``-off`` (never ``-0``). A
    discount on a charge is billed with it (``timing``); one on the invoice, with the invoice."""
    explained = (discounts.explain(discount, remaining, off),)
    amount = -off if off else off
    target = discount.applies_to
    description = discounts.describe(discount)
    return InvoiceLine("discount", target, description, None, amount, explained, None, discount.id, timing)
