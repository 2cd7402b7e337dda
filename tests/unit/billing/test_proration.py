"""The fraction of a billing period a span covers: exact at the ends, 12 places in between, real time."""

from datetime import UTC, datetime
from decimal import Decimal

from tollway.billing.proration import period_fraction
from tollway.periods import BillingSchedule


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_whole_half_and_none() -> None:
    schedule = BillingSchedule(utc(2026, 1, 1), "UTC")
    april = schedule.period_containing(utc(2026, 4, 10))
    assert period_fraction(april, april.start, april.end) == 1
    assert period_fraction(april, utc(2026, 3, 1), utc(2026, 6, 1)) == 1
    assert period_fraction(april, utc(2026, 4, 16), utc(2026, 5, 1)) == Decimal("0.5")
    assert period_fraction(april, utc(2026, 5, 1), utc(2026, 5, 2)) == 0


def test_a_third_is_rounded_to_twelve_places() -> None:
    schedule = BillingSchedule(utc(2026, 1, 1), "UTC")
    january = schedule.period_containing(utc(2026, 1, 10))
    assert period_fraction(january, utc(2026, 1, 1), utc(2026, 1, 11)) == Decimal("0.322580645161")  # 10/31


def test_dst_month_counts_real_hours() -> None:
    schedule = BillingSchedule(utc(2026, 1, 1), "Europe/Paris")
    march = schedule.period_containing(utc(2026, 3, 15))
    assert march.length.total_seconds() == (31 * 24 - 1) * 3600  # 743 hours: 02:00 → 03:00 on the 29th
    after_change = period_fraction(march, utc(2026, 3, 29, 1), march.end)  # 69 of the 743 hours
    assert after_change == Decimal("0.092866756393")
