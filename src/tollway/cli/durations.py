"""Parsing human time inputs for the CLI: ``24h``, ``1h30m``, ``7d``, or an ISO 8601 instant."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

_PART: Final = re.compile(r"([0-9]+)([wdhms])")
_UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` and combinations such as ``1h30m``."""
    cleaned = text.strip().lower()
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"{text!r} is not a duration: use e.g. 30m, 24h, 7d or 1h30m")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(cleaned)))


def parse_instant(text: str, now: datetime) -> datetime:
    """A duration from ``now`` (``30d``) or an ISO 8601 date/time; a time without zone is taken as UTC."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h) nor an ISO 8601 time (2027-01-31T00:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
