"""Time as an injected dependency: domain code never reads the system clock itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall time (UTC, for expiry and records) and monotonic time (for caches and timeouts)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def now_ms(self) -> int:
        """Wall time in whole epoch milliseconds (limiter checks, decision timestamps)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def now_ms(self) -> int:
        return int(self._now.timestamp() * 1000)

    def set(self, at: datetime) -> None:
        """Move to ``at`` (not backwards); monotonic time moves by the same amount."""
        self.advance(at - self._now)

    def advance(self, delta: timedelta | float) -> None:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
