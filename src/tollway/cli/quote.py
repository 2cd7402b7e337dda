"""``tollway quote``: price hypothetical usage for one plan of a catalog, with the billing code itself.

For sales and support ("what would 6 M requests cost on pro?") and for tests. No Redis, no ClickHouse:
the catalog file and the command line are the only inputs. Bad input is one line on stderr and exit
status 2; a catalog with problems is reported like every other command (one line per problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Final

from tollway.billing.charges import PeriodContext
from tollway.billing.errors import BillingError
from tollway.billing.money import format_amount, format_decimal
from tollway.billing.quantity import parse_fraction, parse_quantity
from tollway.billing.quote import quote
from tollway.billing.rating import InvoiceDraft, InvoiceLine
from tollway.plans.errors import UnknownMeter, UnknownPlan
from tollway.plans.loader import load_catalog
from tollway.plans.schema import Catalog
from tollway.settings import Settings

EXIT_BAD_INPUT: Final = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "quote",
        help="price hypothetical usage for a plan (no Redis, no ClickHouse)",
        description="Price usage for one period of a plan with the billing code. Meters the plan prices "
        "but that are not given count as 0; a meter the plan does not price is an error.",
    )
    parser.add_argument("--plans", type=Path, required=True, metavar="FILE", help="the plan catalog")
    parser.add_argument("--plan", required=True, metavar="ID", help="the plan to price")
    parser.add_argument(
        "--usage",
        action="extend",
        nargs="+",
        default=[],
        metavar="METER=QTY",
        help="usage of a meter in the period, e.g. requests=6000000 (repeatable)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument(
        "--period-fraction",
        default="1",
        metavar="F",
        help="part of the period covered, 0 to 1: prorates flat fees and the minimum (default: 1)",
    )
    parser.add_argument(
        "--period-index",
        default="0",
        metavar="N",
        help="0-based period of the subscription: coupons lasting N periods apply while index < N (default: 0)",
    )


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def parse_usage(items: list[str]) -> dict[str, Decimal]:
    """``["requests=6000000", "egress=1.5"]`` → meter → quantity. ``BillingError`` naming the bad item."""
    usage: dict[str, Decimal] = {}
    for item in items:
        meter, sep, text = item.partition("=")
        if not sep or not meter:
            raise BillingError(f"--usage {item!r}: expected METER=QTY, e.g. requests=6000000")
        if meter in usage:
            raise BillingError(f"--usage: meter {meter!r} given twice")
        usage[meter] = parse_quantity(text, f"--usage {meter}: quantity")
    return usage


def _period(fraction: str, index: str) -> PeriodContext:
    if not index.isascii() or not index.isdigit():
        raise BillingError(f"--period-index {index!r} must be an integer ≥ 0 (0 = the subscription's first period)")
    return PeriodContext(parse_fraction(fraction), int(index))


def _price(catalog: Catalog, args: argparse.Namespace) -> InvoiceDraft:
    period = _period(args.period_fraction, args.period_index)
    usage = parse_usage(list(args.usage))
    try:
        return quote(catalog, args.plan, usage, period)
    except UnknownPlan as exc:
        raise BillingError(
            f"unknown plan {exc.plan_id!r}: the catalog's plans are {', '.join(catalog.plans)}"
        ) from None
    except UnknownMeter as exc:
        known = ", ".join(catalog.meters) or "none"
        raise BillingError(f"unknown meter {exc.meter!r}: the catalog's meters are {known}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the quote. Exit status 0, or 2 on bad input. ``settings`` is unused. A ``CatalogError``
    propagates to ``tollway.cli.main``, which prints every problem of the catalog."""
    try:
        catalog = load_catalog(args.plans)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read the catalog {args.plans}: {exc}")
    try:
        draft = _price(catalog, args)
    except BillingError as exc:
        return _fail(str(exc))
    if args.format == "json":
        print(json.dumps(draft.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_text(draft))
    return 0


def _line_id(line: InvoiceLine) -> str:
    return line.discount_id if line.discount_id is not None else line.charge_id


def render_text(draft: InvoiceDraft) -> str:
    """A readable table: one row per line with its breakdown beneath, then the total."""
    period = draft.period
    covered = "whole period" if period.full else f"{format_decimal(period.fraction)} of the period"
    title = f"Quote: plan {draft.plan_id}, {draft.currency}, {covered}, period index {period.index}"
    header = ("LINE", "DESCRIPTION", "QUANTITY", "AMOUNT")
    rows = [
        (
            _line_id(line),
            line.description,
            "" if line.quantity is None else format_decimal(line.quantity),
            format_amount(line.amount, draft.currency),
        )
        for line in draft.lines
    ]
    total = format_amount(draft.total, draft.currency)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    widths[3] = max(widths[3], len(total))

    def row_text(cells: tuple[str, str, str, str]) -> str:
        return (
            f"{cells[0].ljust(widths[0])}  {cells[1].ljust(widths[1])}  "
            f"{cells[2].rjust(widths[2])}  {cells[3].rjust(widths[3])}"
        )

    out = [title, "", row_text(header)]
    indent = " " * (widths[0] + 2)
    for line, row in zip(draft.lines, rows, strict=True):
        out.append(row_text(row))
        out.extend(f"{indent}  {step}" for step in line.breakdown)
    out.append(row_text(("TOTAL", "", "", total)))
    return "\n".join(out)
