"""Billable quantities from the warehouse: per customer × meter, for one billing period, summed in SQL.

One query per period and set of rules (for every customer whose period it is, ``GROUP BY
customer_id``; or for one customer) reads ``usage FINAL`` (the highest version of each request;
replays and decision rows superseded by their response row count once) and sums each meter with its
own billable rule, all in ClickHouse; Python only prices the sums. The rules, per meter:

* ``outcome = 'refused'`` never counts (Tollway refused the request; nothing was served).
* ``billable.exclude_statuses``: a status class ``5xx`` is ``intDiv(status, 100) = 5``, an exact
  status ``429`` is ``status = 429`` (the same matching as ``Billable.counts``).
* ``status = 0`` (the response was never reported: a decision row with no response row) **counts**:
  the request was admitted and almost always served, and no exclusion pattern can name status 0.
* The period is ``[start, end)`` on ``ts`` (Tollway's decision time), UTC instants.

The outcome and status conditions sit inside ``sumIf`` rather than in ``WHERE``: with ``FINAL``
only conditions on the sorting key (``customer_id``, ``ts``) are safe to apply before deduplication,
and those are the only ones in ``WHERE``.

Every quantity comes with a ``QuantitySource``: the one-customer, one-meter query and its parameters,
which return exactly that quantity when run again (``reproduce``), for an invoice line to record. It
sums with the same expression as the batched query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any, Final

from tollway.plans.schema import Billable
from tollway.warehouse.connection import check_identifier, query_rows

_TS_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True, slots=True)
class QuantitySource:
    """How to reproduce a quantity: ``sql`` with server-side ``{name:Type}`` parameters ``parameters``
    (all strings: database, customer, period start and end, meter). The query returns one row, one column."""

    sql: str
    parameters: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "parameters": dict(self.parameters)}


@dataclass(frozen=True, slots=True)
class Quantities:
    """A customer's billable quantity per meter over ``[start, end)``, each with its source."""

    customer_id: str
    start: datetime
    end: datetime
    quantities: Mapping[str, Decimal]
    sources: Mapping[str, QuantitySource]


def format_instant(at: datetime) -> str:
    """A UTC instant as ClickHouse ``DateTime64`` text (microseconds; ``ts`` has milliseconds)."""
    if at.tzinfo is None:
        raise ValueError(f"instant {at.isoformat()} has no timezone")
    return at.astimezone(UTC).strftime(_TS_FORMAT)


def status_condition(billable: Billable) -> str:
    """SQL that is true for the statuses ``billable`` counts (``1`` when it excludes nothing)."""
    excluded: list[str] = []
    for pattern in billable.exclude_statuses:
        if pattern.endswith("xx"):
            excluded.append(f"intDiv(status, 100) = {int(pattern[0])}")
        else:
            excluded.append(f"status = {int(pattern)}")
    if not excluded:
        return "1"
    return "NOT (" + " OR ".join(excluded) + ")"


def meter_expression(meter: str, billable: Billable) -> str:
    """The ``sumIf`` of one meter: admitted requests whose status the meter bills. ``meter`` is bound
    as a parameter named ``meter_<n>`` by the caller, so only the rule is spliced (from a checked pattern)."""
    return f"sumIf(meters[{{{meter}:String}}], outcome = 'admitted' AND {status_condition(billable)})"


_FROM: Final = (
    "FROM {db:Identifier}.usage FINAL\n"
    "WHERE customer_id = {customer:String}\n"
    "  AND ts >= {start:DateTime64(6, 'UTC')} AND ts < {end:DateTime64(6, 'UTC')}"
)


def meter_query(billable: Billable) -> str:
    """The query of one meter's quantity (parameter ``meter``): what an invoice line records."""
    return f"SELECT toString({meter_expression('meter', billable)}) AS quantity\n{_FROM}"


def period_query(rules: Sequence[tuple[str, Billable]]) -> tuple[str, dict[str, str]]:
    """The query of several meters at once (column ``q<n>`` = meter ``n``) and its meter parameters."""
    columns = [f"toString({meter_expression(f'meter_{n}', rule)}) AS q{n}" for n, (_, rule) in enumerate(rules)]
    parameters = {f"meter_{n}": meter for n, (meter, _) in enumerate(rules)}
    select = ",\n       ".join(columns) if columns else "0 AS none"
    return f"SELECT {select}\n{_FROM}", parameters


def customers_query(rules: Sequence[tuple[str, Billable]]) -> tuple[str, dict[str, str]]:
    """Like ``period_query`` for many customers (parameter ``customers``), one row per customer found."""
    columns = [f"toString({meter_expression(f'meter_{n}', rule)}) AS q{n}" for n, (_, rule) in enumerate(rules)]
    parameters = {f"meter_{n}": meter for n, (meter, _) in enumerate(rules)}
    where = _FROM.replace("customer_id = {customer:String}", "customer_id IN {customers:Array(String)}")
    return f"SELECT {', '.join(['customer_id', *columns])}\n{where}\nGROUP BY customer_id", parameters


def base_parameters(database: str, customer_id: str, start: datetime, end: datetime) -> dict[str, str]:
    """The parameters every quantity query takes."""
    return {
        "db": check_identifier(database),
        "customer": customer_id,
        "start": format_instant(start),
        "end": format_instant(end),
    }


def billable_quantities(
    client: Any,
    database: str,
    customer_id: str,
    start: datetime,
    end: datetime,
    rules: Mapping[str, Billable],
) -> Quantities:
    """Sum ``rules``' meters (meter → its billable rule) for ``customer_id`` over ``[start, end)``."""
    ordered = sorted(rules.items())
    base = base_parameters(database, customer_id, start, end)
    sql, meters = period_query(ordered)
    rows = query_rows(client, sql, {**base, **meters})
    values = rows[0] if rows else ()
    quantities: dict[str, Decimal] = {}
    sources: dict[str, QuantitySource] = {}
    for n, (meter, rule) in enumerate(ordered):
        quantities[meter] = plain(Decimal(str(values[n]))) if values else Decimal(0)
        sources[meter] = QuantitySource(meter_query(rule), {**base, "meter": meter})
    return Quantities(customer_id, start, end, quantities, sources)


_NO_BOUNDARY: Final = 2**63 - 1


def _boundary_ms(at: datetime) -> int:
    """``ts >= at`` as ``epoch ms of ts >= this`` (``ts`` has milliseconds: a boundary inside a millisecond
    rounds up)."""
    micros = (at - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND
    return -(-micros // 1000)


_MICROSECOND: Final = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def part_quantities_of(
    client: Any,
    database: str,
    start: datetime,
    end: datetime,
    parts: Mapping[str, Sequence[tuple[datetime, datetime, Mapping[str, Billable]]]],
) -> dict[str, list[Quantities]]:
    """Each customer's ``parts`` of ``[start, end)`` (spans inside it, in time order, each with its plan's
    meters and rules) summed from **one** scan: one ``Quantities`` per part, in the same order.

    Each row's part is computed in SQL: ``transform`` (a hashed look-up of the customer's n-th
    boundary, one per boundary the customers have at most) cuts the period at every part's start and
    end, so customers whose periods are cut at different instants (trials ending 14 days after each
    one's start, plan changes) still share the scan. The columns are the distinct (meter, rule) pairs of
    all the parts: a meter that two plans bill under different rules is summed twice, each part takes
    its own. Rows outside every part (before a subscription's start) are summed and dropped."""
    columns: dict[tuple[str, tuple[str, ...]], int] = {}
    ordered: list[tuple[str, Billable]] = []
    cut: dict[str, list[int]] = {}
    for customer_id, spans in parts.items():
        edges: set[datetime] = set()
        for part_start, part_end, rules in spans:
            edges.update(at for at in (part_start, part_end) if start < at < end)
            for meter, rule in sorted(rules.items()):
                key = (meter, tuple(rule.exclude_statuses))
                if key not in columns:
                    columns[key] = len(ordered)
                    ordered.append((meter, rule))
        if edges:
            cut[customer_id] = [_boundary_ms(at) for at in sorted(edges)]
    sql, meters = customers_query(ordered)
    base = {"db": check_identifier(database), "start": format_instant(start), "end": format_instant(end)}
    parameters: dict[str, Any] = {**base, **meters, "customers": sorted(parts)}
    most = max((len(v) for v in cut.values()), default=0)
    if most:
        keys = sorted(cut)
        parameters["cut_keys"] = keys
        terms = []
        for n in range(most):
            parameters[f"cut_{n}"] = [cut[k][n] if n < len(cut[k]) else _NO_BOUNDARY for k in keys]
            terms.append(
                f"(toUnixTimestamp64Milli(ts) >= transform(customer_id, {{cut_keys:Array(String)}}, "
                f"{{cut_{n}:Array(Int64)}}, toInt64({_NO_BOUNDARY})))"
            )
        sql = sql.replace("SELECT customer_id,", f"SELECT customer_id, toUInt32({' + '.join(terms)}) AS part,", 1)
        sql = sql.replace("GROUP BY customer_id", "GROUP BY customer_id, part")
    rows = query_rows(client, sql, parameters) if parts and ordered else []
    width = 2 if most else 1
    found = {(str(r[0]), int(r[1]) if most else 0): r[width:] for r in rows}
    result: dict[str, list[Quantities]] = {}
    queries: dict[tuple[str, tuple[str, ...]], str] = {}  # each (meter, rule)'s one-customer query
    for customer_id, spans in parts.items():
        edges_of = [start, *sorted({at for s, e, _ in spans for at in (s, e) if start < at < end}), end]
        index_of = {span: n for n, span in enumerate(pairwise(edges_of))}
        quantities_of: list[Quantities] = []
        for part_start, part_end, rules in spans:
            values = found.get((customer_id, index_of[part_start, part_end]))
            own = {
                "db": base["db"],
                "customer": customer_id,
                "start": format_instant(part_start),
                "end": format_instant(part_end),
            }
            quantities: dict[str, Decimal] = {}
            sources: dict[str, QuantitySource] = {}
            for meter, rule in sorted(rules.items()):
                key = (meter, tuple(rule.exclude_statuses))
                quantities[meter] = plain(Decimal(str(values[columns[key]]))) if values is not None else Decimal(0)
                if key not in queries:
                    queries[key] = meter_query(rule)
                sources[meter] = QuantitySource(queries[key], {**own, "meter": meter})
            quantities_of.append(Quantities(customer_id, part_start, part_end, quantities, sources))
        result[customer_id] = quantities_of
    return result


def reproduce(client: Any, source: QuantitySource) -> Decimal:
    """Run a recorded quantity query again: the quantity it returns today."""
    rows = query_rows(client, source.sql, source.parameters)
    return plain(Decimal(str(rows[0][0])))


def plain(quantity: Decimal) -> Decimal:
    """``quantity`` without trailing zeros and never in exponent form (``3.000000000`` → ``3``)."""
    reduced = quantity.normalize()
    exponent = reduced.as_tuple().exponent
    return reduced.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else reduced
