from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tollway.periods import BillingPeriod
from tollway.subscriptions.model import Subscription

START = datetime(2026, 1, 31, 9, 30, 15, 250_000, tzinfo=UTC)


def test_defaults_anchor_on_the_start_in_utc_calendar_months() -> None:
    sub = Subscription.new("acme", "pro", START)
    assert (sub.timezone, sub.alignment, sub.interval, sub.anchor) == ("UTC", "calendar", "month", START)
    assert dict(sub.overrides) == {}
    january = BillingPeriod(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert sub.current_period(START) == january


def test_round_trips_through_redis_fields_without_losing_precision() -> None:
    paris = ZoneInfo("Europe/Paris")
    sub = Subscription.new(
        "acme",
        "pro",
        START,
        timezone="Europe/Paris",
        alignment="anniversary",
        anchor=datetime(2026, 2, 28, 23, 59, 59, 999_999, tzinfo=paris),
        interval="year",
        overrides={"requests_per_minute": 600, "monthly_calls": 0},
    )
    fields = sub.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["overrides"] == '{"monthly_calls":0,"requests_per_minute":600}'
    assert fields["started_at"] == "2026-01-31T09:30:15.250000Z"
    back = Subscription.from_fields(fields)
    assert back == sub
    assert back.anchor == datetime(2026, 2, 28, 22, 59, 59, 999_999, tzinfo=UTC)
    assert back.anchor.tzinfo is UTC


def test_from_fields_fills_optional_fields_and_rejects_broken_ones() -> None:
    minimal = {"customer_id": "acme", "plan_id": "pro", "started_at": "2026-01-31T09:30:00Z"}
    sub = Subscription.from_fields(minimal)
    assert sub.anchor == sub.started_at
    assert sub.interval == "month"
    with pytest.raises(ValueError, match="no 'plan_id' field"):
        Subscription.from_fields({"customer_id": "acme", "started_at": "2026-01-31T09:30:00Z"})
    with pytest.raises(ValueError, match="malformed"):
        Subscription.from_fields({**minimal, "overrides": "{not json"})
    with pytest.raises(ValueError, match="not a JSON object"):
        Subscription.from_fields({**minimal, "overrides": "[1]"})
    with pytest.raises(ValueError, match="whole number"):
        Subscription.from_fields({**minimal, "overrides": '{"x": 1.5}'})
    with pytest.raises(ValueError, match="interval 'fortnight'"):
        Subscription.from_fields({**minimal, "interval": "fortnight"})
    assert Subscription.from_fields({**minimal, "interval": "quarter"}).interval == "quarter"
    with pytest.raises(ValueError, match="unknown timezone"):
        Subscription.from_fields({**minimal, "timezone": "Nowhere/Special"})


def test_validation() -> None:
    with pytest.raises(ValueError, match="customer id 'a b'"):
        Subscription.new("a b", "pro", START)
    with pytest.raises(ValueError, match=r"plan id '\{x\}'"):
        Subscription.new("acme", "{x}", START)
    with pytest.raises(ValueError, match="started_at must be timezone-aware"):
        Subscription.new("acme", "pro", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="anchor must be timezone-aware"):
        Subscription.new("acme", "pro", START, anchor=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown timezone 'Europe/Pariss'"):
        Subscription.new("acme", "pro", START, timezone="Europe/Pariss")
    for bad in (-1, True, 2**63, "5"):
        with pytest.raises(ValueError, match="whole number"):
            Subscription.new("acme", "pro", START, overrides={"x": bad})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="override name"):
        Subscription.new("acme", "pro", START, overrides={"": 1})


def test_overrides_are_frozen_and_apply_over_the_plan() -> None:
    given = {"rpm": 5}
    sub = Subscription.new("acme", "pro", START, overrides=given)
    given["rpm"] = 6
    assert sub.limit("rpm", 100) == 5
    assert sub.limit("daily", 100) == 100
    with pytest.raises(TypeError):
        sub.overrides["rpm"] = 7  # type: ignore[index]
    assert hash(sub) == hash(Subscription.new("acme", "pro", START, overrides={"rpm": 5}))


def test_current_period_follows_time_and_is_remembered() -> None:
    sub = Subscription.new("acme", "pro", START, timezone="America/New_York", alignment="anniversary")
    first = sub.current_period(START)
    assert first.start == START
    assert sub.current_period(START + timedelta(days=3)) is first
    second = sub.current_period(first.end)
    assert second.start == first.end
    assert second.start.astimezone(ZoneInfo("America/New_York")).day == 28  # anchor day 31 → Feb 28
    assert sub.current_period(first.end - timedelta(microseconds=1)) == first


def test_plan_changes_cut_a_span_into_terms_and_round_trip() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first, second = datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)
    sub = Subscription.new("acme", "free", start).changed_to("pro", first).changed_to("team", second)
    assert (sub.plan_id, sub.first_plan_id) == ("team", "free")
    march = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert [(t.plan_id, t.start, t.end) for t in sub.terms(*march)] == [
        ("free", march[0], first),
        ("pro", first, second),
        ("team", second, march[1]),
    ]
    assert [t.plan_id for t in sub.terms(datetime(2025, 12, 1, tzinfo=UTC), start)] == []
    assert [(t.plan_id, t.start) for t in sub.terms(datetime(2025, 12, 1, tzinfo=UTC), first)] == [("free", start)]
    assert [t.plan_id for t in sub.terms(second, march[1])] == ["team"]
    assert Subscription.from_fields(sub.to_fields()) == sub


def test_plan_changes_must_form_a_chain() -> None:
    sub = Subscription.new("acme", "free", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="keeps plan 'free'"):
        sub.changed_to("free", datetime(2026, 2, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="must come after the start"):
        sub.changed_to("pro", datetime(2026, 1, 1, tzinfo=UTC))
    fields = sub.changed_to("pro", datetime(2026, 2, 1, tzinfo=UTC)).to_fields()
    with pytest.raises(ValueError, match="not to the current plan 'free'"):
        Subscription.from_fields({**fields, "plan_id": "free"})
    with pytest.raises(ValueError, match=r"no 'at' field"):
        Subscription.from_fields({**fields, "plan_changes": '[{"to": "pro"}]'})
    with pytest.raises(ValueError, match="plan_changes is not a JSON list"):
        Subscription.from_fields({**fields, "plan_changes": "{}"})
