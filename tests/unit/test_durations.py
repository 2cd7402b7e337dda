from datetime import UTC, datetime, timedelta

import pytest

from tollway.cli.durations import parse_duration, parse_instant

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24h", timedelta(hours=24)), ("1h30m", timedelta(minutes=90)), ("7d", timedelta(days=7)), ("90s", timedelta(90))],
)
def test_durations(text: str, expected: timedelta) -> None:
    if text == "90s":
        expected = timedelta(seconds=90)
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "24", "1y", "-1h", "1h 30m", "soon"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_instants() -> None:
    assert parse_instant("30d", NOW) == NOW + timedelta(days=30)
    assert parse_instant("2027-01-31T00:00:00Z", NOW) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_instant("2027-01-31", NOW) == datetime(2027, 1, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("next tuesday", NOW)
