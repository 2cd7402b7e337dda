"""Tier geometry shared by graduated and volume pricing: each tier's band and its label.

Tier ``i`` covers quantities above the previous tier's ``up_to`` (0 for the first tier) up to and
including its own ``up_to``; the last tier (``up_to: null``) has no upper bound. The catalog checks
that bounds ascend and that only the last tier is open, so the bands tile ``(0, ∞)``. A bound may be a
decimal (``0.5`` GB): the band arithmetic is the same, and only the label changes (``tier 1 (up to 0.5)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from tollway.billing.errors import BillingError
from tollway.plans.pricing import Tier


@dataclass(frozen=True, slots=True)
class Band:
    """A tier with its bounds: quantities in ``(lower, upper]`` (``upper`` None: no bound)."""

    number: int
    lower: int | Decimal
    upper: int | Decimal | None
    tier: Tier
    fractional: bool = False
    """A bound of the charge is fractional: label every band by its bounds, not by whole units."""

    @property
    def label(self) -> str:
        """``tier 2 (6–10)``, ``tier 3 (11+)``: the integer units the band covers. When a bound of the
        charge is fractional: ``tier 1 (up to 0.5)``, ``tier 2 (above 0.5 to 10)``, ``tier 3 (above 10)``."""
        if self.fractional:
            above = f"above {_plain(self.lower)}"
            if self.upper is None:
                return f"tier {self.number} ({above})"
            to = f"up to {_plain(self.upper)}" if self.lower == 0 else f"{above} to {_plain(self.upper)}"
            return f"tier {self.number} ({to})"
        first = self.lower + 1
        return f"tier {self.number} ({first}+)" if self.upper is None else f"tier {self.number} ({first}–{self.upper})"

    def contains(self, quantity: Decimal) -> bool:
        return quantity > self.lower and (self.upper is None or quantity <= self.upper)

    def part_of(self, quantity: Decimal) -> Decimal:
        """How much of ``quantity`` falls in this band (0 when it does not reach the band). Call inside
        ``money.exact()``: the subtraction is exact there."""
        if quantity <= self.lower:
            return Decimal(0)
        top = quantity if self.upper is None else min(quantity, Decimal(self.upper))
        return top - self.lower


def _plain(bound: int | Decimal) -> str:
    return format(bound, "f") if isinstance(bound, Decimal) else str(bound)


def bands(tiers: Sequence[Tier]) -> tuple[Band, ...]:
    """The tiers in order with their bounds. ``BillingError`` for tiers the catalog would refuse (built in
    Python without its checks): none, bounds not ascending, or a bounded last tier (a gap above it)."""
    result: list[Band] = []
    lower: int | Decimal = 0
    fractional = any(isinstance(tier.up_to, Decimal) for tier in tiers)
    for number, tier in enumerate(tiers, start=1):
        last = number == len(tiers)
        upper = tier.up_to
        if (upper is None) != last or (upper is not None and upper <= lower):
            raise BillingError(
                "tiers must ascend and only the last may have up_to: null (the catalog checks this; "
                f"got up_to {tier.up_to} in tier {number} of {len(tiers)})"
            )
        result.append(Band(number, lower, upper, tier, fractional))
        if upper is not None:
            lower = upper
    if not result:
        raise BillingError("a tiered charge needs at least one tier")
    return tuple(result)
