"""Billing throughput: how fast a month of usage becomes priced invoices (aggregation in SQL, money in Python).

Not a wrk row: a subprocess of its own (chdb opens one path per process) opens a fresh embedded
ClickHouse, applies the migrations and generates ``rows`` usage rows for ``customers`` customers over
one calendar month with ``INSERT INTO usage SELECT … FROM numbers(N)`` (not timed; then it waits until the background
merges the inserts started are over, ``settle_s``, not timed either): one request per
row, spread evenly over the month; about 1 % of the requests also have a superseded decision row
(version 1) next to their response row (version 2); some requests are refused (429, version 1 only),
some answered 5xx, 429 or 404; meters ``requests``, ``egress`` (response bytes) and ``search-units``
(on search requests). The table is never optimized: ``FINAL`` deduplicates across the parts left.

Then it subscribes ``customers`` customers in memory (no Redis: ``build_invoices`` takes
subscriptions as values) to three priced plans (flat fee, per-unit, graduated and volume tiers,
package, allowance, a discount, a minimum commitment), one of them with two versions (``COHORTS``:
legacy ``pro``, ``pro@2``, ``pro@1`` migrated to ``pro@2`` in the middle of the month — two parts,
``plan_parts`` counts them — or from the next period), and times ``invoices.build_invoices`` — what
``tollway bill`` runs before storing: the usage queries (``usage FINAL``, one scan per period span and chunk
of customers, each customer's parts cut in SQL: ``aggregate.part_quantities_of``) and ``rating.rate`` for every
part of every customer. Phases and add-ons are in the dataset too (``with_phases_and_addons``: the
``pro-2`` customers end a free trial 7 days into the month, the ``scale`` customers buy seats, an
add-on, in its middle; ``phases`` and ``addons`` count them). ``aggregation_s`` is the time
until the first customer is priced (grouping the customers by period, the queries and
their rows turned into quantities), ``query_s`` the part of it spent in the queries (inside the
engine), ``pricing_s`` the rest (``rate`` and the invoice of each customer). The headline
``seconds`` is that first, cold run; the same run again is reported as ``warm_seconds``. Storing the invoices in
ClickHouse (``invoice_store.save``) is timed apart (``store_s``) and not counted in ``rows_per_s``;
no invoice files are written.

Subprocess: ``python -m tollway.bench.billing_throughput --chdb PATH --rows N``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from tollway.bench.errors import BenchError
from tollway.bench.subprocess_json import run_json

if TYPE_CHECKING:
    from tollway.subscriptions.model import Subscription

DEFAULT_ROWS: Final = 100_000_000
"""The target's own size (100 M rows in ≤ 10 s): the pricing of 10,000 customers (~0.7 s) is the same
at any size, so a smaller run measures mostly that (10 M rows: ~6 M rows/s)."""
DEFAULT_CUSTOMERS: Final = 10_000
DATABASE: Final = "tollway"
_SUBPROCESS_TIMEOUT_S: Final = 1800.0
_RESULT_KEYS: Final = ("rows", "seconds", "rows_per_s", "customers", "invoices_priced", "generate_s")
_SETTLE_TIMEOUT_S: Final = 120.0
_SETTLE_QUIET_S: Final = 1.0
_DUPLICATE_EVERY: Final = 100  # one request in 100 also has its (superseded) decision row

CATALOG: Final = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: tollway-billing-bench, version: "1"}
meters:
  requests:
    unit: requests
    billable: {exclude_statuses: ["5xx", "429"]}
  egress:
    unit: response_bytes
  search-units:
    unit: cost
plans:
  starter:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "19.00", timing: in_advance}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.0004"}
        - {id: search, model: per_unit, meter: search-units, unit_amount: "0.002"}
        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.0000001"}
  pro:
    versions:
      1:
        pricing:
          currency: USD
          interval: month
          charges:
            - {id: platform, model: flat, amount: "49.00", timing: in_advance}
            - id: calls
              model: graduated
              meter: requests
              tiers:
                - {up_to: 500, unit_amount: "0"}
                - {up_to: 1000, unit_amount: "0.0003", flat_amount: "1.00"}
                - {up_to: null, unit_amount: "0.0002"}
            - id: search
              model: package
              meter: search-units
              package_size: 100
              package_amount: "0.25"
              rounding: up
              free_units: 50
            - {id: egress, model: allowance, meter: egress, included: 5000000, overage_unit_amount: "0.00000009"}
          discounts:
            - {id: launch, percent: "20", applies_to: invoice, periods: 3}
      2:
        phases:
          - {id: trial, days: 14, free: true}
        pricing:
          currency: USD
          interval: month
          charges:
            - {id: platform, model: flat, amount: "59.00", timing: in_advance}
            - id: calls
              model: graduated
              meter: requests
              tiers:
                - {up_to: 1000, unit_amount: "0"}
                - {up_to: null, unit_amount: "0.00025"}
            - id: search
              model: package
              meter: search-units
              package_size: 100
              package_amount: "0.20"
              rounding: up
            - {id: egress, model: allowance, meter: egress, included: 10000000, overage_unit_amount: "0.00000008"}
  scale:
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "240.00", timing: in_advance}
        - id: calls
          model: volume
          meter: requests
          tiers:
            - {up_to: 1000, unit_amount: "0.00030"}
            - {up_to: null, unit_amount: "0.00025"}
        - {id: search, model: per_unit, meter: search-units, unit_amount: "0.0015"}
        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.00000008"}
      minimum_commitment: "300.00"
  seats:
    addon: {max_quantity: 20}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: seat, model: flat, amount: "10.00"}
"""


def billed_month(now: datetime) -> tuple[str, datetime, datetime]:
    """The last full UTC calendar month before ``now``: its label, start and end."""
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    start = datetime(first.year - 1, 12, 1, tzinfo=UTC) if first.month == 1 else first.replace(month=first.month - 1)
    return f"{start.year:04d}-{start.month:02d}", start, first


def customer_id(number: int) -> str:
    return f"cus_{number:05d}"


Cohort = Literal["starter", "scale", "pro-legacy", "pro-migrated", "pro-2", "pro-next"]
COHORTS: Final[tuple[Cohort, ...]] = ("starter", "scale", "pro-legacy", "pro-migrated", "pro-2", "pro-next")
"""Who is on what (``cohort``). One customer in three is on ``pro``, a versioned plan; of those, one in
four each: ``pro-legacy`` (the bare ``pro``, a subscription stored before pro had versions: version 1),
``pro-migrated`` (``pro@1``, migrated to ``pro@2`` in the middle of the billed month: two parts, each
summed and priced on its own), ``pro-2`` (sold at ``pro@2``), ``pro-next`` (``pro@1``, a migration to
``pro@2`` scheduled for the next period: billed at ``pro@1``)."""


def cohort(number: int) -> Cohort:
    """The cohort of customer ``number`` (see ``COHORTS``; ``cohort_sql`` is the same in SQL)."""
    if number % 3 == 0:
        return "starter"
    if number % 3 == 2:
        return "scale"
    return ("pro-legacy", "pro-migrated", "pro-2", "pro-next")[number // 3 % 4]


def cohort_sql(number: str) -> str:
    """``cohort`` as a ClickHouse expression of the customer number ``number`` (an index into ``COHORTS``)."""
    return f"multiIf({number} % 3 = 0, 0, {number} % 3 = 2, 1, 2 + intDiv({number}, 3) % 4)"


def migration_instant(start: datetime) -> datetime:
    """When the ``pro-migrated`` customers move from ``pro@1`` to ``pro@2``: 14.5 days into the month."""
    return start + timedelta(days=14, hours=12)


TRIAL_PLAN: Final = "pro@2:trial"
"""The phase plan of the ``pro-2`` customers' trial (``CATALOG``: ``pro`` version 2's 14-day free trial)."""
TRIAL_DAYS: Final = 14
TRIAL_BEFORE: Final = timedelta(days=7)
"""The trial customers subscribe this long before the billed month: their trial ends 7 days into it."""
ADDON: Final = "seats"
ADDON_QUANTITY: Final = 3


def trial_ends(start: datetime) -> datetime:
    """When the ``pro-2`` customers' trial ends: 7 days into the month (UTC: no DST)."""
    return start - TRIAL_BEFORE + timedelta(days=TRIAL_DAYS)


def _split(rows: int) -> tuple[int, int]:
    """(requests, duplicate decision rows) adding up to ``rows``: about one duplicate per 100 requests."""
    duplicates = rows // (_DUPLICATE_EVERY + 1)
    return rows - duplicates, duplicates


_COLUMNS: Final = (
    "request_id, ts, customer_id, subject, plan, feature, route, method, status, outcome, reason, "
    "limits_checked, request_bytes, response_bytes, upstream_latency_ms, meters, version"
)


def generation_sql(
    database: str, rows: int, customers: int, start: datetime, end: datetime
) -> tuple[list[str], dict[str, int]]:
    """The ``INSERT … SELECT FROM numbers()`` statements and the expected counts of the dataset."""
    requests, duplicates = _split(rows)
    span_ms = int((end - start).total_seconds() * 1000)
    begin = start.strftime("%Y-%m-%d %H:%M:%S")
    migrated = migration_instant(start).strftime("%Y-%m-%d %H:%M:%S")
    trial_end = trial_ends(start).strftime("%Y-%m-%d %H:%M:%S")
    # The plan each request was decided under (what the gateway writes in `plan`), by cohort.
    plan = (
        f"['starter', 'scale', 'pro', if(ts < toDateTime64('{migrated}', 3, 'UTC'), 'pro@1', 'pro@2'), "
        f"if(ts < toDateTime64('{trial_end}', 3, 'UTC'), '{TRIAL_PLAN}', 'pro@2'), "
        f"'pro@1'][{cohort_sql(f'(n % {customers})')} + 1]"
    )
    # One request per number n: customer n % customers, evenly over the month, time order = n order.
    request = f"""
        'req_' || toString(n) AS request_id,
        addMilliseconds(toDateTime64('{begin}', 3, 'UTC'), intDiv(n * {span_ms}, {requests})) AS ts,
        'cus_' || leftPad(toString(n % {customers}), 5, '0') AS customer_id,
        'key_' || leftPad(toString(n % {customers}), 5, '0') AS subject,
        {plan} AS plan,
        if(n % 3 = 0, 'search', 'items-read') AS feature,
        if(n % 3 = 0, '/v1/search', '/v1/items') AS route,
        'GET' AS method"""
    refused = "n % 53 = 17"
    status = "multiIf(n % 53 = 17, 429, n % 97 = 3, 503, n % 89 = 5, 429, n % 41 = 1, 404, 200)"
    search_units = "if(n % 3 = 0, if(n % 15 = 0, 5, 1), 0)"
    response_bytes = f"if({refused}, 0, 200 + intHash64(n) % 20000)"
    meters = (
        "CAST(mapFilter((k, v) -> v != 0, map('requests', 1, 'egress', {rb}, 'search-units', {su})), "
        "'Map(LowCardinality(String), Decimal(38, 9))')"
    )
    decided = (
        "CAST(mapFilter((k, v) -> v != 0, map('requests', 1, 'search-units', {su})), "
        "'Map(LowCardinality(String), Decimal(38, 9))')"
    )
    from tollway.warehouse.connection import check_identifier

    table = f"`{check_identifier(database)}`.usage"
    responses = f"""
        INSERT INTO {table} ({_COLUMNS})
        SELECT {request},
            {status} AS status,
            if({refused}, 'refused', 'admitted') AS outcome,
            if({refused}, 'rate_limited', '') AS reason,
            true AS limits_checked,
            0 AS request_bytes,
            {response_bytes} AS response_bytes,
            if({refused}, 0, 5 + (n % 40)) AS upstream_latency_ms,
            {meters.format(rb=response_bytes, su=search_units)} AS meters,
            if({refused}, 1, 2) AS version
        FROM (SELECT number AS n FROM numbers({requests}))"""  # noqa: S608 - a checked identifier, numbers
    # The decision rows of 1 % of the requests: superseded by their response rows above, or an exact
    # replay of a refused request's (only) row.
    decisions = f"""
        INSERT INTO {table} ({_COLUMNS})
        SELECT {request},
            if({refused}, 429, 0) AS status,
            if({refused}, 'refused', 'admitted') AS outcome,
            if({refused}, 'rate_limited', '') AS reason,
            true AS limits_checked,
            0 AS request_bytes, 0 AS response_bytes, 0 AS upstream_latency_ms,
            {decided.format(su=search_units)} AS meters,
            1 AS version
        FROM (SELECT (number * {_DUPLICATE_EVERY} + 1) % {requests} AS n FROM numbers({duplicates}))"""  # noqa: S608 - likewise
    return [responses, decisions], {"requests": requests, "duplicate_decision_rows": duplicates}


class _TimedClient:
    """The client, and the time spent in its ``query`` calls (the usage queries, inside ClickHouse)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.query_s = 0.0
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._client.query(*args, **kwargs)
        finally:
            self.query_s += time.perf_counter() - started
            self.queries += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _settle(client: Any, database: str) -> float:
    """Wait (up to ``_SETTLE_TIMEOUT_S``) until no background merge of the usage table has run for
    ``_SETTLE_QUIET_S``, so merges started by the insert do not compete with the measurement; the wait."""
    from tollway.warehouse.connection import query_rows

    sql = "SELECT count() FROM system.merges WHERE database = {db:String} AND table = 'usage'"
    started = quiet_since = time.perf_counter()
    while (now := time.perf_counter()) - started < _SETTLE_TIMEOUT_S:
        if int(query_rows(client, sql, {"db": database})[0][0]) > 0:
            quiet_since = now
        elif now - quiet_since >= _SETTLE_QUIET_S:
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def subscriptions(customers: int, start: datetime, end: datetime) -> list[Subscription]:
    """The customers' subscriptions (``COHORTS``), started a year before the billed month ``[start, end)``."""
    from tollway.subscriptions.model import Subscription

    started = start.replace(year=start.year - 1)
    found: list[Subscription] = []
    for number in range(customers):
        held = cohort(number)
        if held in ("starter", "scale"):
            found.append(Subscription.new(customer_id(number), held, started))
        elif held == "pro-legacy":
            found.append(Subscription.new(customer_id(number), "pro", started))
        elif held == "pro-2":
            found.append(Subscription.new(customer_id(number), "pro@2", started))
        else:
            at = migration_instant(start) if held == "pro-migrated" else end
            found.append(Subscription.new(customer_id(number), "pro@1", started).changed_to("pro@2", at))
    return with_phases_and_addons(found, start, end)


def addon_instant(start: datetime) -> datetime:
    """When the ``scale`` customers buy their seats: with the ``pro-migrated`` customers' migration."""
    return migration_instant(start)


def with_phases_and_addons(found: list[Subscription], start: datetime, end: datetime) -> list[Subscription]:
    """Phases and add-ons in the dataset (issue 16 items 2 and 3).

    Every ``pro-2`` customer subscribed ``TRIAL_BEFORE`` before the billed month with a 14-day free trial
    (``TRIAL_PLAN``), so the trial ends inside ``[start, end)``: two parts, the trial's (free: no meter,
    no usage query) and ``pro@2``'s, prorated. Every ``scale`` customer bought ``ADDON_QUANTITY`` seats
    (an add-on ``scale`` allows) at ``addon_instant`` and keeps them: an add-on section priced by flat
    fees over the rest of the month, no usage query either. The parts are cut in SQL, so the whole
    dataset is one scan of the month (two queries: two chunks of customers), whatever the instants."""
    from tollway.subscriptions.addons import with_quantity
    from tollway.subscriptions.model import Subscription
    from tollway.subscriptions.phases import PhaseRequest, resolve_phases, with_phases

    bought = addon_instant(start)
    changed: list[Subscription] = []
    for subscription in found:
        held = cohort(int(subscription.customer_id.removeprefix("cus_")))
        if held == "pro-2":
            fresh = Subscription.new(subscription.customer_id, subscription.plan_id, start - TRIAL_BEFORE)
            phases = resolve_phases([PhaseRequest(TRIAL_PLAN, days=TRIAL_DAYS)], fresh, fresh.plan_id)
            subscription = with_phases(fresh, phases)
        elif held == "scale":
            subscription = with_quantity(subscription, ADDON, ADDON_QUANTITY, bought)
        changed.append(subscription)
    return changed


def run(
    chdb_path: Path,
    rows: int,
    *,
    customers: int = DEFAULT_CUSTOMERS,
    database: str = DATABASE,
    store: bool = True,
) -> dict[str, Any]:
    """Generate the usage into a fresh embedded ClickHouse, then time aggregation and pricing; the figures."""
    from tollway.billing.invoice_store import save
    from tollway.billing.invoices import build_invoices, parse_month
    from tollway.plans.loader import load_catalog_text
    from tollway.warehouse.connection import connect, execute, query_rows
    from tollway.warehouse.migrations import Migrator

    now = datetime.now(UTC)
    label, start, end = billed_month(now)
    catalog = load_catalog_text(CATALOG, "billing-bench.yaml")
    client = connect(f"chdb://{chdb_path.resolve()}")
    try:
        Migrator(client, database).migrate()
        statements, expected = generation_sql(database, rows, customers, start, end)
        generating = time.perf_counter()
        for sql in statements:
            execute(client, sql)
        generate_s = time.perf_counter() - generating
        settle_s = _settle(client, database)
        counted = query_rows(
            client,
            "SELECT count(), uniqExact(customer_id), min(ts), max(ts) FROM {db:Identifier}.usage",
            {"db": database},
        )[0]
        inserted = int(counted[0])
        parts = int(
            query_rows(
                client,
                "SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'usage' AND active",
                {"db": database},
            )[0][0]
        )
        subscribed = subscriptions(customers, start, end)
        cohorts = Counter(cohort(number) for number in range(customers))
        plan_parts = sum(len(s.terms(start, end)) for s in subscribed)
        phases = Counter(term.plan_id for s in subscribed for term in s.terms(start, end) if ":" in term.plan_id)
        addons = Counter(a.addon_id for s in subscribed for a in s.addons_held(start, end))
        month = parse_month(label, now)
        first_priced: list[float] = []

        def progress(done: int, total: int) -> None:
            if not first_priced:
                first_priced.append(time.perf_counter())

        timed = _TimedClient(client)
        started = time.perf_counter()
        invoices, skipped = build_invoices(
            timed, database, catalog, subscribed, month, None, now=now, progress=progress
        )
        seconds = time.perf_counter() - started
        aggregation_s = (first_priced[0] if first_priced else time.perf_counter()) - started
        # The same run again, warm (the engine's caches filled, the Python code paths hot): for comparison.
        warm = _TimedClient(client)
        again = time.perf_counter()
        build_invoices(warm, database, catalog, subscribed, month, None, now=now)
        warm_s = time.perf_counter() - again
        billed_requests = sum(
            (line.quantity or Decimal(0) for i in invoices for line in i.lines if line.meter == "requests"),
            Decimal(0),
        )
        total = sum((invoice.total for invoice in invoices), Decimal(0))
        store_s: float | None = None
        if store:
            storing = time.perf_counter()
            save(client, database, invoices, finalize=False, now=now)
            store_s = time.perf_counter() - storing
        # Billable: admitted, not 5xx or 429, and not during a trial (free: no line counts requests).
        trial = COHORTS.index("pro-2")
        number = cohort_sql("toUInt32(substring(customer_id, 5))")
        sql = (
            "SELECT countIf(outcome = 'admitted' AND intDiv(status, 100) != 5 AND status != 429 "  # noqa: S608 - fixed
            f"AND NOT ({number} = {trial} AND ts < {{trial_end:DateTime64(3, 'UTC')}})) "
            "FROM {db:Identifier}.usage FINAL"
        )
        expected_requests = query_rows(
            client,
            sql,
            {"db": database, "trial_end": trial_ends(start).strftime("%Y-%m-%d %H:%M:%S")},
        )[0][0]
    finally:
        client.close()
    return {
        "rows": inserted,
        "requests": expected["requests"],
        "duplicate_decision_rows": inserted - expected["requests"],
        "customers": customers,
        "customers_with_usage": int(counted[1]),
        "month": label,
        "parts": parts,
        "cohorts": dict(sorted(cohorts.items())),
        "plan_parts": plan_parts,
        "phases": dict(sorted(phases.items())),
        "addons": dict(sorted(addons.items())),
        "seconds": round(seconds, 3),
        "aggregation_s": round(aggregation_s, 3),
        "pricing_s": round(seconds - aggregation_s, 3),
        "query_s": round(timed.query_s, 3),
        "queries": timed.queries,
        "warm_seconds": round(warm_s, 3),
        "warm_query_s": round(warm.query_s, 3),
        "warm_rows_per_s": round(inserted / warm_s, 1) if warm_s > 0 else None,
        "rows_per_s": round(inserted / seconds, 1) if seconds > 0 else None,
        "invoices_priced": len(invoices),
        "customers_skipped": len(skipped),
        "billed_requests": int(billed_requests),
        "billable_requests_in_table": int(expected_requests),
        "invoices_total": str(total),
        "store_s": None if store_s is None else round(store_s, 3),
        "generate_s": round(generate_s, 3),
        "settle_s": round(settle_s, 3),
        "generate_rows_per_s": round(inserted / generate_s, 1) if generate_s > 0 else None,
    }


def measure(
    work_dir: Path, rows: int = DEFAULT_ROWS, *, customers: int = DEFAULT_CUSTOMERS, store: bool = True
) -> dict[str, Any]:
    """Run ``run`` in a fresh subprocess (its own chdb path), check the result; the figures."""
    run_dir = Path(work_dir) / f"billing-{os.getpid()}-{time.time_ns()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", __name__, "--chdb", str(run_dir / "chdb"), "--rows", str(rows)]
    argv += ["--customers", str(customers), "--store" if store else "--no-store"]
    result = run_json(argv, what="billing throughput", cwd=run_dir, timeout_s=_SUBPROCESS_TIMEOUT_S, keys=_RESULT_KEYS)
    expected = (rows, customers, customers, result["billable_requests_in_table"])
    found = (result["rows"], result["customers_with_usage"], result["invoices_priced"], result["billed_requests"])
    if found != expected:
        raise BenchError(
            "billing throughput: expected (rows, customers with usage, invoices priced, requests billed) "
            f"= {expected}, found {found}"
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--chdb", type=Path, required=True, help="the embedded ClickHouse path (fresh)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="usage rows to generate")
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument(
        "--store", action=argparse.BooleanOptionalAction, default=True, help="also time storing the invoices"
    )
    args = parser.parse_args(argv)
    result = run(args.chdb, args.rows, customers=args.customers, database=args.database, store=args.store)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
