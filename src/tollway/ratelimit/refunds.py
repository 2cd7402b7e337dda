"""Units given back: the unused part of a capacity lease (``leases.py``), returned to the bucket and
period it was consumed in, with the next check of the same counters or on its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tollway.ratelimit.money import Money


@dataclass(frozen=True, slots=True)
class Refund:
    """``units`` per policy (in the check's policy order), consumed at ``taken_ms`` and not used.
    ``charge_units``: per real-time charge of the check's ``money`` (in its order; empty: none), units given
    back to the charge's period counter, with the price of those top positions (``ratelimit.money``)."""

    units: tuple[int, ...]
    taken_ms: int
    charge_units: tuple[int, ...] = ()
    lease: str = ""
    """The record of the lease this refund closes (``Money.lease`` of its take; empty: none): the units
    go back only if the record is still there, so a refund sent twice is applied once."""

    def __post_init__(self) -> None:
        if any(count < 0 for count in self.units):
            raise ValueError(f"refunded units must be >= 0, not {self.units}")
        if any(count < 0 for count in self.charge_units):
            raise ValueError(f"refunded charge units must be >= 0, not {self.charge_units}")

    def check(self, policies: Sequence[object], money: Money | None = None) -> None:
        if len(self.units) != len(policies):
            raise ValueError(f"{len(self.units)} refunded counts for {len(policies)} policies")
        if self.charge_units:
            if money is None:
                raise ValueError("refunded charge units need the check's money (its charges)")
            if len(self.charge_units) != len(money.charges):
                raise ValueError(f"{len(self.charge_units)} refunded charge counts for {len(money.charges)} charges")

    def charge(self, index: int) -> int:
        """Units given back to the ``index``-th charge (0 when none are)."""
        return self.charge_units[index] if self.charge_units else 0
