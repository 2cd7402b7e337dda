"""How ``tollway serve`` wires the limiter's clock."""

from tollway.clock import ManualClock, SystemClock
from tollway.server import windows_on_redis_clock


def test_serve_counts_windows_on_redis_clock_unless_a_test_injects_a_clock() -> None:
    assert windows_on_redis_clock(SystemClock()), "production: Redis's TIME, shared by every process"
    assert not windows_on_redis_clock(ManualClock()), "a test driving time counts windows on its clock"
