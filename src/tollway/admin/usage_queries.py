"""Usage read from ``usage FINAL`` (every request once, at its highest version) for one customer.

Per day (in a given timezone), feature and meter: ``requests`` admitted requests that carried the meter
and ``quantity`` their total, and ``refused`` refused requests that carried it (refusals are never
billed). As in ``tollway.billing.aggregate``, only conditions on the sorting key (customer, ts) are
applied together with ``FINAL``; the rest after it. Quantities are decimal strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from tollway.billing.aggregate import format_instant
from tollway.warehouse.connection import check_identifier, query_rows

_DEDUPLICATED: Final = (
    "(SELECT ts, feature, outcome, meters FROM {db:Identifier}.usage FINAL "
    "WHERE customer_id = {customer:String} "
    "AND ts >= {start:DateTime64(6, 'UTC')} AND ts < {end:DateTime64(6, 'UTC')})"
)
_PER_METER: Final = "ARRAY JOIN mapKeys(meters) AS meter, mapValues(meters) AS quantity\n"

DAILY_SQL: Final = (
    "SELECT toString(toDate(ts, {tz:String})) AS day, feature, meter,\n"
    "       countIf(outcome = 'admitted') AS requests,\n"
    "       toString(sumIf(quantity, outcome = 'admitted')) AS quantity,\n"
    "       countIf(outcome = 'refused') AS refused\n"
    "FROM " + _DEDUPLICATED + "\n" + _PER_METER + "WHERE ({feature:String} = '' OR feature = {feature:String})\n"
    "  AND ({meter:String} = '' OR meter = {meter:String})\n"
    "GROUP BY day, feature, meter\n"
    "ORDER BY day, feature, meter\n"
    "LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
)

TOTALS_SQL: Final = (
    "SELECT meter, countIf(outcome = 'admitted') AS requests,\n"
    "       toString(sumIf(quantity, outcome = 'admitted')) AS quantity, countIf(outcome = 'refused') AS refused\n"
    "FROM " + _DEDUPLICATED + "\n" + _PER_METER + "GROUP BY meter\n"
    "ORDER BY meter"
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    feature: str
    meter: str
    requests: int
    quantity: str
    refused: int


@dataclass(frozen=True, slots=True)
class MeterTotal:
    meter: str
    requests: int
    quantity: str
    refused: int


def plain(text: str) -> str:
    """A ClickHouse decimal as the shortest plain decimal string (``5120.000000000`` → ``5120``)."""
    value = Decimal(text)
    return format(value.normalize(), "f") if value else "0"


def _parameters(database: str, customer_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "db": check_identifier(database),
        "customer": customer_id,
        "start": format_instant(start),
        "end": format_instant(end),
    }


def daily_usage(
    client: Any,
    database: str,
    customer_id: str,
    start: datetime,
    end: datetime,
    *,
    timezone: str = "UTC",
    feature: str = "",
    meter: str = "",
    offset: int = 0,
    limit: int = 1000,
) -> list[UsageRow]:
    """Rows per day, feature and meter over ``[start, end)``, in (day, feature, meter) order."""
    parameters = {
        **_parameters(database, customer_id, start, end),
        "tz": timezone,
        "feature": feature,
        "meter": meter,
        "offset": offset,
        "limit": limit,
    }
    rows = query_rows(client, DAILY_SQL, parameters)
    return [UsageRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]), plain(str(r[4])), int(r[5])) for r in rows]


def meter_totals(client: Any, database: str, customer_id: str, start: datetime, end: datetime) -> list[MeterTotal]:
    """Each meter's totals over ``[start, end)``, by meter name."""
    rows = query_rows(client, TOTALS_SQL, _parameters(database, customer_id, start, end))
    return [MeterTotal(str(r[0]), int(r[1]), plain(str(r[2])), int(r[3])) for r in rows]
