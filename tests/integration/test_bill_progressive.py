"""Progressive (threshold) invoicing end to end on the embedded ClickHouse and a real Valkey:
docs/billing.md's worked example (``tollway bill --progressive`` passes through October, then the
period's invoice), idempotent passes, a pass that crashes, ``invoice.finalized`` for interim invoices,
a coupon shared by interim and final invoices, late usage, and the command's bad input."""

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.test_bill import LOAD_USAGE, cli_env, subscribe, tollway
from tests.integration.test_bill_coupons import crash_next, doc_example  # noqa: F401 - crash_next: a fixture
from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.billing.invoice_store import load_current, load_lines
from tollway.billing.invoices import invoice_id
from tollway.cli.bill import BillReport, announce, bill, progressive
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event, event_id
from tollway.notifications.outbox import OutboxWriter
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

CATALOG, (PASSES, FINAL) = doc_example("progressive-example")
START = datetime(2026, 1, 1, tzinfo=UTC)
PRO = Subscription.new("acme", "pro", START)
TWIN = Subscription.new("twin", "pro-single", START)
NOVEMBER_2 = datetime(2026, 11, 2, tzinfo=UTC)
OCTOBER_START = datetime(2026, 10, 1, tzinfo=UTC)

# Hand-computed (USD): platform 10.00 (flat, whole period) + 0.50 a request; the 60.00 minimum only at
# the period's end; threshold 20.00 on what is owed so far and not yet billed by an interim invoice.
#   Oct 10, 30 requests: 10.00 + 15.00 = 25.00 owed, 0 billed -> 25.00 >= 20.00: interim 1 of 25.00
#   Oct 12, 40 requests: 10.00 + 20.00 = 30.00 owed, 25.00 billed -> 5.00: nothing
#   Oct 20, 80 requests: 10.00 + 40.00 = 50.00 owed, 25.00 billed -> 25.00: interim 2 of 25.00
#   Oct 20 again: 50.00 owed, 50.00 billed -> 0.00: nothing
#   period end, 95 requests: 10.00 + 47.50 = 57.50, minimum 60.00 -> true-up 2.50; total 60.00;
#   final = 60.00 - 25.00 - 25.00 = 10.00. The twin (same usage, no threshold): one invoice of 60.00.
HAND_PASSES = [
    # pass at, requests so far, owed, billed by interim invoices, not yet billed, issued
    ["2026-10-10 12:00", "30", "25.00", "0.00", "25.00", "interim invoice 1: 25.00"],
    ["2026-10-12 12:00", "40", "30.00", "25.00", "5.00", "nothing"],
    ["2026-10-20 12:00", "80", "50.00", "25.00", "25.00", "interim invoice 2: 25.00"],
    ["2026-10-20 12:00", "80", "50.00", "50.00", "0.00", "nothing"],
]
HAND_FINAL = [
    ["platform", "10.00"],
    ["calls", "47.50"],
    ["minimum_commitment", "2.50"],
    ["interim_invoice", "-25.00"],
    ["interim_invoice", "-25.00"],
    ["total", "10.00"],
]
SINGLE_TOTAL = Decimal("60.00")


def catalog(text: str = CATALOG) -> Catalog:
    return load_catalog_text(text, "progressive.yaml")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def requests(first: int, last: int, day: int, customers: Sequence[str] = ("acme", "twin")) -> bytes:
    """Requests number ``first`` to ``last`` (one row each) on October ``day``, for each customer."""
    return b"".join(
        usage_row(f"{c}-{n}", f"2026-10-{day:02d} 08:00:00.000", c, {"requests": 1}, plan="pro")
        for c in customers
        for n in range(first, last + 1)
    )


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    return chdb_db


def outbox(valkey: ValkeyServer, customer: str) -> list[Event]:
    async def go() -> list[Event]:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return [Event.from_stream(f) for _, f in await client.xrange(keys.stream_key("tw:", customer))]
        finally:
            await client.aclose()

    return asyncio.run(go())


def announced(valkey: ValkeyServer, report: BillReport) -> int:
    async def go() -> int:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await announce(report, OutboxWriter(client))
        finally:
            await client.aclose()

    return asyncio.run(go())


def issued(report: BillReport) -> list[dict[str, Any]]:
    return [r.document for r in report.results if r.action == "finalized"]


def test_a_customer_crossing_the_threshold_twice_in_a_month_gets_two_interim_invoices_and_a_final_one_whose_total_equals_the_single_invoice_total_of_the_same_usage(  # noqa: E501
    db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    """The acceptance of issue 16 (progressive invoicing), with the numbers computed by hand above, which
    are also docs/billing.md's worked example (its catalog is the one billed here)."""
    assert (PASSES, FINAL) == (HAND_PASSES, HAND_FINAL)
    client, database = db
    batches = {"2026-10-10 12:00": (1, 30, 9), "2026-10-12 12:00": (31, 40, 11), "2026-10-20 12:00": (41, 80, 19)}
    interim: list[dict[str, Any]] = []
    for when, count, owed, billed, unbilled, outcome in HAND_PASSES:
        if when in batches:
            first, last, day = batches.pop(when)
            insert_json_rows(client, database, "usage", requests(first, last, day))
        report = progressive(client, database, catalog(), [PRO, TWIN], "2026-10", now=at(when))
        announced(valkey_fresh, report)
        new = issued(report)
        if outcome == "nothing":
            assert new == []
        else:
            (document,) = new
            number, amount = outcome.removeprefix("interim invoice ").split(": ")
            assert document["interim"] == {
                "sequence": int(number),
                "period_invoice_id": invoice_id("acme", OCTOBER_START),
            }
            assert document["invoice_id"] == invoice_id("acme", OCTOBER_START, int(number))
            assert (document["status"], document["total"], document["subtotal"]) == ("finalized", amount, amount)
            (calls,) = (line for line in document["lines"] if line["charge_id"] == "calls")
            assert calls["quantity"] == count
            priced = sum(Decimal(line["amount"]) for line in document["lines"] if line["kind"] != "interim")
            assert priced == Decimal(owed)  # no minimum true-up in what is owed so far
            credited = -sum(Decimal(line["amount"]) for line in document["lines"] if line["kind"] == "interim")
            assert credited == Decimal(billed)
            assert Decimal(document["total"]) == Decimal(unbilled)
            interim.append(document)
        # the earlier interim invoices are reported as they are, never issued again
        assert [r.document for r in report.results if r.action == "unchanged"] == interim[: len(interim) - len(new)]
    assert [d["total"] for d in interim] == ["25.00", "25.00"]

    insert_json_rows(client, database, "usage", requests(81, 95, 28))
    report = bill(client, database, catalog(), [PRO, TWIN], "2026-10", now=NOVEMBER_2, finalize=True)
    announced(valkey_fresh, report)
    final, single = (r.document for r in sorted(report.results, key=lambda r: r.document["customer_id"]))
    assert final["invoice_id"] == invoice_id("acme", OCTOBER_START)
    assert [[line["charge_id"], line["amount"]] for line in final["lines"]] + [["total", final["total"]]] == HAND_FINAL
    assert [line["interim_invoice"] for line in final["lines"] if line["kind"] == "interim"] == [
        d["invoice_id"] for d in interim
    ]
    assert single["total"] == "60.00"
    assert "interim" not in single
    billed_in_all = sum((Decimal(d["total"]) for d in [*interim, final]), Decimal(0))
    assert billed_in_all == Decimal(single["total"]) == SINGLE_TOTAL

    # a pass after the period ended issues nothing; the final invoice stays as it is
    late_pass = progressive(client, database, catalog(), [PRO], "2026-10", now=NOVEMBER_2)
    assert issued(late_pass) == []
    assert announced(valkey_fresh, late_pass) == 0
    # one invoice.finalized per interim invoice and for the final one, whatever was announced twice
    events = outbox(valkey_fresh, "acme")
    ids = [d["invoice_id"] for d in [*interim, final]]
    assert [(e.type, e.id) for e in events] == [("invoice.finalized", event_id("invoice.finalized", i)) for i in ids]
    assert [e.data["total"] for e in events] == ["25.00", "25.00", "10.00"]
    stored = load_current(client, database, ids)
    assert {s.status for s in stored.values()} == {"finalized"}
    assert [line["kind"] for line in load_lines(client, database, final["invoice_id"])][-2:] == ["interim", "interim"]


def test_a_pass_that_crashed_is_rerun_without_a_duplicate(
    db: ChdbDatabase,
    crash_next: list[str],  # noqa: F811
) -> None:
    client, database = db
    insert_json_rows(client, database, "usage", requests(1, 30, 9, ("acme",)))
    crash_next.append("pass")
    with pytest.raises(RuntimeError, match="killed"):
        progressive(client, database, catalog(), [PRO], "2026-10", now=at("2026-10-10 12:00"))
    assert load_current(client, database, [invoice_id("acme", OCTOBER_START, 1)]) == {}
    for _ in range(3):
        report = progressive(client, database, catalog(), [PRO], "2026-10", now=at("2026-10-10 12:30"))
    (result,) = report.results
    assert (result.action, result.document["total"]) == ("unchanged", "25.00")
    assert result.document["invoice_id"] == invoice_id("acme", OCTOBER_START, 1)
    rows = client.query(f"SELECT count() FROM {database}.invoices FINAL").result_rows
    assert rows[0][0] == 1


def test_a_coupon_is_shared_by_the_interim_and_final_invoices(db: ChdbDatabase) -> None:
    """A 30.00 coupon: interim invoice 1 (25.00 due) takes 25.00, the final one the 5.00 left; the
    period still bills 60.00 before coupons, 30.00 after."""
    text = CATALOG.replace(
        '      progressive_billing: {threshold: "20.00"}',
        '      progressive_billing: {threshold: "20.00"}\n      coupons:\n        - {id: welcome, amount: "30.00"}',
    )
    client, database = db
    insert_json_rows(client, database, "usage", requests(1, 30, 9, ("acme",)))
    (first,) = issued(progressive(client, database, catalog(text), [PRO], "2026-10", now=at("2026-10-10 12:00")))
    assert (first["subtotal"], first["total"]) == ("25.00", "0.00")
    assert first["lines"][-1]["coupon"]["balance_after"] == "5.00"
    insert_json_rows(client, database, "usage", requests(31, 95, 19, ("acme",)))
    report = bill(client, database, catalog(text), [PRO], "2026-10", now=NOVEMBER_2, finalize=True)
    final = report.results[0].document
    # 60.00 for the period - 25.00 billed by interim invoice 1 = 35.00, less the 5.00 left
    assert (final["subtotal"], final["total"]) == ("35.00", "30.00")
    assert Decimal(first["subtotal"]) + Decimal(final["subtotal"]) == SINGLE_TOTAL


def test_late_usage_is_adjusted_against_the_period_invoice_only(db: ChdbDatabase) -> None:
    client, database = db
    insert_json_rows(client, database, "usage", requests(1, 30, 9, ("acme",)))
    progressive(client, database, catalog(), [PRO], "2026-10", now=at("2026-10-10 12:00"))
    insert_json_rows(client, database, "usage", requests(31, 130, 19, ("acme",)))
    bill(client, database, catalog(), [PRO], "2026-10", now=NOVEMBER_2, finalize=True)
    insert_json_rows(client, database, "usage", requests(131, 140, 20, ("acme",)))  # late: 10 more
    november = bill(client, database, catalog(), [PRO], "2026-11", now=datetime(2026, 12, 2, tzinfo=UTC))
    adjustments = [line for line in november.results[0].document["lines"] if line["kind"] == "adjustment"]
    assert [(line["adjusts"], line["amount"]) for line in adjustments] == [(invoice_id("acme", OCTOBER_START), "5.00")]


def test_the_command(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    """``tollway bill --progressive`` with the real clock: 50 requests at the start of the current month
    (10.00 + 25.00 owed) give interim invoice 1 of 35.00 and its event; a second pass issues nothing."""
    engine = tmp_path / "chdb"
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    now = datetime.now(UTC)
    month = f"{now.year:04d}-{now.month:02d}"
    rows = [usage_row(f"r{n}", f"{month}-01 00:00:00.000", "acme", {"requests": 1}) for n in range(50)]
    (tmp_path / "usage.jsonl").write_bytes(b"".join(rows))
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_USAGE, str(engine), str(tmp_path / "usage.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    subscribe(valkey_fresh, [PRO])
    env = cli_env(valkey_fresh, engine)
    argv = ("bill", "--period", month, "--progressive", "--plans", "catalog.yaml")
    for flags in (["--finalize"], ["--dry-run"]):
        bad = tollway(env, tmp_path, *argv, *flags)
        assert bad.code == 2, bad
        assert "--progressive issues interim invoices" in bad.stderr
    for note in ("interim invoice 1 issued", "interim invoice 1 issued earlier"):
        done = tollway(env, tmp_path, *argv)
        assert done.code == 0, done.stderr
        (line,) = done.stdout.splitlines()
        assert f"acme  {month}  35.00 USD  {note}  " in line
    (html,) = (tmp_path / "invoices").glob("*.html")
    assert f"(interim invoice 1 of {month})" in html.read_text()
    [event] = outbox(valkey_fresh, "acme")
    assert (event.type, event.data["total"]) == ("invoice.finalized", "35.00")
