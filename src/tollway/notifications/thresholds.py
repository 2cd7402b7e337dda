"""Alert thresholds of a policy, and when a count crosses them (pure).

A catalog policy (a rate limit or a quota) may declare ``alerts``: each one a percent of its limit (a
number, ``80`` or ``"80%"``) or an absolute amount of its units (``{units: 9000}``). They resolve to
*levels*, whole units: a percent ``p`` of limit ``L`` is ``ceil(L × p / 100)`` (the first count at or past
it), at least 1. A check **crosses** a level when the count before it is below the level and the count
after it is at or past it (``before < level <= after``); a refused check consumes nothing and crosses
nothing. Counters go down only by refunds (a lease's unused units, a released reservation), so a level can
be crossed again within one period: the once-marker of its deterministic event id makes that one event.

Windows: for a rate limit the "period" of a crossing is the window-aligned interval it happened in
(``floor(now / window) × window``): at most one event per level per window width.

Leases: a capacity lease must not span a level (``units_below_next``), so the request that crosses it is
always checked alone, in the script, where the crossing is seen exactly once, at the request that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Final

MAX_ALERTS: Final = 10
"""Per policy (and per customer budget list): more is refused by validation."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One declared threshold: ``percent`` of the limit, or ``units`` (exactly one is set)."""

    percent: Decimal | None = None
    units: int | None = None

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.units is None):
            raise ValueError("an alert is a percent or a number of units, not both")
        if self.percent is not None and not Decimal(0) < self.percent <= Decimal(100):
            raise ValueError(f"an alert percent must be in (0, 100], got {self.percent}")
        if self.units is not None and self.units < 1:
            raise ValueError(f"an alert in units must be at least 1, got {self.units}")

    def level(self, limit: int) -> int:
        """The count at which this alert fires for a policy of ``limit`` units (≥ 1)."""
        if self.units is not None:
            return self.units
        assert self.percent is not None
        return max(1, int((Decimal(limit) * self.percent / 100).to_integral_value(ROUND_CEILING)))

    def label(self) -> str:
        """How docs and event bodies name it: ``80%`` or ``9000``."""
        if self.percent is not None:
            return f"{self.percent.normalize():f}%"
        return str(self.units)


def levels(alerts: Sequence[Alert], limit: int) -> tuple[int, ...]:
    """The distinct levels of ``alerts`` for ``limit``, ascending (a level above the limit of a hard
    policy can never be reached and is kept: a soft or shadow policy may pass its limit)."""
    return tuple(sorted({alert.level(limit) for alert in alerts}))


def crossed(before: int, after: int, policy_levels: Sequence[int]) -> tuple[int, ...]:
    """The levels a count going from ``before`` to ``after`` crosses (``before < level <= after``)."""
    return tuple(level for level in policy_levels if before < level <= after)


def units_below_next(used: int, policy_levels: Sequence[int]) -> int | None:
    """How many more units may be counted from ``used`` without reaching the next level (None: no level
    ahead). A lease takes at most this many, so the crossing request is checked alone."""
    for level in policy_levels:
        if level > used:
            return level - used - 1
    return None


def window_start_ms(now_ms: int, window_ms: int) -> int:
    """The window-aligned interval a rate-limit crossing at ``now_ms`` belongs to (its id's period)."""
    return now_ms - now_ms % window_ms
