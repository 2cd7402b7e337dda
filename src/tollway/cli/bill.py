"""``tollway bill``: turn a month of usage into invoices, in ClickHouse and as JSON, HTML and PDF files.

    tollway bill --period 2026-11 [--customer ID] [--finalize [--force-finalize]] [--out DIR] [--no-pdf]
                 [--plans CATALOG]
    tollway bill --period 2026-11 --dry-run --plans NEW_CATALOG [--customer ID]
    tollway bill --period 2026-11 --progressive [--customer ID] [--out DIR] [--plans CATALOG]

``--progressive`` issues interim invoices (``progressive``): run it periodically (cron); it bills, for
each customer whose plan has ``progressive_billing``, what the current period owes so far once that
reaches the threshold, and never issues the same interim invoice twice.

``--dry-run`` re-rates: it prices the same usage under the current catalog (``TOLLWAY_CATALOG``) and
under ``--plans``, prints per customer the old total, the new total and the difference, and writes
nothing (late-usage adjustments are left out of both).

Subscriptions come from Redis (``TOLLWAY_REDIS_URL``), the catalog from ``--plans`` or
``TOLLWAY_CATALOG``, usage from ClickHouse (``TOLLWAY_CLICKHOUSE_DSN`` / ``_DATABASE``). The embedded
engine (``chdb://``) is migrated on the spot; a server must have been migrated (``tollway db migrate``).
Every invoice is priced, and every output path checked, before anything is written, so bad input
writes nothing. Bad input (a malformed or future period, an unknown customer, no catalog, an ``--out``
that is not a writable directory) is one line on stderr and exit status 2. A customer with nothing to
bill (no period started in the month, or the period on plans without pricing only: a free plan) gets
no invoice and is listed on stdout; one whose plan changed between a free and a priced plan in the
period is billed for the priced part. A customer whose invoice
cannot be priced (plan missing from the catalog, ...) or finalized (its period has
not ended, an earlier period is still a draft: ``invoices.finalize_refusal``) is reported on stderr,
one line each, and the others are billed: exit status 1 at the end. ``bill`` is the Python entry point
the command wraps.

Each invoice is written to ``--out`` as ``<id>.json``, ``<id>.html`` and ``<id>.pdf`` (the PDF rendered
from the HTML: ``billing.pdf``; ``--no-pdf`` leaves it out, and a machine that cannot render PDFs is
bad input, found before anything is written). The printed line ends with the HTML's path, then the PDF's.

An invoice finalized now (``--finalize``, or an interim invoice ``--progressive`` issues) gets its number,
issue and due dates, payment terms, seller and buyer (``billing.finalization``; docs/billing.md, "Numbers,
issue and due dates"): both need the seller's settings (``TOLLWAY_SELLER_*``, ``billing.seller``), and
without valid ones refuse to run (exit status 2, nothing written, every bad setting named).

After the invoices are stored, every finalized invoice of the run (finalized now, or earlier and left
unchanged) is announced: ``invoice.finalized`` and ``invoice.adjusted`` for each earlier invoice its
late-usage lines adjust (``announce``). Their ids are the invoices', so a re-run emits nothing new, and
re-runs an emission that failed (Redis unreachable: logged on stderr, the invoices stay finalized).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from tollway.billing.display import meter_units
from tollway.billing.documents import InvoiceFacts
from tollway.billing.errors import BillingError
from tollway.billing.finalization import invoice_facts
from tollway.billing.invoice_store import (
    SaveResult,
    highest_number,
    load_current,
    load_earlier_drafts,
    load_finalized,
    save,
)
from tollway.billing.invoices import (
    CustomerNotBilled,
    Invoice,
    billed_periods,
    build_invoices,
    finalize_refusal,
    interim_documents,
    invoice_id,
    parse_month,
    pricing_of,
)
from tollway.billing.money import format_amount
from tollway.billing.pdf import PdfUnavailable, check_available, check_target, write_pdf
from tollway.billing.render import OutputError, check_out_dir, check_targets, write
from tollway.billing.seller import Seller, load_seller
from tollway.notifications.emitter import EventEmitter, emit_after_commit
from tollway.notifications.lifecycle import invoice_events
from tollway.notifications.outbox import OutboxWriter
from tollway.plans.loader import load_catalog
from tollway.plans.schema import Catalog
from tollway.redis_client import admin_client
from tollway.settings import Settings
from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import connect, query_rows, quiet_driver_logs
from tollway.warehouse.errors import WarehouseError, WarehouseUnavailable
from tollway.warehouse.migrations import Migrator
from tollway.warehouse.settings import WarehouseSettings

EXIT_BAD_INPUT: Final = 2
EXIT_SOME_FAILED: Final = 1
PROGRESS_EVERY: Final = 500
"""A progress line on stderr every this many customers (runs with fewer customers print none)."""

FactsSource = Callable[[Sequence[Invoice], datetime], Mapping[str, InvoiceFacts]]
"""Given the invoices about to be finalized (in order) and the time: each one's number, dates, seller and
buyer (``billing.finalization``). Called after every check, just before the invoices are written."""


def _facts_for(
    facts: FactsSource | None, invoices: Sequence[Invoice], stored: Mapping[str, str], now: datetime
) -> Mapping[str, InvoiceFacts] | None:
    """The facts of those of ``invoices`` not finalized already (``stored``: invoice id → status)."""
    if facts is None:
        return None
    fresh = [invoice for invoice in invoices if stored.get(invoice.invoice_id) != "finalized"]
    return facts(fresh, now) if fresh else {}


@dataclass(frozen=True, slots=True)
class BillReport:
    """The outcome of a run: per invoice what was done, the stored document and its files."""

    month: str
    results: tuple[SaveResult, ...]
    files: tuple[tuple[Path, Path], ...]
    skipped: tuple[str, ...]  # customers with nothing to bill: no period started in the month (yet), or free
    failures: tuple[CustomerNotBilled, ...] = ()  # customers not billed (or not finalized), and why
    pdfs: tuple[Path, ...] = ()  # with ``pdf``: each invoice's PDF, in the order of ``files``


def bill(
    client: Any,
    database: str,
    catalog: Catalog,
    subscriptions: Sequence[Subscription],
    period: str,
    *,
    now: datetime,
    finalize: bool = False,
    force: bool = False,
    out_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    pdf: bool = False,
    facts: FactsSource | None = None,
) -> BillReport:
    """Price every subscription's periods of ``period`` (``YYYY-MM``: those starting in the month, one per
    customer but for weekly subscriptions), then store and render them.

    Raises ``BillingError`` for a bad period or output directory, before writing anything. A customer
    that cannot be priced, or (with ``finalize``) may not be finalized yet (``finalize_refusal``;
    ``force`` finalizes a period that has not ended), is left out and listed in ``failures``.
    ``OutputError`` when a file cannot be written after the invoices were stored. With ``pdf`` (and
    ``out_dir``) each invoice is also written as ``<id>.pdf`` (``billing.pdf``; ``PdfUnavailable`` before
    anything is written when PDFs cannot be rendered here). With ``finalize`` and ``facts``, each invoice
    finalized now is numbered and dated (``FactsSource``) just before it is written, in the order it is
    finalized in."""
    month = parse_month(period, now)
    if out_dir is not None:
        check_out_dir(out_dir)
        if pdf:
            check_available()
    history = load_finalized(client, database, [s.customer_id for s in subscriptions])

    def report(done: int, total: int) -> None:
        if progress is not None and (done % PROGRESS_EVERY == 0 or (done == total and total >= PROGRESS_EVERY)):
            progress(done, total)

    failures: list[CustomerNotBilled] = []
    invoices, skipped = build_invoices(
        client, database, catalog, subscriptions, month, history, now=now, progress=report, failures=failures
    )
    if finalize:
        drafts = load_earlier_drafts(client, database, invoices)
        stored = load_current(client, database, [invoice.invoice_id for invoice in invoices])
        allowed = []
        left: dict[str, list[str]] = {}  # customer → the months of this run's invoices left drafts
        for invoice in invoices:  # a customer's periods in order (several for weekly subscriptions)
            done = invoice.invoice_id in stored and stored[invoice.invoice_id].status == "finalized"
            earlier = [*drafts.get(invoice.invoice_id, ()), *left.get(invoice.customer_id, ())]
            refusal = None if done else finalize_refusal(invoice, now, earlier, force=force)
            if refusal is None:
                allowed.append(invoice)
            else:
                left.setdefault(invoice.customer_id, []).append(invoice.month)
                failures.append(CustomerNotBilled(invoice.customer_id, refusal))
        invoices = allowed
    if out_dir is not None:
        for invoice in invoices:
            check_targets(invoice.invoice_id, out_dir)
            if pdf:
                check_target(invoice.invoice_id, out_dir)
    numbered = None
    if finalize and facts is not None and invoices:
        current = load_current(client, database, [invoice.invoice_id for invoice in invoices])
        numbered = _facts_for(facts, invoices, {i: s.status for i, s in current.items()}, now)
    results = save(client, database, invoices, finalize=finalize, now=now, facts=numbered)
    files, pdfs = _write_files(results, catalog, out_dir, pdf)
    ordered = tuple(sorted(failures, key=lambda failure: failure.customer_id))
    return BillReport(month.label, tuple(results), files, tuple(skipped), ordered, pdfs)


def _write_files(
    results: Sequence[SaveResult], catalog: Catalog, out_dir: Path | None, pdf: bool
) -> tuple[tuple[tuple[Path, Path], ...], tuple[Path, ...]]:
    """Each stored document as JSON and HTML (and PDF) in ``out_dir``; nothing without one. Bytes
    meters show in kB/MB/GB (their units from ``catalog``)."""
    if out_dir is None:
        return (), ()
    units = meter_units(catalog.meters)
    files = tuple(write(result.document, out_dir, units) for result in results)
    pdfs = tuple(write_pdf(result.document, out_dir, units) for result in results) if pdf else ()
    return files, pdfs


def progressive(
    client: Any,
    database: str,
    catalog: Catalog,
    subscriptions: Sequence[Subscription],
    period: str,
    *,
    now: datetime,
    out_dir: Path | None = None,
    pdf: bool = False,
    facts: FactsSource | None = None,
) -> BillReport:
    """Issue the interim invoices due now for the periods starting in ``period`` (docs/billing.md,
    "Progressive billing"). For each customer whose current plan has ``progressive_billing`` and whose
    period has not ended, nor had its invoice finalized: price what the period owes so far less what its
    interim invoices billed (``build_invoices(..., interim=True)``); when that reaches the threshold,
    the next interim invoice is stored, finalized. Idempotent: the issued invoices are part of the
    history the next pass reads, so a re-run (or a run after a crash, whatever was or was not written)
    issues nothing twice. The period's earlier interim invoices are reported as ``unchanged`` (so
    ``announce`` re-emits an event whose emission failed); a customer below the threshold is not
    reported. ``pdf``: as for ``bill``. With ``facts``, each interim invoice issued now is numbered and
    dated (``FactsSource``)."""
    month = parse_month(period, now)
    if out_dir is not None:
        check_out_dir(out_dir)
        if pdf:
            check_available()
    chosen = []
    for subscription in subscriptions:
        plan = catalog.plans.get(subscription.plan_id)
        if plan is not None and plan.pricing is not None and plan.pricing.progressive_billing is not None:
            chosen.append(subscription)
    history = load_finalized(client, database, [s.customer_id for s in chosen])
    earlier: list[SaveResult] = []
    still_open = []
    for subscription in chosen:
        customer = subscription.customer_id
        past = history.get(customer, [])
        for found in billed_periods(subscription, month, now):  # a weekly plan has several in the month
            for document in interim_documents(past, customer, found.start):
                earlier.append(SaveResult(str(document["invoice_id"]), "unchanged", dict(document)))
            closed = any(d["invoice_id"] == invoice_id(customer, found.start) for d in past)
            if found.end > now and not closed:  # else the period's own invoice bills the rest
                still_open.append(subscription)
                break
    failures: list[CustomerNotBilled] = []
    invoices, skipped = build_invoices(
        client, database, catalog, still_open, month, history, now=now, failures=failures, interim=True
    )
    issued: list[Invoice] = []
    for invoice in invoices:
        terms = pricing_of(catalog, invoice.customer_id, invoice.plan_id).progressive_billing
        if terms is not None and invoice.subtotal >= terms.threshold:
            issued.append(invoice)
    if out_dir is not None:
        for invoice in issued:
            check_targets(invoice.invoice_id, out_dir)
            if pdf:
                check_target(invoice.invoice_id, out_dir)
    numbered = None
    if facts is not None and issued:
        current = load_current(client, database, [invoice.invoice_id for invoice in issued])
        numbered = _facts_for(facts, issued, {i: s.status for i, s in current.items()}, now)
    results = earlier + save(client, database, issued, finalize=True, now=now, facts=numbered)
    files, pdfs = _write_files(results, catalog, out_dir, pdf)
    ordered = tuple(sorted(failures, key=lambda failure: failure.customer_id))
    return BillReport(month.label, tuple(results), files, tuple(skipped), ordered, pdfs)


@dataclass(frozen=True, slots=True)
class Rerated:
    """One customer's period priced under the current catalog (``old``) and a new one."""

    customer_id: str
    old: Invoice
    new: Invoice

    @property
    def difference(self) -> Decimal | None:
        """New minus old total; None when the two are in different currencies."""
        return self.new.total - self.old.total if self.new.currency == self.old.currency else None


def rerate(
    client: Any,
    database: str,
    current: Catalog,
    new: Catalog,
    subscriptions: Sequence[Subscription],
    period: str,
    *,
    now: datetime,
    failures: list[CustomerNotBilled] | None = None,
) -> list[Rerated]:
    """Price every subscription's period of ``period`` under both catalogs; writes nothing. With
    ``failures``, a customer that cannot be priced under either catalog (a missing plan, ...) is left out
    and listed there, once per catalog, and the others are re-rated; without, its error is raised. A
    customer with nothing to bill under either catalog (no period in the month, or free: only plans
    without pricing) is left out too, and is no failure."""
    month = parse_month(period, now)
    old, _ = build_invoices(client, database, current, subscriptions, month, now=now, failures=failures)
    priced, _ = build_invoices(client, database, new, subscriptions, month, now=now, failures=failures)
    by_id = {invoice.invoice_id: invoice for invoice in priced}  # a weekly customer has several
    return [
        Rerated(invoice.customer_id, invoice, by_id[invoice.invoice_id])
        for invoice in old
        if invoice.invoice_id in by_id
    ]


def _print_rerated(rerated: Sequence[Rerated]) -> None:
    print(f"{'CUSTOMER':<20} {'OLD':>14} {'NEW':>14} {'DIFFERENCE':>14}  CURRENCY")
    for item in rerated:
        old = format_amount(item.old.total, item.old.currency)
        new = format_amount(item.new.total, item.new.currency)
        difference = item.difference
        shown = "n/a" if difference is None else format_amount(difference, item.new.currency)
        currency = item.new.currency if difference is not None else f"{item.old.currency}→{item.new.currency}"
        print(f"{item.customer_id:<20} {old:>14} {new:>14} {shown:>14}  {currency}")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bill",
        help="price a month of usage into invoices (ClickHouse tables, JSON, HTML and PDF files)",
        description="Bill every subscribed customer's period starting in the month (in their timezone). "
        "Re-running a draft period replaces its invoices; finalized invoices never change.",
    )
    parser.add_argument("--period", required=True, metavar="YYYY-MM", help="the month to bill, e.g. 2026-11")
    parser.add_argument("--customer", metavar="ID", help="bill this customer only")
    parser.add_argument("--finalize", action="store_true", help="finalize the invoices: they never change again")
    parser.add_argument(
        "--force-finalize",
        action="store_true",
        help="with --finalize: finalize a period that has not ended yet (later usage becomes an adjustment)",
    )
    parser.add_argument("--out", type=Path, default=Path("invoices"), metavar="DIR", help="default ./invoices/")
    parser.add_argument(
        "--no-pdf", action="store_true", help="write each invoice as JSON and HTML only, without its PDF"
    )
    parser.add_argument("--plans", type=Path, metavar="CATALOG", help="the plan catalog (default: $TOLLWAY_CATALOG)")
    parser.add_argument(
        "--progressive",
        action="store_true",
        help="issue the interim invoices due now (plans with progressive_billing); run it periodically",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="re-rate: price under $TOLLWAY_CATALOG and under --plans, print old, new, difference; write nothing",
    )


def _fail(message: str) -> int:
    print(f"tollway: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


async def _subscriptions(settings: Settings, customer: str | None) -> list[Subscription]:
    redis = admin_client(settings)
    try:
        store = RedisSubscriptionStore(redis, settings.redis_prefix)
        if customer is None:
            return await store.list()
        found = await store.get(customer)
        if found is None:
            raise BillingError(f"unknown customer {customer!r}: no subscription")
        return [found]
    finally:
        await redis.aclose()


async def announce(report: BillReport, events: EventEmitter) -> int:
    """Emit the events of the run's finalized invoices (once per invoice, however often the run is
    repeated); how many were new. Never raises: a failure is logged, the invoices stand."""
    found = [event for result in report.results for event in invoice_events(result.document)]
    return await emit_after_commit(events, found)


async def _announce(settings: Settings, report: BillReport) -> None:
    redis = admin_client(settings)
    try:
        await announce(report, OutboxWriter(redis, settings.redis_prefix))
    finally:
        await redis.aclose()


async def _invoice_facts(
    settings: Settings,
    seller: Seller,
    invoices: Sequence[Invoice],
    now: datetime,
    highest: Callable[[str, int], int] | None,
) -> Mapping[str, InvoiceFacts]:
    redis = admin_client(settings)
    try:
        return await invoice_facts(redis, settings.redis_prefix, seller, invoices, now, highest)
    finally:
        await redis.aclose()


def numbering(settings: Settings, seller: Seller, warehouse: tuple[Any, str] | None = None) -> FactsSource:
    """The ``FactsSource`` of the command: numbers and issue dates in Redis (``TOLLWAY_REDIS_URL``), the
    buyers' customer records there too, and ``seller``. With ``warehouse`` (client, database), each year's
    sequence first continues from the highest number stored there (``invoice_store.highest_number``)."""

    def highest(series: str, year: int) -> int:
        assert warehouse is not None
        return highest_number(warehouse[0], warehouse[1], series, year)

    def facts(invoices: Sequence[Invoice], now: datetime) -> Mapping[str, InvoiceFacts]:
        return asyncio.run(_invoice_facts(settings, seller, invoices, now, highest if warehouse else None))

    return facts


def open_warehouse(warehouse: WarehouseSettings) -> Any:
    client = connect(warehouse.dsn)
    if warehouse.dsn.startswith("chdb://"):
        Migrator(client, warehouse.database).migrate()
        return client
    found = query_rows(client, "EXISTS TABLE {db:Identifier}.invoices", {"db": warehouse.database})
    if not found or not found[0][0]:
        client.close()
        raise WarehouseUnavailable(
            f"table {warehouse.database}.invoices does not exist: run `tollway db migrate` against this server"
        )
    return client


def _progress(done: int, total: int) -> None:
    print(f"tollway bill: {done}/{total} customers priced", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``tollway bill``; prints one line per invoice. Exit status 0, or 2 on bad input."""
    quiet_driver_logs()
    now = datetime.now(UTC)
    catalog_path = args.plans or settings.catalog
    if catalog_path is None:
        return _fail("no catalog: pass --plans or set TOLLWAY_CATALOG")
    if args.progressive and (args.finalize or args.dry_run):
        return _fail("--progressive issues interim invoices (finalized when issued): without --finalize or --dry-run")
    if args.dry_run and (args.plans is None or settings.catalog is None or args.finalize):
        return _fail("--dry-run compares TOLLWAY_CATALOG (current) with --plans (new): give both, without --finalize")
    if args.force_finalize and not args.finalize:
        return _fail("--force-finalize goes with --finalize")
    current_path = settings.catalog if args.dry_run else None
    try:
        parse_month(args.period, now)  # before any connection
        if not args.dry_run:
            check_out_dir(args.out)  # before anything is written
            if args.out is not None and not args.no_pdf:
                check_available()
        catalog = load_catalog(catalog_path)
        current = load_catalog(current_path) if current_path is not None else catalog
        seller = load_seller() if args.finalize or args.progressive else None
    except PdfUnavailable as exc:
        return _fail(f"{exc}; or pass --no-pdf to write JSON and HTML only")
    except BillingError as exc:
        return _fail(str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read the catalog: {exc}")
    try:
        subscriptions = asyncio.run(_subscriptions(settings, args.customer))
        warehouse = WarehouseSettings()
        client = open_warehouse(warehouse)
        try:
            if args.dry_run:
                unpriced: list[CustomerNotBilled] = []
                rerated = rerate(
                    client, warehouse.database, current, catalog, subscriptions, args.period, now=now, failures=unpriced
                )
                _print_rerated(rerated)
                for reason in dict.fromkeys(str(f) for f in unpriced):  # once, when both catalogs refuse it
                    print(f"tollway: not re-rated for {args.period}: {reason}", file=sys.stderr)
                return EXIT_SOME_FAILED if unpriced else 0
            facts = numbering(settings, seller, (client, warehouse.database)) if seller is not None else None
            if args.progressive:
                report = progressive(
                    client,
                    warehouse.database,
                    catalog,
                    subscriptions,
                    args.period,
                    now=now,
                    out_dir=args.out,
                    pdf=not args.no_pdf,
                    facts=facts,
                )
            else:
                report = bill(
                    client,
                    warehouse.database,
                    catalog,
                    subscriptions,
                    args.period,
                    now=now,
                    finalize=args.finalize,
                    force=args.force_finalize,
                    out_dir=args.out,
                    progress=_progress,
                    pdf=not args.no_pdf,
                    facts=facts,
                )
        finally:
            client.close()
    except (BillingError, WarehouseError, SubscriptionStoreUnavailable) as exc:
        return _fail(str(exc))
    except OutputError as exc:
        print(f"tollway: the invoices are stored, but {exc.strerror}", file=sys.stderr)
        return EXIT_SOME_FAILED
    if args.finalize or any(result.document.get("status") == "finalized" for result in report.results):
        asyncio.run(_announce(settings, report))
    pdfs = report.pdfs or (None,) * len(report.files)
    for result, (_, html_path), pdf_path in zip(report.results, report.files, pdfs, strict=True):
        document = result.document
        note = {
            "created": "draft",
            "replaced": "draft replaced",
            "finalized": "finalized",
            "unchanged": "already finalized, left unchanged",
        }[result.action]
        if document.get("interim"):
            sequence = document["interim"]["sequence"]
            note = f"interim invoice {sequence} " + ("issued" if result.action == "finalized" else "issued earlier")
        if document.get("number"):
            note = f"{note}  {document['number']} due {document['due_on']}"
        print(
            f"{document['invoice_id']}  {document['customer_id']}  {report.month}  "
            f"{document['total']} {document['currency']}  {note}  {html_path}"
            + (f"  {pdf_path}" if pdf_path is not None else "")
        )
    if args.progressive and not report.results:
        print(f"no interim invoice due for {report.month}")
    if report.skipped:
        reason = "no period started in the month, or its plans have no pricing"
        print(f"nothing to bill for {report.month} ({reason}): {', '.join(report.skipped)}")
    for failure in report.failures:
        print(f"tollway: not billed for {report.month}: {failure}", file=sys.stderr)
    if report.failures:
        print(f"tollway: {len(report.failures)} customer(s) not billed for {report.month}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
