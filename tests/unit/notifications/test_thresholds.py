"""The notifications spine, pure parts: alert levels and crossings (``thresholds``), deterministic event
ids and the outbox entry of an event (``events``)."""

import hashlib
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.notifications.events import EVENT_TYPES, Event, EventError, event_id, is_event_id, threshold_event_id
from tollway.notifications.thresholds import Alert, crossed, levels, units_below_next, window_start_ms

percents = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100), places=2)
alerts = st.one_of(percents.map(lambda p: Alert(percent=p)), st.integers(1, 10**6).map(lambda u: Alert(units=u)))
limits = st.integers(0, 10**7)
level_sets = st.lists(st.integers(1, 10**6), max_size=10).map(lambda xs: tuple(sorted(set(xs))))


@given(st.lists(alerts, max_size=10), limits)
def test_levels_are_distinct_ascending_and_at_least_one(chosen: list[Alert], limit: int) -> None:
    got = levels(chosen, limit)
    assert list(got) == sorted(set(got))
    assert all(level >= 1 for level in got)
    assert set(got) == {a.level(limit) for a in chosen}


@given(percents, st.integers(1, 10**7))
def test_a_percent_level_is_the_first_count_at_or_past_it(percent: Decimal, limit: int) -> None:
    level = Alert(percent=percent).level(limit)
    assert Decimal(level) >= Decimal(limit) * percent / 100
    assert level == 1 or Decimal(level - 1) < Decimal(limit) * percent / 100
    assert Alert(percent=Decimal(100)).level(limit) == limit


@given(st.integers(0, 10**6), st.integers(0, 10**6), level_sets)
def test_crossed_levels_are_those_between_before_and_after(before: int, after: int, chosen: tuple[int, ...]) -> None:
    got = crossed(before, after, chosen)
    assert got == tuple(level for level in chosen if before < level <= after)
    if after <= before:
        assert got == ()


@given(st.integers(0, 10**6), st.lists(st.integers(0, 50), max_size=30), level_sets)
def test_a_count_rising_step_by_step_crosses_each_level_once(
    start: int, steps: list[int], chosen: tuple[int, ...]
) -> None:
    count, seen = start, []
    for step in steps:
        seen.extend(crossed(count, count + step, chosen))
        count += step
    assert seen == [level for level in chosen if start < level <= count]


@given(st.integers(0, 10**6), level_sets)
def test_units_below_next_stop_one_short_of_the_next_level(used: int, chosen: tuple[int, ...]) -> None:
    below = units_below_next(used, chosen)
    ahead = [level for level in chosen if level > used]
    if not ahead:
        assert below is None
        return
    assert below is not None
    assert below == ahead[0] - used - 1
    assert crossed(used, used + below, chosen) == ()
    assert crossed(used, used + below + 1, chosen) == (ahead[0],)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"percent": Decimal(5), "units": 3}, {"percent": Decimal(0)}, {"percent": Decimal("100.01")}, {"units": 0}],
)
def test_bad_alerts_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="alert"):
        Alert(**kwargs)  # type: ignore[arg-type]


def test_labels() -> None:
    assert Alert(percent=Decimal("80")).label() == "80%"
    assert Alert(percent=Decimal("12.50")).label() == "12.5%"
    assert Alert(percent=Decimal("1E+2")).label() == "100%"
    assert Alert(units=9000).label() == "9000"


@given(st.integers(0, 2**50), st.integers(1, 10**9))
def test_window_start_is_aligned_and_contains_now(now: int, width: int) -> None:
    start = window_start_ms(now, width)
    assert start % width == 0
    assert start <= now < start + width


names = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


@given(st.sampled_from(EVENT_TYPES), st.lists(st.one_of(names, st.integers()), max_size=5))
def test_event_ids_are_sha1_of_the_parts(kind: str, parts: list[str | int]) -> None:
    got = event_id(kind, *parts)
    text = "|".join([kind, *map(str, parts)])
    assert got == "evt_" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:32]
    assert is_event_id(got)
    assert got == event_id(kind, *parts), "deterministic"


def test_threshold_ids_name_customer_policy_period_and_level() -> None:
    one = threshold_event_id("quota.threshold_crossed", "c", "monthly", 1000, 80)
    assert one == event_id("quota.threshold_crossed", "c", "monthly", 1000, 80)
    others = {
        threshold_event_id("limit.threshold_crossed", "c", "monthly", 1000, 80),
        threshold_event_id("quota.threshold_crossed", "d", "monthly", 1000, 80),
        threshold_event_id("quota.threshold_crossed", "c", "daily", 1000, 80),
        threshold_event_id("quota.threshold_crossed", "c", "monthly", 2000, 80),
        threshold_event_id("quota.threshold_crossed", "c", "monthly", 1000, 81),
    }
    assert one not in others
    assert len(others) == 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | names,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=10,
)


@given(
    st.sampled_from(EVENT_TYPES),
    st.lists(names, max_size=3),
    st.integers(0, 2**45),
    names,
    st.dictionaries(names, json_values, max_size=5),
)
def test_events_round_trip_through_the_outbox(
    kind: str, parts: list[str], ts: int, customer: str, data: dict[str, object]
) -> None:
    event = Event(event_id(kind, *parts), kind, ts, customer, data)
    fields = event.stream_fields()
    assert set(fields) == {"id", "type", "ts", "customer", "data"}
    assert Event.from_stream(fields) == event
    payload = json.loads(event.payload())
    assert payload["type"] == kind
    assert payload["data"] == {"customer_id": customer, **data}
    assert payload["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("kind", "ident", "data"),
    [("nope", "evt_" + "0" * 32, {}), ("key.created", "evt_short", {}), ("key.created", "evt_" + "0" * 32, [1])],
)
def test_bad_events_are_refused(kind: str, ident: str, data: object) -> None:
    with pytest.raises(EventError):
        Event(ident, kind, 0, "c", data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields", [{}, {"id": "x"}, {"id": "evt_" + "0" * 32, "type": "key.created", "ts": "x", "data": "{}"}]
)
def test_corrupt_outbox_entries_are_reported(fields: dict[str, str]) -> None:
    with pytest.raises(EventError):
        Event.from_stream(fields)
