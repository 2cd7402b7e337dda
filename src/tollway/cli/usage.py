"""``tollway usage``: load the spool into ClickHouse by hand, and show what was recorded.

``load`` drains ``TOLLWAY_SPOOL_DIR`` with the same loader ``serve`` runs (for a host whose servers run
with ``TOLLWAY_LOADER=off``, or to empty a spool after an outage); it refuses while another loader
holds the directory. ``show`` prints usage per customer, feature and status class from ``usage FINAL``
(deduplicated), with each meter's total. ClickHouse: ``TOLLWAY_CLICKHOUSE_DSN`` / ``_DATABASE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from tollway.settings import Settings
from tollway.usage.clickhouse_sink import ClickHouseSink
from tollway.usage.loader import LoaderBusy, LoaderLock, UsageLoader
from tollway.warehouse.connection import connect, query_rows, quiet_driver_logs
from tollway.warehouse.errors import WarehouseError
from tollway.warehouse.settings import WarehouseSettings

EXIT_FAILURE = 2

SHOW_SQL = """
SELECT customer_id, feature, toString(outcome) AS outcome,
       if(status = 0, 'none', concat(toString(intDiv(status, 100)), 'xx')) AS status_class,
       count() AS requests, sumMap(meters) AS totals
FROM {db:Identifier}.usage FINAL
WHERE ({customer:String} = '' OR customer_id = {customer:String})
GROUP BY customer_id, feature, outcome, status_class
ORDER BY customer_id, feature, outcome, status_class
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("usage", help="recorded usage: load the spool, show totals")
    sub = usage.add_subparsers(dest="usage_command", required=True, metavar="COMMAND")
    load = sub.add_parser("load", help="load the spool (TOLLWAY_SPOOL_DIR) into ClickHouse until it is empty")
    load.add_argument("--spool", type=Path, help="spool directory (default: $TOLLWAY_SPOOL_DIR)")
    show = sub.add_parser("show", help="usage per customer, feature and status class, with meter totals")
    show.add_argument("--customer", default="", help="one customer only")
    show.add_argument("--json", action="store_true", help="print JSON")


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _load(spool: Path, warehouse: WarehouseSettings) -> int:
    try:
        lock = LoaderLock(spool)
    except LoaderBusy as exc:
        return _fail(f"{exc}: a running server loads this spool")
    sink = ClickHouseSink(warehouse.dsn, warehouse.database)
    try:
        loaded = asyncio.run(UsageLoader(spool, sink).drain())
        asyncio.run(sink.maintain())
    finally:
        sink.close()
        lock.release()
    print(f"loaded {loaded} usage rows from {spool} into {warehouse.database}.usage")
    return 0


def _show(customer: str, as_json: bool, warehouse: WarehouseSettings) -> int:
    client = connect(warehouse.dsn)
    try:
        rows = query_rows(client, SHOW_SQL, {"db": warehouse.database, "customer": customer})
    finally:
        client.close()
    records: list[dict[str, Any]] = [
        {
            "customer_id": r[0],
            "feature": r[1],
            "outcome": r[2],
            "status_class": r[3],
            "requests": int(r[4]),
            "meters": {name: _plain(qty) for name, qty in dict(r[5]).items()},
        }
        for r in rows
    ]
    if as_json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'customer':<16} {'feature':<14} {'outcome':<9} {'status':<7} {'requests':>9}  meters")
    for record in records:
        meters = ", ".join(f"{name}={qty}" for name, qty in sorted(record["meters"].items()))
        print(
            f"{record['customer_id'] or '(none)':<16} {record['feature'] or '-':<14} {record['outcome']:<9} "
            f"{record['status_class']:<7} {record['requests']:>9}  {meters}"
        )
    return 0


def _plain(quantity: Decimal) -> str:
    return format(quantity.normalize(), "f")


def run(args: argparse.Namespace, settings: Settings) -> int:
    quiet_driver_logs()
    try:
        warehouse = WarehouseSettings()
        if args.usage_command == "load":
            spool = args.spool or settings.spool_dir
            if spool is None:
                return _fail("no spool: pass --spool or set TOLLWAY_SPOOL_DIR")
            return _load(spool, warehouse)
        if args.usage_command == "show":
            return _show(args.customer, args.json, warehouse)
    except WarehouseError as exc:
        return _fail(str(exc))
    return _fail(f"unknown usage command {args.usage_command!r}")
