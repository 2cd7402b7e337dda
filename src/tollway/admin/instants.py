"""Instants the API accepts: RFC 3339 with an offset, normalised to UTC, between 1970 and 2200 (what
the stores and ClickHouse's DateTime64 hold); anything else is a 422."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)


_RFC3339: Final = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _rfc3339(value: object) -> object:
    """Text in RFC 3339 form only (pydantic alone would also take a number of epoch seconds)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2026-11-01T00:00:00Z")
    return value


def _bounded(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant must be from 1970 to 2199") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("the instant must be from 1970 to 2199")
    return utc


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_bounded)]
