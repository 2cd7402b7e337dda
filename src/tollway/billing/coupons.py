"""Fixed-amount coupons carried across invoices, and the credit a period's invoice gives for its interim
invoices (docs/billing.md, "Coupons carried across invoices" and "Progressive billing").

**Coupons** (``pricing.coupons``): each subscriber of the plan has ``amount`` to use up. Every invoice
built for the customer (the period's invoice or an interim one) takes, coupon by coupon in catalog
order, as much of what is left as its amount due allows (never below zero); the rest carries to the
next invoice. What is left is **not stored anywhere**: it is the coupon's amount minus the ``coupon``
lines of that id on the customer's *finalized* invoices (``used_before``). A finalized invoice never
changes and is written in one row (``invoice_store.save``), so finalizing twice, or re-running after a
crash, can neither use a coupon twice nor lose what it used: the lines are the ledger. A draft shows
what the coupon would take if it were finalized now. With ``periods: N`` the coupon is used only in
the subscription's first N periods (``index < N``); what is left then expires (no line).

**Interim credits**: the period's invoice (and each later interim invoice) takes off what every earlier
interim invoice of the same period billed before its coupons (its ``subtotal``), one line each.

Amounts are already in the currency's minor unit (the catalog checks a coupon's places), so nothing
here rounds. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from tollway.billing.money import format_amount
from tollway.plans.pricing import INVOICE, Coupon

COUPON_KIND: Final = "coupon"
"""``kind`` of a coupon line (``discount_id``: the coupon's id, ``charge_id``: ``invoice``)."""
INTERIM_KIND: Final = "interim"
"""``kind`` of a line crediting an earlier interim invoice of the period (``charge_id``: ``interim_invoice``)."""
INTERIM_LINE: Final = "interim_invoice"


@dataclass(frozen=True, slots=True)
class CouponUse:
    """One coupon on one invoice: its amount, what finalized invoices used of it before, what this one
    takes (``applied``) out of the amount due it saw (``due``)."""

    coupon_id: str
    currency: str
    granted: Decimal
    used_before: Decimal
    due: Decimal
    applied: Decimal

    @property
    def balance_before(self) -> Decimal:
        return self.granted - self.used_before

    @property
    def balance_after(self) -> Decimal:
        return self.balance_before - self.applied

    def as_line(self) -> dict[str, Any]:
        def money(amount: Decimal) -> str:
            return format_amount(amount, self.currency)

        left = f"{money(self.balance_before)} left = {money(self.granted)} − {money(self.used_before)} used before"
        taken = f"{money(self.balance_before)} off {money(self.due)} due"
        if self.applied != self.balance_before:
            taken += f": capped at {money(self.applied)}"
        amount = -self.applied if self.applied else self.applied
        return {
            "kind": COUPON_KIND,
            "charge_id": INVOICE,
            "discount_id": self.coupon_id,
            "meter": None,
            "description": f"coupon {self.coupon_id} ({money(self.granted)} {self.currency}, carried across invoices)",
            "quantity": None,
            "amount": money(amount),
            "timing": "in_arrears",
            "breakdown": [left, taken, f"carried to the next invoice: {money(self.balance_after)}"],
            "quantity_source": None,
            "part": None,
            "coupon": {
                "granted": money(self.granted),
                "balance_before": money(self.balance_before),
                "applied": money(self.applied),
                "balance_after": money(self.balance_after),
            },
        }


@dataclass(frozen=True, slots=True)
class InterimCredit:
    """An earlier interim invoice of the period and what it billed before its coupons."""

    invoice_id: str
    sequence: int
    currency: str
    billed: Decimal

    def as_line(self) -> dict[str, Any]:
        billed = format_amount(self.billed, self.currency)
        amount = -self.billed if self.billed else self.billed
        return {
            "kind": INTERIM_KIND,
            "charge_id": INTERIM_LINE,
            "discount_id": None,
            "meter": None,
            "description": f"billed on interim invoice {self.sequence} ({self.invoice_id})",
            "quantity": None,
            "amount": format_amount(amount, self.currency),
            "timing": "in_arrears",
            "breakdown": [f"interim invoice {self.sequence} billed {billed} before coupons"],
            "quantity_source": None,
            "part": None,
            "interim_invoice": self.invoice_id,
        }


def used_before(
    history: Sequence[Mapping[str, Any]], customer_id: str, invoice_id: str, currency: str
) -> dict[str, Decimal]:
    """Coupon id → what the customer's finalized invoices (other than ``invoice_id``) in ``currency``
    used of it."""
    used: dict[str, Decimal] = {}
    for document in history:
        if (
            document.get("customer_id") != customer_id
            or document.get("status") != "finalized"
            or document.get("invoice_id") == invoice_id
            or document.get("currency") != currency
        ):
            continue
        for line in document.get("lines", ()):
            if line.get("kind") == COUPON_KIND and line.get("discount_id"):
                coupon = str(line["discount_id"])
                used[coupon] = used.get(coupon, Decimal(0)) - Decimal(str(line["amount"]))
    return used


def apply_coupons(
    coupons: Sequence[Coupon], due: Decimal, index: int, currency: str, used: Mapping[str, Decimal]
) -> tuple[CouponUse, ...]:
    """The coupons that take something off an invoice whose amount due is ``due``, in catalog order:
    each active one with a balance left (``index`` < its ``periods``) takes min(balance, what is still
    due); an invoice due 0 or less takes nothing but still shows the coupon (a line of 0)."""
    remaining = max(Decimal(0), due)
    uses: list[CouponUse] = []
    for coupon in coupons:
        if coupon.periods is not None and index >= coupon.periods:
            continue
        spent = used.get(coupon.id, Decimal(0))
        balance = coupon.amount - spent
        if balance <= 0:
            continue
        applied = min(balance, remaining)
        uses.append(CouponUse(coupon.id, currency, coupon.amount, spent, remaining, applied))
        remaining -= applied
    return tuple(uses)
