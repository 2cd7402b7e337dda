"""Billing periods: calendar or anniversary weeks, months, quarters, half-years and years, in the
customer's timezone, returned in UTC.

Pure (no I/O, no clock): every function takes the instant it reasons about. Billing, quotas and the
CLI share this one definition, so a quota window and the invoice that bills it always agree.

Definitions
-----------

* A period is half-open, ``[start, end)``; ``start`` and ``end`` are UTC-aware datetimes. Consecutive
  periods tile time: the ``end`` of one is the ``start`` of the next, with no gap and no overlap.
* Boundaries are *local wall-clock* times in the customer's IANA timezone (``zoneinfo``):

  - ``calendar``: 00:00 on Monday (``week``: ISO weeks, Monday to Sunday), on the 1st of the month
    (``month``), on the 1st of January, April, July and October (``quarter``), of January and July
    (``half_year``), or on January 1st (``year``).
  - ``anniversary``: the anchor's local time-of-day and, for ``week``, its local weekday; for the
    others its local day-of-month, in every month (``month``), every third month (``quarter``),
    every sixth (``half_year``) or every twelfth (``year``) counted from the anchor's local month.
    A day the month does not have falls on the month's last day, and each boundary is computed from
    the anchor, not from the previous boundary, so the day never drifts: an anchor on Jan 31 gives
    Feb 28 (29 in leap years), Mar 31, Apr 30, May 31, ... monthly, and Apr 30, Jul 31, Oct 31,
    Jan 31 quarterly. A yearly anniversary of Feb 29 falls on Feb 28 in non-leap years.

* The wall-clock time of a boundary may not exist or may happen twice on DST days. The rule is one:
  **a boundary is the first instant at which the customer's wall clock reads the nominal time or later.**
  So an ambiguous time (fall back) takes its first occurrence (``fold=0``), and a nonexistent time
  (spring forward) resolves forward to the instant the clock jumps, i.e. the first existing local time
  after the gap (Europe/Paris 2026-03-29 02:30 → 03:00 CEST = 01:00Z; a skipped day such as
  Pacific/Apia 2011-12-30 → 2011-12-31 00:00). This differs from Java/Temporal's "shift by the gap
  length" (02:30 → 03:30) deliberately: it never moves a boundary past a later nominal time, so it is
  monotonic, and for midnight boundaries in zones that change clocks at midnight it gives the first
  instant of the local day either way.
* The anchor only fixes the day and time of day; periods extend without limit before and after it.
  An anchor that is itself the second occurrence of an ambiguous local time is a boundary's nominal
  time whose first occurrence is an hour earlier: its period starts there (the anchor stays inside).
* Period lengths therefore vary: 7 days for weeks, 28-31 days for months, 89-92 for quarters,
  181-184 for half-years, 365-366 for years, plus or minus the DST shift in periods that contain one
  (an hour; 30 minutes on Lord Howe Island; more in the rare zones that moved across the date line).

``BillingPeriod.index`` numbers periods absolutely, by the local date the period nominally starts on:
for months ``year * 12 + month - 1``; for quarters, half-years and years that month number divided by
3, 6 or 12 (rounded down: for years the local year, as before); for weeks the number of the Monday-to-
Sunday week since 0001-01-01 (a Monday), ``(date.toordinal() - 1) // 7``. It is the same for every
process and stable across restarts, so it can key counters (``quota:<customer>:<index>``).

Interval names (``INTERVALS``) are nouns: ``week``, ``month``, ``quarter``, ``half_year``, ``year``.
``check_interval`` refuses anything else, naming the right word for the usual synonyms (``weekly``,
``semiannual``, ``annual``, ...).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Interval = Literal["week", "month", "quarter", "half_year", "year"]
Alignment = Literal["calendar", "anniversary"]

INTERVALS: Final[tuple[Interval, ...]] = get_args(Interval)
ALIGNMENTS: Final[tuple[Alignment, ...]] = get_args(Alignment)
MONTHS: Final[dict[Interval, int]] = {"month": 1, "quarter": 3, "half_year": 6, "year": 12}
"""How many months a period of each interval spans (``week`` is not made of months)."""
ADJECTIVES: Final[dict[Interval, str]] = {
    "week": "weekly",
    "month": "monthly",
    "quarter": "quarterly",
    "half_year": "half-yearly",
    "year": "yearly",
}
"""How an interval reads in a sentence ("billed quarterly")."""
_SYNONYMS: Final[dict[str, Interval]] = {
    "weekly": "week",
    "weeks": "week",
    "monthly": "month",
    "months": "month",
    "quarterly": "quarter",
    "quarters": "quarter",
    "semiannual": "half_year",
    "semi_annual": "half_year",
    "semi-annual": "half_year",
    "semiannually": "half_year",
    "biannual": "half_year",
    "half-year": "half_year",
    "halfyear": "half_year",
    "half_yearly": "half_year",
    "half-yearly": "half_year",
    "six_months": "half_year",
    "yearly": "year",
    "years": "year",
    "annual": "year",
    "annually": "year",
}

_SECOND: Final = timedelta(seconds=1)


def load_timezone(name: str) -> ZoneInfo:
    """The IANA timezone called ``name``; ``ValueError`` naming it when there is none."""
    return _load_timezone(name)


@lru_cache(maxsize=1024)
def _load_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"timezone {name!r} is not an IANA timezone name (e.g. Europe/Paris, America/New_York, UTC)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r}: use an IANA timezone name such as Europe/Paris, America/New_York or UTC"
        ) from None


def check_interval(value: str) -> Interval:
    """``value`` as an ``Interval``; ``ValueError`` listing the intervals (and the right name for a
    synonym such as ``semiannual``) otherwise."""
    for interval in INTERVALS:
        if value == interval:
            return interval
    raise ValueError(interval_error(value))


def interval_error(value: object) -> str:
    """Why ``value`` is not an interval, naming the right one for a known synonym."""
    message = f"interval {value!r} is not one of {', '.join(INTERVALS)}"
    suggestion = _SYNONYMS.get(value.strip().lower()) if isinstance(value, str) else None
    if suggestion is None and isinstance(value, str) and value.strip().lower() in INTERVALS:
        suggestion = check_interval(value.strip().lower())
    if suggestion is not None:
        message += f" (write {suggestion!r})"
    return message


def check_alignment(value: str) -> Alignment:
    if value == "calendar":
        return "calendar"
    if value == "anniversary":
        return "anniversary"
    raise ValueError(f"alignment {value!r} is not one of {', '.join(ALIGNMENTS)}")


def require_aware(name: str, value: datetime) -> datetime:
    """``value`` unchanged if it carries a UTC offset; ``ValueError`` naming it otherwise."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got the naive datetime {value.isoformat()})")
    return value


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """A half-open span of time ``[start, end)``, both ends UTC-aware.

    ``index`` is the absolute number of the period in its schedule (see the module docstring), or
    ``None`` for a period built by hand (e.g. read back from an invoice). Equality is by ``start`` and
    ``end`` only."""

    start: datetime
    end: datetime
    index: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        start = require_aware("start", self.start).astimezone(UTC)
        end = require_aware("end", self.end).astimezone(UTC)
        if end <= start:
            raise ValueError(f"a period must end after it starts ({start.isoformat()} .. {end.isoformat()})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @property
    def length(self) -> timedelta:
        """Elapsed (physical) time from start to end: DST shifts included."""
        return self.end - self.start

    def contains(self, at: datetime) -> bool:
        return self.start <= require_aware("at", at) < self.end

    def elapsed(self, at: datetime) -> timedelta:
        """Time of the period already past at ``at``, clamped to ``[0, length]`` (proration numerator)."""
        require_aware("at", at)
        return min(max(at, self.start), self.end) - self.start

    def remaining(self, at: datetime) -> timedelta:
        """Time of the period still to come at ``at``, clamped to ``[0, length]``."""
        return self.length - self.elapsed(at)

    def overlap(self, start: datetime, end: datetime) -> timedelta:
        """How much of ``[start, end)`` falls in this period (zero if none)."""
        lo = max(self.start, require_aware("start", start))
        hi = min(self.end, require_aware("end", end))
        return max(hi - lo, timedelta(0))

    def local(self, timezone: str) -> tuple[datetime, datetime]:
        """``(start, end)`` as wall-clock datetimes in ``timezone``, for display."""
        tz = load_timezone(timezone)
        return self.start.astimezone(tz), self.end.astimezone(tz)


@dataclass(frozen=True, slots=True)
class BillingSchedule:
    """The rule that cuts time into a customer's billing periods."""

    anchor: datetime
    timezone: str
    interval: Interval = "month"
    alignment: Alignment = "calendar"

    def __post_init__(self) -> None:
        require_aware("anchor", self.anchor)
        load_timezone(self.timezone)
        check_interval(self.interval)
        check_alignment(self.alignment)

    @property
    def _tz(self) -> ZoneInfo:
        return load_timezone(self.timezone)

    def boundary(self, index: int) -> datetime:
        """The UTC start of the period numbered ``index`` (remembered: a bill run asks it of every
        customer, and customers on calendar periods in one timezone share their schedule)."""
        return _boundary(self, index)

    def period(self, index: int) -> BillingPeriod:
        """The period numbered ``index``."""
        return BillingPeriod(self.boundary(index), self.boundary(index + 1), index)

    def index_of(self, at: datetime) -> int:
        """The number of the period containing ``at``."""
        index = self.period_containing(at).index
        assert index is not None
        return index

    def period_containing(self, at: datetime) -> BillingPeriod:
        at = require_aware("at", at).astimezone(UTC)
        local = at.astimezone(self._tz)
        if self.interval == "week":
            index = (local.toordinal() - 1 - self._phase) // 7
        else:
            index = (local.year * 12 + local.month - 1 - self._phase) // MONTHS[self.interval]
        # The guess is the period whose nominal start is on or before the local date of ``at``; it is
        # off by one before the anchor's time of day, and (only in zones falling back across a
        # boundary) just after one.
        start, end = self.boundary(index), self.boundary(index + 1)
        while at < start:
            index -= 1
            start, end = self.boundary(index), start
        while at >= end:
            index += 1
            start, end = end, self.boundary(index + 1)
        return BillingPeriod(start, end, index)

    def next_period(self, period: BillingPeriod) -> BillingPeriod:
        return self.period(self._index(period) + 1)

    def previous_period(self, period: BillingPeriod) -> BillingPeriod:
        return self.period(self._index(period) - 1)

    def periods_between(self, start: datetime, end: datetime) -> list[BillingPeriod]:
        """The periods overlapping ``[start, end)``, in order (empty when ``end <= start``)."""
        return list(self.iter_periods(start, end))

    def iter_periods(self, start: datetime, end: datetime) -> Iterator[BillingPeriod]:
        require_aware("start", start)
        require_aware("end", end)
        if end <= start:
            return
        index = self.index_of(start)
        while True:
            period = self.period(index)
            yield period
            if period.end >= end:
                return
            index += 1

    def _index(self, period: BillingPeriod) -> int:
        if period.index is not None and self.boundary(period.index) == period.start:
            return period.index
        index = self.index_of(period.start)
        if self.boundary(index) != period.start:
            raise ValueError(f"the period starting {period.start.isoformat()} is not one of this schedule's")
        return index

    @property
    def _phase(self) -> int:
        """Where in its cycle period 0 starts: for weeks the weekday (0 = Monday), else the month
        (``year * 12 + month - 1``) modulo the interval's months. 0 for calendar periods."""
        if self.alignment == "calendar":
            return 0
        anchor = self.anchor.astimezone(self._tz)
        if self.interval == "week":
            return anchor.weekday()
        return (anchor.year * 12 + anchor.month - 1) % MONTHS[self.interval]

    def _nominal(self, index: int) -> datetime:
        """The naive local wall-clock time at which period ``index`` starts."""
        if self.interval == "week":
            monday_based = date.fromordinal(7 * index + 1 + self._phase)  # 0001-01-01 is a Monday
            if self.alignment == "calendar":
                return datetime.combine(monday_based, time())
            anchor = self.anchor.astimezone(self._tz)
            return datetime.combine(monday_based, time(anchor.hour, anchor.minute, anchor.second, anchor.microsecond))
        year, month0 = divmod(index * MONTHS[self.interval] + self._phase, 12)
        month = month0 + 1
        if self.alignment == "calendar":
            return datetime(year, month, 1)
        anchor = self.anchor.astimezone(self._tz)
        day = min(anchor.day, calendar.monthrange(year, month)[1])
        clock = time(anchor.hour, anchor.minute, anchor.second, anchor.microsecond)
        return datetime.combine(datetime(year, month, day).date(), clock)


def period_containing(
    at: datetime, *, anchor: datetime, timezone: str, interval: Interval, alignment: Alignment
) -> BillingPeriod:
    """The billing period containing ``at`` (see the module docstring for the rules)."""
    return BillingSchedule(anchor, timezone, interval, alignment).period_containing(at)


def resolve_local(wall_time: datetime, timezone: str) -> datetime:
    """The UTC instant of a naive local wall-clock time in ``timezone``, by the boundary rule: the first
    instant the clock reads that time or later (first occurrence if repeated, end of the gap if skipped)."""
    if wall_time.tzinfo is not None:
        raise ValueError(f"resolve_local takes a naive wall-clock time, not {wall_time.isoformat()}")
    return _first_instant_at_or_after(wall_time, load_timezone(timezone))


@lru_cache(maxsize=65536)
def _boundary(schedule: BillingSchedule, index: int) -> datetime:
    return _first_instant_at_or_after(schedule._nominal(index), schedule._tz)


def _first_instant_at_or_after(nominal: datetime, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the wall clock in ``tz`` reads ``nominal`` (naive) or later."""
    first = nominal.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == nominal:
        return first  # exists; fold=0 is its first occurrence when it happens twice
    # In a gap: fold=0 reads it with the offset before the jump, fold=1 with the one after; the jump
    # lies between the two readings. Transitions fall on whole seconds: bisect over seconds.
    other = nominal.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(first, other), max(first, other)
    lo = lo.replace(microsecond=0)
    if hi.microsecond:
        hi = hi.replace(microsecond=0) + _SECOND
    if _wall(hi, tz) < nominal:  # cannot happen with tzdata, but never loop on a surprise
        raise ValueError(f"cannot resolve local time {nominal.isoformat()} in {tz.key}")
    # Invariant: wall(lo) < nominal <= wall(hi).
    while (steps := (hi - lo) // _SECOND) > 1:
        mid = lo + (steps // 2) * _SECOND
        if _wall(mid, tz) < nominal:
            lo = mid
        else:
            hi = mid
    return hi


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)
