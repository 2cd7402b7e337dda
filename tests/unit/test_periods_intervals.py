"""Weekly, quarterly and half-yearly periods beside months and years (issue 16, item 4): tiling,
containment, the boundary rule, anniversary clamping without drift, DST, and bad interval names."""

import calendar
import itertools
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.billing.charges import PeriodContext, price_charge
from tollway.billing.money import round_line
from tollway.billing.proration import period_fraction
from tollway.periods import (
    INTERVALS,
    MONTHS,
    Alignment,
    BillingPeriod,
    BillingSchedule,
    Interval,
    check_interval,
)
from tollway.plans.pricing import FlatCharge

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham"]
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
MICRO = timedelta(microseconds=1)
DAY = timedelta(days=1)

instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC))
zones = st.sampled_from(ZONES)
intervals = st.sampled_from(INTERVALS)
alignments = st.sampled_from(["calendar", "anniversary"])

# Nominal length in local days, and the largest DST shift a period of the zones above can contain.
LENGTH_DAYS = {"week": (7, 7), "month": (28, 31), "quarter": (89, 92), "half_year": (181, 184), "year": (365, 366)}
SHIFT = timedelta(hours=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def wall(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def expected_nominal(schedule: BillingSchedule, start: datetime) -> datetime:
    """An independent oracle: the naive local time the period starting at ``start`` should start at,
    from the local date it starts on (the zones above never skip a whole day)."""
    local = wall(start, schedule.timezone)
    anchor = schedule.anchor.astimezone(ZoneInfo(schedule.timezone))
    clock = time() if schedule.alignment == "calendar" else anchor.time()
    if schedule.interval == "week":
        weekday = 0 if schedule.alignment == "calendar" else anchor.weekday()
        back = (local.weekday() - weekday) % 7
        day = local.date() - timedelta(days=back)
        if back == 0 and local.time() < clock:  # cannot happen: a boundary is never before its nominal time
            day -= timedelta(days=7)
        return datetime.combine(day, clock)
    months = MONTHS[schedule.interval]
    first_month = 1 if schedule.alignment == "calendar" else anchor.month
    # The period starts in a month of its cycle: first_month, first_month + k, ... (mod 12).
    assert (local.month - first_month) % months == 0, (schedule, start)
    if schedule.alignment == "calendar":
        return datetime(local.year, local.month, 1)
    day = min(anchor.day, calendar.monthrange(local.year, local.month)[1])
    return datetime.combine(date(local.year, local.month, day), clock)


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=500)
@given(at=instants, anchor=instants, zone=zones, interval=intervals, alignment=alignments)
def test_every_interval_tiles_time_and_each_period_contains_its_start(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone, interval, alignment)
    period = schedule.period_containing(at)
    assert period.contains(at)
    assert period.contains(period.start)
    assert not period.contains(period.end)
    after, before = schedule.next_period(period), schedule.previous_period(period)
    assert after.start == period.end
    assert before.end == period.start
    assert (before.index, after.index) == (period.index - 1, period.index + 1)  # type: ignore[operator]
    assert schedule.period_containing(period.end) == after
    assert schedule.period_containing(period.end - MICRO) == period
    assert schedule.period_containing(period.start - MICRO) == before
    assert schedule.period(period.index) == period  # type: ignore[arg-type]


@settings(max_examples=500)
@given(at=instants, anchor=instants, zone=zones, interval=intervals, alignment=alignments)
def test_every_boundary_is_the_first_instant_the_local_clock_reaches_its_nominal_time(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone, interval, alignment)
    period = schedule.period_containing(at)
    nominal = expected_nominal(schedule, period.start)
    assert wall(period.start, zone) >= nominal > wall(period.start - MICRO, zone)


@settings(max_examples=400)
@given(at=instants, anchor=instants, zone=zones, interval=intervals, alignment=alignments)
def test_lengths_are_the_interval_plus_or_minus_a_dst_shift(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment
) -> None:
    period = BillingSchedule(anchor, zone, interval, alignment).period_containing(at)
    shortest, longest = LENGTH_DAYS[interval]
    assert shortest * DAY - SHIFT <= period.length <= longest * DAY + SHIFT


@settings(max_examples=300)
@given(anchor=instants, zone=zones, interval=st.sampled_from(["month", "quarter", "half_year", "year"]))
def test_anniversaries_clamp_to_the_last_day_of_the_month_and_never_drift(
    anchor: datetime, zone: str, interval: Interval
) -> None:
    schedule = BillingSchedule(anchor, zone, interval, "anniversary")
    local_anchor = anchor.astimezone(ZoneInfo(zone))
    start = schedule.period_containing(anchor).start
    periods = list(itertools.islice(schedule.iter_periods(start, start + 20 * 366 * DAY), 30))
    months = MONTHS[interval]
    for number, period in enumerate(periods):
        local = period.start.astimezone(ZoneInfo(zone))
        nominal_month = local_anchor.year * 12 + local_anchor.month - 1 + number * months
        year, month0 = divmod(nominal_month, 12)
        # The boundary's local date is the anchor's day clamped to the month (a DST gap can only move
        # it forward, within the day, in these zones).
        expected_day = min(local_anchor.day, calendar.monthrange(year, month0 + 1)[1])
        if period.start != anchor:  # the first period may start an hour before an ambiguous anchor
            assert (local.year, local.month, local.day) == (year, month0 + 1, expected_day)


@settings(max_examples=200)
@given(at=instants, anchor=instants, zone=st.timezones(), interval=intervals, alignment=alignments)
def test_tiling_holds_in_every_iana_zone_for_every_interval(
    at: datetime, anchor: datetime, zone: ZoneInfo, interval: Interval, alignment: Alignment
) -> None:
    schedule = BillingSchedule(anchor, zone.key, interval, alignment)
    period = schedule.period_containing(at)
    assert period.contains(at)
    assert schedule.next_period(period).start == period.end
    assert schedule.previous_period(period).end == period.start


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("interval", ["week", "quarter", "half_year"])
@pytest.mark.parametrize("alignment", ["calendar", "anniversary"])
def test_forty_years_tile_without_gap_or_overlap(zone: str, interval: Interval, alignment: Alignment) -> None:
    schedule = BillingSchedule(utc(2024, 1, 31, 22, 45), zone, interval, alignment)
    periods = schedule.periods_between(utc(2000, 1, 1), utc(2040, 1, 1))
    expected = {"week": 40 * 365.25 / 7, "quarter": 160, "half_year": 80}[interval]
    assert abs(len(periods) - expected) <= 1
    for earlier, later in itertools.pairwise(periods):
        assert earlier.end == later.start
        assert later.index == earlier.index + 1  # type: ignore[operator]


# --- examples -----------------------------------------------------------------------------------


def test_a_quarterly_anniversary_from_january_31st_keeps_its_day() -> None:
    anchor = datetime(2026, 1, 31, 9, 0, tzinfo=NEW_YORK)
    schedule = BillingSchedule(anchor, "America/New_York", "quarter", "anniversary")
    periods = schedule.periods_between(anchor, datetime(2027, 5, 1, tzinfo=NEW_YORK))
    starts = [p.start.astimezone(NEW_YORK) for p in periods]
    assert [s.date() for s in starts] == [
        date(2026, 1, 31),
        date(2026, 4, 30),
        date(2026, 7, 31),
        date(2026, 10, 31),
        date(2027, 1, 31),
        date(2027, 4, 30),
    ]
    assert all(s.time() == time(9) for s in starts)  # local time of day, across both DST changes
    # 89 days less the hour of the March change; 92 days; 92 plus the hour of the November change.
    assert [p.length for p in periods[:4]] == [89 * DAY - SHIFT, 92 * DAY, 92 * DAY, 92 * DAY + SHIFT]
    assert periods[0].index == (2026 * 12 + 0) // 3


def test_a_half_yearly_anniversary_of_august_31st_falls_on_the_last_of_february() -> None:
    schedule = BillingSchedule(utc(2027, 8, 31), "UTC", "half_year", "anniversary")
    starts = [p.start for p in schedule.periods_between(utc(2027, 8, 31), utc(2029, 9, 1))]
    assert starts == [utc(2027, 8, 31), utc(2028, 2, 29), utc(2028, 8, 31), utc(2029, 2, 28), utc(2029, 8, 31)]


def test_calendar_quarters_and_half_years_start_on_their_months_at_local_midnight() -> None:
    quarter = BillingSchedule(utc(2020, 5, 5), "Europe/Paris", "quarter", "calendar")
    starts = [p.start.astimezone(PARIS) for p in quarter.periods_between(utc(2026, 1, 1), utc(2026, 12, 31))]
    assert [(s.month, s.day, s.hour) for s in starts] == [(1, 1, 0), (4, 1, 0), (7, 1, 0), (10, 1, 0)]
    assert quarter.period_containing(utc(2026, 5, 20)) == BillingPeriod(utc(2026, 3, 31, 22), utc(2026, 6, 30, 22))
    half = BillingSchedule(utc(2020, 5, 5), "Asia/Kolkata", "half_year", "calendar")
    assert half.period_containing(utc(2026, 9, 1)) == BillingPeriod(utc(2026, 6, 30, 18, 30), utc(2026, 12, 31, 18, 30))
    assert half.period_containing(utc(2026, 9, 1)).index == (2026 * 12 + 6) // 6


def test_calendar_weeks_are_iso_weeks_from_monday_midnight_local() -> None:
    schedule = BillingSchedule(utc(2020, 5, 5), "Europe/Paris", "week", "calendar")
    week = schedule.period_containing(utc(2026, 3, 29, 12))  # Sunday, the day the clocks go forward
    assert week.local("Europe/Paris") == (datetime(2026, 3, 23, tzinfo=PARIS), datetime(2026, 3, 30, tzinfo=PARIS))
    assert week.length == 7 * DAY - SHIFT
    assert week.index == (date(2026, 3, 23).toordinal() - 1) // 7
    assert datetime(2026, 3, 23).isocalendar()[1:] == (13, 1)  # ISO week 13 starts that Monday
    autumn = schedule.period_containing(utc(2026, 10, 25, 12))
    assert autumn.length == 7 * DAY + SHIFT


def test_weekly_anniversaries_keep_the_anchor_weekday_and_time_across_dst() -> None:
    anchor = datetime(2026, 10, 4, 1, 30, tzinfo=NEW_YORK)  # a Sunday, 01:30
    schedule = BillingSchedule(anchor, "America/New_York", "week", "anniversary")
    november = schedule.period_containing(utc(2026, 11, 3))
    # 2026-11-01 01:30 happens twice in New York: the first (EDT) is the boundary.
    assert november.start == utc(2026, 11, 1, 5, 30)
    assert november.end == utc(2026, 11, 8, 6, 30)
    assert november.length == 7 * DAY + SHIFT
    spring = BillingSchedule(datetime(2026, 3, 1, 2, 30, tzinfo=NEW_YORK), "America/New_York", "week", "anniversary")
    # 2026-03-08 02:30 does not exist: the boundary is 03:00 EDT, the end of the gap.
    assert spring.period_containing(utc(2026, 3, 10)).start == utc(2026, 3, 8, 7)
    assert spring.period_containing(utc(2026, 3, 10)).end == datetime(2026, 3, 15, 2, 30, tzinfo=NEW_YORK)


def test_month_and_year_indices_are_unchanged() -> None:
    for interval, expected in (("month", 2026 * 12 + 4), ("year", 2026)):
        schedule = BillingSchedule(utc(2020, 3, 10), "UTC", interval, "anniversary")  # type: ignore[arg-type]
        assert schedule.period_containing(utc(2026, 5, 20)).index == expected


def test_interval_names_are_nouns_and_synonyms_are_refused_with_the_right_name() -> None:
    assert INTERVALS == ("week", "month", "quarter", "half_year", "year")
    for name in INTERVALS:
        assert check_interval(name) == name
    with pytest.raises(ValueError, match=r"interval 'semiannual' is not one of .*\(write 'half_year'\)"):
        check_interval("semiannual")
    with pytest.raises(ValueError, match=r"\(write 'quarter'\)"):
        check_interval("quarterly")
    with pytest.raises(ValueError, match=r"\(write 'year'\)"):
        check_interval("annual")
    with pytest.raises(ValueError, match=r"\(write 'week'\)"):
        check_interval("Week")
    with pytest.raises(ValueError, match=r"interval .fortnight. is not one of week, month, quarter, half_year, year$"):
        check_interval("fortnight")
    with pytest.raises(ValueError, match="interval 'semiannual'"):
        BillingSchedule(utc(2026, 1, 1), "UTC", "semiannual", "calendar")  # type: ignore[arg-type]


# --- in-advance flat fees over every interval (billing's proration of these periods) ------------------


@settings(max_examples=300)
@given(
    at=instants,
    anchor=instants,
    zone=zones,
    interval=st.sampled_from(["week", "quarter", "half_year"]),
    alignment=alignments,
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_a_flat_fee_split_at_a_plan_change_adds_up_to_the_fee(
    at: datetime, anchor: datetime, zone: str, interval: Interval, alignment: Alignment, cut: float
) -> None:
    """Whatever the interval, the parts of a period cut at a plan change (or a start) pay fractions of
    an in-advance fee that add up to the whole fee, to the cent (each line rounded once)."""
    period = BillingSchedule(anchor, zone, interval, alignment).period_containing(at)
    change = period.start + (period.end - period.start) * cut
    before, after = period_fraction(period, period.start, change), period_fraction(period, change, period.end)
    assert abs(before + after - 1) <= Decimal("1e-12")
    fee = FlatCharge(id="platform", model="flat", amount=Decimal("300.00"))
    parts = [price_charge(fee, Decimal(0), PeriodContext(f)).amount for f in (before, after) if f]
    assert abs(sum(round_line(p, "USD") for p in parts) - Decimal("300.00")) <= Decimal("0.01")
