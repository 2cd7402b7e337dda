"""The marginal price of usage under a charge model that prices in real time, in micro-units. Pure.

A real-time charge prices the period's running quantity: a request that takes the quantity from ``q`` to
``q + n`` costs ``total(q + n) - total(q)``, where ``total`` is what the period's invoice charges for a
quantity. Summed over a period's requests that is exactly the invoice's amount for the charge (before the
invoice rounds to the currency's minor unit), whatever the order and sizes of the requests: a burst that
crosses a tier boundary pays each side's price.

* ``per_unit``: ``total(q) = q × unit``.
* ``graduated`` (and ``allowance``: a free first tier): each band at its own unit price, plus a tier's
  flat amount once the quantity enters it.
* ``package``: ``⌈(q − free)⁺ / size⌉ × package`` (``round_up``) or ``⌊…⌋``: a new package is burned
  when a request starts it (or, rounding down, completes it).

Volume pricing, minimum commitments and invoice discounts depend on the period's final quantity: they
are not real-time and settle at invoice.

Redis form (one argument of ``consume.lua``, after ``2 <quantity> <period_end_ms>``)::

    0 <unit>                                 per unit
    1 <up_to>:<unit>:<flat>,<up_to>:…        graduated; the last tier's up_to is 0 (no bound)
    2 <size> <package> <free> <round_up 0|1> package
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

MODEL_PER_UNIT: Final = 0
MODEL_GRADUATED: Final = 1
MODEL_PACKAGE: Final = 2


@dataclass(frozen=True, slots=True)
class TierMicros:
    """Quantities in ``(previous up_to, up_to]`` (``up_to`` None: no bound) at ``unit`` each, plus ``flat``
    once entered. Amounts in micro-units."""

    up_to: int | None
    unit: int
    flat: int = 0


@dataclass(frozen=True, slots=True)
class RealTimeCharge:
    """One charge of a plan that burns at admission, over the period ``[period_start_ms, period_end_ms)``.
    ``name``: the charge id (its quantity counter's name)."""

    name: str
    model: Literal["per_unit", "graduated", "package"]
    period_start_ms: int
    period_end_ms: int
    unit: int = 0
    tiers: tuple[TierMicros, ...] = ()
    package_size: int = 1
    package: int = 0
    free_units: int = 0
    round_up: bool = True
    _arg: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.period_end_ms <= self.period_start_ms:
            raise ValueError(f"charge {self.name}: the period must end after it starts")
        if self.model == "per_unit":
            if self.unit < 0:
                raise ValueError(f"charge {self.name}: negative unit price")
            arg = f"{MODEL_PER_UNIT} {self.unit}"
        elif self.model == "graduated":
            if not self.tiers or any(t.up_to is None for t in self.tiers[:-1]):
                raise ValueError(f"charge {self.name}: graduated tiers must end with the only open tier")
            bounds = [t.up_to for t in self.tiers if t.up_to is not None]
            if bounds != sorted(set(bounds)) or any(b <= 0 for b in bounds):
                raise ValueError(f"charge {self.name}: tier bounds must ascend")
            if any(t.unit < 0 or t.flat < 0 for t in self.tiers):
                raise ValueError(f"charge {self.name}: negative tier price")
            arg = f"{MODEL_GRADUATED} " + ",".join(f"{t.up_to or 0}:{t.unit}:{t.flat}" for t in self.tiers)
        else:
            if self.package_size < 1 or self.package < 0 or self.free_units < 0:
                raise ValueError(f"charge {self.name}: invalid package")
            arg = f"{MODEL_PACKAGE} {self.package_size} {self.package} {self.free_units} {int(self.round_up)}"
        object.__setattr__(self, "_arg", arg)

    @property
    def script_arg(self) -> str:
        return self._arg

    def total(self, quantity: int) -> int:
        """What the period's invoice charges for ``quantity`` (micro-units, unrounded)."""
        if quantity <= 0:
            return 0
        if self.model == "per_unit":
            return quantity * self.unit
        if self.model == "graduated":
            amount, lower = 0, 0
            for tier in self.tiers:
                if quantity <= lower:
                    break
                upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
                amount += (upper - lower) * tier.unit + tier.flat
                if tier.up_to is None:
                    break
                lower = tier.up_to
            return amount
        billable = max(quantity - self.free_units, 0)
        whole, rest = divmod(billable, self.package_size)
        return (whole + (1 if rest and self.round_up else 0)) * self.package

    def price(self, before: int, quantity: int) -> int:
        """The marginal price of taking the period's quantity from ``before`` to ``before + quantity``."""
        if quantity <= 0:
            return 0
        return self.total(before + quantity) - self.total(before)
