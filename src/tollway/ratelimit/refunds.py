"""Units given back: the unused part of a capacity lease (``leases.py``), returned to the bucket and
period it was consumed in, with the next check of the same counters or on its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refund:
    """``units`` per policy (in the check's policy order), consumed at ``taken_ms`` and not used."""

    units: tuple[int, ...]
    taken_ms: int

    def __post_init__(self) -> None:
        if any(count < 0 for count in self.units):
            raise ValueError(f"refunded units must be >= 0, not {self.units}")

    def check(self, policies: Sequence[object]) -> None:
        if len(self.units) != len(policies):
            raise ValueError(f"{len(self.units)} refunded counts for {len(policies)} policies")
