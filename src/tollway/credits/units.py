"""Balance units and exact fixed-point conversion.

A balance unit is the plan's currency (``USD``: grants in whole cents at most, the currency's minor unit)
or a credit unit from the catalog (``credits``, worth ``value`` of the catalog currency each, granted with
at most ``decimals`` places). Redis holds every amount as integer micro-units (10⁻⁶ of the unit): prices
finer than the unit's minor unit (0.0004 USD per request) burn exactly, and the largest balance a Lua
number holds exactly (2⁵³ micro-units) is about 9·10⁹ units, well above ``MAX_AMOUNT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

MICROS: Final = 1_000_000
PLACES: Final = 6
"""Decimal places of a micro-unit: no price or amount may be finer."""
MAX_AMOUNT: Final = Decimal(1_000_000_000)
"""The largest grant, balance or cap in units (≤ 2⁵³ micro-units with room for sums)."""


class AmountError(ValueError):
    """An amount that cannot be held exactly (too many decimal places, too large, not a number)."""


@dataclass(frozen=True, slots=True)
class BalanceUnit:
    """``code``: the currency code or the credit unit's name. ``decimals``: the places a grant may have.
    ``value``: what one unit is worth in ``currency`` (1 for the currency itself)."""

    code: str
    decimals: int
    currency: str
    value: Decimal = Decimal(1)

    @property
    def is_currency(self) -> bool:
        return self.code == self.currency

    def grant_amount(self, amount: Decimal) -> int:
        """A grant's amount in micro-units; AmountError unless it is positive, at most ``MAX_AMOUNT`` and has
        at most ``decimals`` places."""
        if not amount.is_finite():
            raise AmountError(f"{amount} is not an amount of {self.code}")
        if amount <= 0:
            raise AmountError(f"an amount of {self.code} must be above 0 (got {amount})")
        if amount > MAX_AMOUNT:
            raise AmountError(f"an amount of {self.code} must be at most {MAX_AMOUNT} (got {amount})")
        if _places(amount) > self.decimals:
            plural = "s" if self.decimals != 1 else ""
            raise AmountError(f"{self.code} allows {self.decimals} decimal place{plural}; {amount} has more")
        return to_micros(amount)

    def from_currency(self, amount: Decimal) -> Decimal:
        """A price in ``currency`` expressed in this unit (exact division; AmountError if it is not exact to
        a micro-unit)."""
        if self.is_currency:
            return amount
        converted = amount / self.value
        to_micros(converted)  # raises if not exact
        return converted


def _places(amount: Decimal) -> int:
    exponent = amount.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def to_micros(amount: Decimal) -> int:
    """``amount`` in micro-units, exactly; AmountError if it has more than 6 decimal places."""
    if not amount.is_finite():
        raise AmountError(f"{amount} is not a finite amount")
    scaled = amount * MICROS
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{amount} has more than {PLACES} decimal places")
    return int(scaled)


def from_micros(micros: int) -> Decimal:
    """Micro-units back to a Decimal amount (exact, normalised to at most 6 places, no exponent form)."""
    return (Decimal(micros) / MICROS).quantize(Decimal(1).scaleb(-PLACES)).normalize() + Decimal(0)


def format_micros(micros: int) -> str:
    """``str(from_micros(micros))`` without Decimal arithmetic (the answer path formats one per admit):
    ``1500000`` → ``1.5``, ``400`` → ``0.0004``, ``-2000000`` → ``-2``."""
    if micros < 0:
        return "-" + format_micros(-micros)
    whole, fraction = divmod(micros, MICROS)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:06d}".rstrip("0")
