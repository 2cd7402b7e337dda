"""Discounts: a percentage or a fixed amount off one charge or the whole invoice, possibly for a limited
number of periods (a coupon).

* ``applies_to: <charge id>`` takes the discount off that charge's line; ``applies_to: invoice`` off the
  running total after the minimum-commitment true-up.
* Several discounts on the same target apply one after another, in catalog order, each to what the
  earlier ones left (two 50 % discounts leave 25 %).
* A fixed amount never takes off more than is left: a line or invoice never goes below zero.
* A coupon with ``periods: N`` applies in the subscription's first N periods (``index < N``); without
  ``periods`` it applies forever.

The amount off is rounded once to the currency's minor unit, like every line.
"""

from __future__ import annotations

from decimal import Decimal

from tollway.billing.charges.result import PeriodContext
from tollway.billing.money import exact, format_decimal, round_line
from tollway.plans.pricing import DEFAULT_ROUNDING, INVOICE, Discount, RoundingMode


def active(discount: Discount, period: PeriodContext) -> bool:
    """Whether the discount applies in this period: always, or while ``period.index < discount.periods``."""
    return discount.periods is None or period.index < discount.periods


def amount_off(
    discount: Discount, remaining: Decimal, currency: str, rounding: RoundingMode = DEFAULT_ROUNDING
) -> Decimal:
    """What the discount takes off ``remaining`` (a rounded amount ≥ 0), rounded to ``currency`` (by the
    plan's ``rounding``); at most ``remaining``, so the result is never negative."""
    remaining = max(Decimal(0), remaining)
    with exact():
        if discount.percent is not None:
            off = remaining * discount.percent / 100
        else:
            assert discount.amount is not None  # the schema requires exactly one of percent and amount
            off = discount.amount
    # The one rounding is of ``off``; the outer round_line only pads a capped, already rounded
    # ``remaining`` to the currency's places (0 → 0.00) and cannot change its value.
    return round_line(min(round_line(off, currency, rounding), remaining), currency)


def describe(discount: Discount) -> str:
    """``launch: 20% off the invoice, periods 1–3``, ``multi-year: 2400.00 off platform``."""
    size = _size(discount)
    target = "the invoice" if discount.applies_to == INVOICE else discount.applies_to
    lasting = f", periods 1–{discount.periods}" if discount.periods is not None else ""
    return f"{discount.id}: {size} off {target}{lasting}"


def explain(discount: Discount, remaining: Decimal, off: Decimal) -> str:
    """The arithmetic of one application: ``20% × 49.00 = 9.80``, ``2400.00 off 1000.00: capped at 1000.00``."""
    if discount.percent is not None:
        return f"{_size(discount)} × {format_decimal(remaining)} = {format_decimal(off)}"
    text = f"{_size(discount)} off {format_decimal(remaining)}"
    return text if discount.amount == off else f"{text}: capped at {format_decimal(off)}"


def _size(discount: Discount) -> str:
    if discount.percent is not None:
        return f"{format_decimal(discount.percent)}%"
    assert discount.amount is not None  # the schema requires exactly one of percent and amount
    return format_decimal(discount.amount)
