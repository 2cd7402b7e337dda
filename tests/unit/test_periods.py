"""Billing periods: tiling, containment, local boundaries, anniversaries and DST (pure; no I/O)."""

import calendar
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.periods import (
    Alignment,
    BillingPeriod,
    BillingSchedule,
    Interval,
    load_timezone,
    period_containing,
)

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham"]
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
MICRO = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def wall(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC))
zones = st.sampled_from(ZONES)
intervals = st.sampled_from(["month", "year"])
alignments = st.sampled_from(["calendar", "anniversary"])


def expected_nominal(schedule: BillingSchedule, start: datetime) -> datetime:
    """An independent oracle: the naive local time the period starting at ``start`` should start at."""
    local = wall(start, schedule.timezone)
    year, month = local.year, local.month
    if schedule.alignment == "calendar":
        return datetime(year, 1 if schedule.interval == "year" else month, 1)
    anchor = schedule.anchor.astimezone(ZoneInfo(schedule.timezone))
    if schedule.interval == "year":
        month = anchor.month
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(tzinfo=None, year=year, month=month, day=day)


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=400)
@given(at=instants, anchor=instants, zone=zones, interval=intervals, alignment=alignments)
def test_periods_tile_time_and_contain_their_instant(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone, interval, alignment)
    period = schedule.period_containing(at)
    assert period.contains(at)
    assert period.start.tzinfo is UTC
    assert period.end.tzinfo is UTC
    after, before = schedule.next_period(period), schedule.previous_period(period)
    assert after.start == period.end
    assert before.end == period.start
    assert schedule.previous_period(after) == period == schedule.next_period(before)
    # The instants on either side of each boundary fall in the periods on either side.
    assert schedule.period_containing(period.end) == after
    assert schedule.period_containing(period.end - MICRO) == period
    assert schedule.period_containing(period.start - MICRO) == before
    assert period == period_containing(at, anchor=anchor, timezone=zone, interval=interval, alignment=alignment)


@settings(max_examples=400)
@given(at=instants, anchor=instants, zone=zones, interval=intervals, alignment=alignments)
def test_boundaries_are_the_first_instant_the_local_clock_reaches_the_nominal_time(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone, interval, alignment)
    period = schedule.period_containing(at)
    nominal = expected_nominal(schedule, period.start)
    assert wall(period.start, zone) >= nominal > wall(period.start - MICRO, zone)
    exists = (
        nominal.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        == nominal
    )
    if exists:
        assert wall(period.start, zone) == nominal


@settings(max_examples=300)
@given(at=instants, anchor=instants, zone=zones, alignment=alignments)
def test_lengths_stay_within_the_month_and_year_bounds(
    at: datetime, anchor: datetime, zone: str, alignment: Alignment
) -> None:
    month = BillingSchedule(anchor, zone, "month", alignment).period_containing(at)
    assert timedelta(days=28, hours=-1) <= month.length <= timedelta(days=31, hours=1)
    year = BillingSchedule(anchor, zone, "year", alignment).period_containing(at)
    assert timedelta(days=365, hours=-1) <= year.length <= timedelta(days=366, hours=1)


@settings(max_examples=200)
@given(at=instants, anchor=instants, zone=st.timezones(), interval=intervals, alignment=alignments)
def test_tiling_holds_in_every_iana_zone(
    at: datetime, anchor: datetime, zone: ZoneInfo, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone.key, interval, alignment)
    period = schedule.period_containing(at)
    assert period.contains(at)
    assert schedule.next_period(period).start == period.end
    assert schedule.previous_period(period).end == period.start


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("alignment", ["calendar", "anniversary"])
def test_seventy_years_of_months_tile_without_gap_or_overlap(zone: str, alignment: Alignment) -> None:
    schedule = BillingSchedule(utc(2024, 1, 31, 22, 45, 30), zone, "month", alignment)
    periods = schedule.periods_between(utc(1990, 1, 1), utc(2060, 1, 1))
    assert len(periods) in (840, 841)
    for earlier, later in itertools.pairwise(periods):
        assert earlier.end == later.start
        assert later.index == earlier.index + 1  # type: ignore[operator]
        assert timedelta(days=28, hours=-1) <= earlier.length <= timedelta(days=31, hours=1)


# --- examples -----------------------------------------------------------------------------------


def test_calendar_months_start_at_local_midnight() -> None:
    period = period_containing(
        utc(2026, 11, 15), anchor=utc(2020, 5, 5), timezone="Europe/Paris", interval="month", alignment="calendar"
    )
    assert period.start == utc(2026, 10, 31, 23)  # 2026-11-01 00:00 CET
    assert period.end == utc(2026, 11, 30, 23)
    assert period.local("Europe/Paris")[0] == datetime(2026, 11, 1, tzinfo=PARIS)
    assert period.index == 2026 * 12 + 10


def test_calendar_years_start_on_january_first_local() -> None:
    period = period_containing(
        utc(2026, 6, 1), anchor=utc(2020, 5, 5), timezone="Asia/Kolkata", interval="year", alignment="calendar"
    )
    assert period.start == utc(2025, 12, 31, 18, 30)
    assert period.end == utc(2026, 12, 31, 18, 30)
    assert period.length == timedelta(days=365)
    assert period.index == 2026


def test_month_lengths_vary_with_the_month_and_the_dst_shift() -> None:
    schedule = BillingSchedule(utc(2026, 1, 1), "Europe/Paris", "month", "calendar")
    lengths = [schedule.period(2026 * 12 + m).length for m in range(12)]
    day = timedelta(days=1)
    assert lengths[1] == 28 * day  # February
    assert lengths[2] == 31 * day - timedelta(hours=1)  # March: clocks go forward
    assert lengths[3] == 30 * day
    assert lengths[9] == 31 * day + timedelta(hours=1)  # October: clocks go back
    leap = BillingSchedule(utc(2028, 1, 1), "UTC", "month", "calendar").period(2028 * 12 + 1)
    assert leap.length == 29 * day
    # Lord Howe Island shifts by half an hour.
    howe = BillingSchedule(utc(2026, 1, 1), "Australia/Lord_Howe", "month", "calendar")
    assert howe.period(2026 * 12 + 3).length == 30 * day + timedelta(minutes=30)  # April: DST ends
    assert howe.period(2026 * 12 + 9).length == 31 * day - timedelta(minutes=30)  # October: DST starts
    # Chatham's offset is +12:45/+13:45; a calendar month still starts at local midnight.
    chatham = BillingSchedule(utc(2026, 1, 1), "Pacific/Chatham", "month", "calendar").period(2026 * 12 + 5)
    assert chatham.start == utc(2026, 5, 31, 11, 15)


def test_an_anchor_on_the_31st_keeps_its_day() -> None:
    anchor = datetime(2026, 1, 31, 9, 30, tzinfo=NEW_YORK)
    schedule = BillingSchedule(anchor, "America/New_York", "month", "anniversary")
    first = schedule.period_containing(anchor)
    assert first.start == anchor
    starts = [p.start.astimezone(NEW_YORK) for p in schedule.iter_periods(anchor, datetime(2027, 3, 1, tzinfo=UTC))]
    days = [(s.month, s.day) for s in starts]
    assert days[:7] == [(1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31)]
    assert days[-2:] == [(1, 31), (2, 28)]
    assert all((s.hour, s.minute) == (9, 30) for s in starts)  # local time of day, across DST
    leap = BillingSchedule(utc(2027, 12, 31), "UTC", "month", "anniversary")
    assert leap.period_containing(utc(2028, 3, 1)).start == utc(2028, 2, 29)
    assert leap.period_containing(utc(2028, 3, 1)).end == utc(2028, 3, 31)


def test_a_yearly_anniversary_of_february_29th_falls_on_the_28th_in_other_years() -> None:
    schedule = BillingSchedule(utc(2028, 2, 29, 12), "UTC", "year", "anniversary")
    assert schedule.period_containing(utc(2028, 6, 1)) == BillingPeriod(utc(2028, 2, 29, 12), utc(2029, 2, 28, 12))
    assert schedule.period_containing(utc(2031, 1, 1)).start == utc(2030, 2, 28, 12)
    assert schedule.period_containing(utc(2032, 3, 1)).start == utc(2032, 2, 29, 12)


def test_the_same_instant_is_in_different_months_for_different_zones() -> None:
    at = utc(2026, 1, 31, 23, 30)  # 18:30 on Jan 31 in New York, 00:30 on Feb 1 in Paris
    months = {
        zone: period_containing(at, anchor=at, timezone=zone, interval="month", alignment="calendar").index
        for zone in ("America/New_York", "Europe/Paris")
    }
    assert months == {"America/New_York": 2026 * 12 + 0, "Europe/Paris": 2026 * 12 + 1}


def test_a_boundary_in_the_spring_forward_gap_resolves_to_the_end_of_the_gap() -> None:
    anchor = datetime(2026, 1, 29, 2, 30, tzinfo=PARIS)  # 02:30 does not exist on 2026-03-29 in Paris
    schedule = BillingSchedule(anchor, "Europe/Paris", "month", "anniversary")
    march = schedule.period_containing(utc(2026, 4, 1))
    assert march.start == utc(2026, 3, 29, 1)  # 03:00 CEST, the first instant after the gap
    assert march.end == datetime(2026, 4, 29, 2, 30, tzinfo=PARIS)
    assert schedule.previous_period(march).end == march.start


def test_an_ambiguous_boundary_takes_the_first_occurrence() -> None:
    anchor = datetime(2026, 10, 1, 1, 30, tzinfo=NEW_YORK)  # 01:30 happens twice on 2026-11-01
    schedule = BillingSchedule(anchor, "America/New_York", "month", "anniversary")
    november = schedule.period_containing(utc(2026, 11, 10))
    assert november.start == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first one
    assert november.end == utc(2026, 12, 1, 6, 30)  # 01:30 EST
    assert november.length == timedelta(days=30, hours=1)


def test_a_skipped_local_day_resolves_to_the_next_existing_time() -> None:
    apia = ZoneInfo("Pacific/Apia")  # Samoa skipped 2011-12-30 entirely
    schedule = BillingSchedule(datetime(2011, 11, 30, tzinfo=apia), "Pacific/Apia", "month", "anniversary")
    december = schedule.period(2011 * 12 + 11)
    assert december.start.astimezone(apia) == datetime(2011, 12, 31, tzinfo=apia)
    assert schedule.previous_period(december).length == timedelta(days=30)  # 30 local days, one skipped


def test_periods_between_lists_the_overlapping_periods() -> None:
    schedule = BillingSchedule(utc(2026, 1, 15), "UTC", "month", "anniversary")
    periods = schedule.periods_between(utc(2026, 2, 1), utc(2026, 4, 15))
    assert [p.start for p in periods] == [utc(2026, 1, 15), utc(2026, 2, 15), utc(2026, 3, 15)]
    assert schedule.periods_between(utc(2026, 2, 1), utc(2026, 2, 1)) == []
    assert len(schedule.periods_between(utc(2026, 2, 1), utc(2026, 4, 15, 0, 0, 1))) == 4


def test_period_arithmetic_for_proration() -> None:
    period = BillingPeriod(utc(2026, 2, 1), utc(2026, 3, 1))
    assert period.length == timedelta(days=28)
    assert period.elapsed(utc(2026, 2, 8)) == timedelta(days=7)
    assert period.elapsed(utc(2025, 1, 1)) == timedelta(0)
    assert period.remaining(utc(2027, 1, 1)) == timedelta(0)
    assert period.overlap(utc(2026, 2, 27), utc(2026, 3, 10)) == timedelta(days=2)
    assert period.overlap(utc(2026, 3, 1), utc(2026, 3, 10)) == timedelta(0)
    assert period.contains(utc(2026, 2, 1))
    assert not period.contains(utc(2026, 3, 1))
    # Any aware input is normalised to UTC.
    assert BillingPeriod(datetime(2026, 2, 1, 1, tzinfo=PARIS), utc(2026, 3, 1)).start == utc(2026, 2, 1)


def test_hand_built_periods_are_recognised_by_their_start() -> None:
    schedule = BillingSchedule(utc(2026, 1, 1), "UTC", "month", "calendar")
    assert schedule.next_period(BillingPeriod(utc(2026, 2, 1), utc(2026, 3, 1))).start == utc(2026, 3, 1)
    with pytest.raises(ValueError, match="not one of this schedule"):
        schedule.next_period(BillingPeriod(utc(2026, 2, 2), utc(2026, 3, 1)))


def test_invalid_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        BillingSchedule(utc(2026, 1, 1), "Mars/Olympus")
    for bad in ("", " UTC", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ValueError, match="timezone"):
            load_timezone(bad)
    with pytest.raises(ValueError, match="naive"):
        BillingSchedule(datetime(2026, 1, 1), "UTC")
    schedule = BillingSchedule(utc(2026, 1, 1), "UTC")
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        schedule.period_containing(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="interval 'fortnight'"):
        BillingSchedule(utc(2026, 1, 1), "UTC", "fortnight", "calendar")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alignment 'fiscal'"):
        BillingSchedule(utc(2026, 1, 1), "UTC", "month", "fiscal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must end after"):
        BillingPeriod(utc(2026, 1, 1), utc(2026, 1, 1))
