"""What a check is measured against: sliding-window rate limits and billing-period quotas.

``enforced = hard and not shadow``: an enforced policy refuses a request that would exceed it; a soft
one (``hard=False``) admits and reports the overage for billing; a shadow one only counts and reports.

``alerting``: the policy's threshold alerts (``notifications.thresholds``), resolved to levels in units
with the customer's effective limit; None (the default, and every policy without ``alerts``) costs a
check nothing. The limiter reports each level an admitted check crosses as one event in the customer's
outbox, in the same atomic step (docs/decisions/0007-exactly-once-threshold-events.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

MIN_BUCKETS = 10
MAX_BUCKETS = 60
MIN_WINDOW_MS = 10


def bucket_count(window_ms: int) -> int:
    """The number of sub-buckets N for a window of ``window_ms``: the largest divisor of the width in
    [10, 60], so the bucket width g = W / N is a whole number of milliseconds (≥ 1) and the
    conservative error, at most one bucket width, is at most W / 10 (W / 50 for 1 s, W / 60 for a
    minute, an hour or a day). Every multiple of 10 ms has such a divisor (10); other widths are refused.
    """
    if window_ms < MIN_WINDOW_MS or window_ms % 10:
        raise ValueError(f"a window must be a whole multiple of 10 ms (got {window_ms} ms)")
    return next(n for n in range(MAX_BUCKETS, MIN_BUCKETS - 1, -1) if window_ms % n == 0)


@dataclass(frozen=True, slots=True)
class Alerting:
    """The alert levels of one policy (ascending, distinct, whole units ≥ 1) with the label of each
    (``80%`` or ``9000``: the event's ``threshold_label``), and the plan and feature the check is for
    (named in the event body; no spaces)."""

    levels: tuple[int, ...]
    labels: tuple[str, ...]
    plan: str
    feature: str
    spec: str = field(init=False, repr=False, compare=False)
    """``<level>:<label>,…``: the levels as the limiter script reads them (built once)."""

    def __post_init__(self) -> None:
        if not self.levels or len(self.levels) != len(self.labels):
            raise ValueError("alert levels need one label each")
        if any(a >= b for a, b in zip(self.levels, self.levels[1:], strict=False)) or self.levels[0] < 1:
            raise ValueError(f"alert levels must be ascending and at least 1: {self.levels}")
        for text in (*self.labels, self.plan, self.feature):
            if not text or any(ch.isspace() or ch in ":," for ch in text):
                raise ValueError(f"alert label or name {text!r} must be non-empty, without spaces, ':' or ','")
        spec = ",".join(f"{level}:{label}" for level, label in zip(self.levels, self.labels, strict=True))
        object.__setattr__(self, "spec", spec)


def _check_name(name: str) -> None:
    if not name or any(ch in name for ch in "{}") or any(ch.isspace() for ch in name):
        raise ValueError(f"policy name {name!r} must be non-empty, without spaces or braces")


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """At most ``limit`` units in any window of ``window_ms``, counted over ``buckets`` sub-buckets."""

    name: str
    limit: int
    window_ms: int
    buckets: int
    hard: bool = True
    shadow: bool = False
    alerting: Alerting | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.limit < 0:
            raise ValueError(f"policy {self.name}: limit must be >= 0")
        if self.buckets < 1 or self.window_ms < 1 or self.window_ms % self.buckets:
            raise ValueError(f"policy {self.name}: the window ({self.window_ms} ms) must split into whole-ms buckets")

    @classmethod
    def sliding(
        cls,
        name: str,
        limit: int,
        window_ms: int,
        *,
        hard: bool = True,
        shadow: bool = False,
        alerting: Alerting | None = None,
    ) -> Self:
        """A window policy with the bucket count of ``bucket_count``."""
        return cls(name, limit, window_ms, bucket_count(window_ms), hard, shadow, alerting)

    @property
    def bucket_ms(self) -> int:
        return self.window_ms // self.buckets

    @property
    def enforced(self) -> bool:
        return self.hard and not self.shadow

    @property
    def window_s(self) -> int:
        return -(-self.window_ms // 1000)


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """At most ``limit`` units in the billing period [period_start_ms, period_end_ms)."""

    name: str
    limit: int
    period_start_ms: int
    period_end_ms: int
    hard: bool = True
    shadow: bool = False
    alerting: Alerting | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.limit < 0:
            raise ValueError(f"policy {self.name}: limit must be >= 0")
        if self.period_end_ms <= self.period_start_ms:
            raise ValueError(f"policy {self.name}: the period must end after it starts")

    @property
    def enforced(self) -> bool:
        return self.hard and not self.shadow

    @property
    def window_s(self) -> int:
        return -(-(self.period_end_ms - self.period_start_ms) // 1000)


Policy = WindowPolicy | QuotaPolicy
