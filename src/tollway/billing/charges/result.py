"""What every charge model takes besides its charge and quantity (``PeriodContext``) and what it returns
(``ChargeResult``: an exact amount and the human-readable steps that add up to it)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from tollway.billing.money import format_decimal
from tollway.billing.quantity import check_fraction

Timing = Literal["in_advance", "in_arrears"]


@dataclass(frozen=True, slots=True)
class PeriodContext:
    """The billing period as the charge models see it.

    ``fraction``: the part of the period the subscription covers, in ``[0, 1]`` (1: all of it). Flat
    fees and the minimum commitment are multiplied by it; usage charges are not (their quantity is
    already the usage of that part). ``index``: the 0-based number of this period in the subscription
    (0 = the first period), which decides whether a coupon lasting N periods still applies (``index < N``).
    It is not ``BillingPeriod.index``, which numbers calendar periods absolutely.
    """

    fraction: Decimal = Decimal(1)
    index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", check_fraction(self.fraction))  # an int 1 becomes Decimal(1)
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ValueError(f"period index {self.index!r} must be an integer ≥ 0 (0 = the first period)")

    @property
    def full(self) -> bool:
        return self.fraction == 1


FULL_PERIOD: Final = PeriodContext()


@dataclass(frozen=True, slots=True)
class Step:
    """One readable part of a charge: ``quantity × unit_amount = amount``, exact (not yet rounded)."""

    label: str
    quantity: Decimal
    unit_amount: Decimal
    amount: Decimal

    def __str__(self) -> str:
        q, unit, amount = (format_decimal(v) for v in (self.quantity, self.unit_amount, self.amount))
        return f"{self.label}: {q} × {unit} = {amount}"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """A charge model's answer: ``amount`` is exact and equals the sum of the steps' amounts.

    ``quantity`` is what the invoice line shows (the usage, or the period fraction for a flat fee).
    ``timing`` says whether the amount is billed at the start of the period or after it (usage always after).
    Rounding to the currency happens once, on the invoice line (``tollway.billing.rating``).
    """

    amount: Decimal
    quantity: Decimal
    breakdown: tuple[Step, ...]
    timing: Timing = "in_arrears"
