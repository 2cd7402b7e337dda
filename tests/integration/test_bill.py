"""``tollway bill`` end to end on the embedded ClickHouse and a real Valkey: a fixed usage dataset
(versions 1 and 2 of a request, a replayed batch, 5xx and 429 responses, refusals, rows on either side
of period boundaries, a customer in Pacific/Auckland whose October starts on September 30 in UTC),
totals checked against values computed by hand; re-runs, finalization, and the command itself."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import CliResult
from tests.support.usage_rows import usage_row
from tollway.billing.aggregate import QuantitySource, reproduce
from tollway.billing.errors import BillingError
from tollway.billing.invoice_store import load_current, load_lines
from tollway.billing.invoices import InvalidBillingPeriod, billed_period, invoice_id, parse_month
from tollway.cli.bill import BillReport, bill, rerate
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: bill-test, version: "1"}
meters:
  requests:
    unit: requests
    billable: {exclude_statuses: ["5xx", "429"]}
  egress:
    unit: response_bytes
plans:
  metered:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, display_name: "<b>Calls</b> & more", model: per_unit, meter: requests, unit_amount: "0.50"}
        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.001"}
"""


def row(
    request_id: str,
    ts: str,
    customer: str,
    status: int,
    meters: dict[str, int],
    *,
    version: int = 2,
    outcome: str = "admitted",
) -> bytes:
    return usage_row(request_id, ts, customer, meters, status=status, version=version, outcome=outcome)


# fmt: off
USAGE: Sequence[bytes] = (
    # acme (UTC): r1 decision row, its response row, and the response row replayed -> counted once
    row("a1", "2026-10-05 10:00:00.000", "acme", 0, {"requests": 1}, version=1),
    row("a1", "2026-10-05 10:00:00.000", "acme", 200, {"requests": 1, "egress": 1000}),
    row("a1", "2026-10-05 10:00:00.000", "acme", 200, {"requests": 1, "egress": 1000}),
    row("a2", "2026-10-06 10:00:00.000", "acme", 503, {"requests": 1, "egress": 50}),   # 5xx: neither meter
    row("a3", "2026-10-07 10:00:00.000", "acme", 429, {"requests": 1, "egress": 200}),  # 429: egress only
    row("a4", "2026-10-08 10:00:00.000", "acme", 429, {"requests": 1}, version=1, outcome="refused"),
    row("a5", "2026-10-09 10:00:00.000", "acme", 0, {"requests": 1}, version=1),        # never reported: counts
    row("a6", "2026-10-31 23:59:59.999", "acme", 200, {"requests": 1, "egress": 10}),   # last instant: in
    row("a7", "2026-11-01 00:00:00.000", "acme", 200, {"requests": 1, "egress": 10}),   # next month: out
    row("a8", "2026-09-30 23:59:59.999", "acme", 200, {"requests": 1, "egress": 10}),   # previous month: out
    row("a9", "2026-10-10 10:00:00.000", "acme", 404, {"requests": 1, "egress": 5}),    # 4xx: billed
    # kiwi (Pacific/Auckland, NZDT = UTC+13): October is 2026-09-30 11:00Z .. 2026-10-31 11:00Z
    row("k1", "2026-09-30 10:59:59.999", "kiwi", 200, {"requests": 1, "egress": 7}),    # Sep 30 23:59 local: out
    row("k2", "2026-09-30 11:00:00.000", "kiwi", 200, {"requests": 1, "egress": 100}),  # Oct 1 00:00 local: in
    row("k3", "2026-10-31 10:59:59.999", "kiwi", 200, {"requests": 1}),                 # Oct 31 23:59 local: in
    row("k4", "2026-10-31 11:00:00.000", "kiwi", 200, {"requests": 1, "egress": 7}),    # Nov 1 00:00 local: out
    row("k5", "2026-10-15 00:00:00.000", "kiwi", 0, {"requests": 1}, version=1),        # superseded by its 500
    row("k5", "2026-10-15 00:00:00.000", "kiwi", 500, {"requests": 1, "egress": 9}),
    row("k6", "2026-10-16 00:00:00.000", "kiwi", 429, {"requests": 1}, version=1, outcome="refused"),
    # late (UTC), subscribed from 2026-10-16: 16 of October's 31 days
    row("l1", "2026-10-20 00:00:00.000", "late", 200, {"requests": 1}),
    # anniversary on the 15th (UTC): period 2026-10-15 .. 2026-11-15
    row("n1", "2026-10-14 23:59:59.999", "anniv", 200, {"requests": 1}),               # previous period: out
    row("n2", "2026-10-15 00:00:00.000", "anniv", 200, {"requests": 1}),
    row("n3", "2026-11-14 23:59:59.999", "anniv", 200, {"requests": 1}),
)
# fmt: on

# Hand-computed, October 2026 (USD; lines rounded half to even):
#   acme:  requests a1 a5 a6 a9 = 4 -> 2.00; egress 1000+200+10+5 = 1215 -> 1.215 -> 1.22; 10.00 + 2.00 + 1.22
#   kiwi:  requests k2 k3 = 2 -> 1.00; egress 100 -> 0.10; 10.00 + 1.00 + 0.10
#   late:  platform 10.00 x 16/31 (0.516129032258) = 5.16129032258 -> 5.16; requests 1 -> 0.50
#   anniv: requests n2 n3 = 2 -> 1.00; 10.00 + 1.00
#   future (starts in November): not billed in October
EXPECTED = {
    "acme": ("13.22", {"requests": "4", "egress": "1215"}),
    "kiwi": ("11.10", {"requests": "2", "egress": "100"}),
    "late": ("5.66", {"requests": "1", "egress": "0"}),
    "anniv": ("11.00", {"requests": "2", "egress": "0"}),
}

SUBSCRIPTIONS = (
    Subscription.new("acme", "metered", datetime(2026, 1, 1, tzinfo=UTC)),
    Subscription.new("kiwi", "metered", datetime(2026, 1, 1, tzinfo=UTC), timezone="Pacific/Auckland"),
    Subscription.new("late", "metered", datetime(2026, 10, 16, tzinfo=UTC)),
    Subscription.new("anniv", "metered", datetime(2026, 1, 15, tzinfo=UTC), alignment="anniversary"),
    Subscription.new("future", "metered", datetime(2026, 11, 5, tzinfo=UTC)),
)
# An anniversary on the 28th: its November period has not begun on November 25 (NOW).
NOT_YET = Subscription.new("soon", "metered", datetime(2026, 1, 28, tzinfo=UTC), alignment="anniversary")


# The same plan with a dearer platform fee and cheaper calls, for re-rating.
NEW_CATALOG = CATALOG.replace('amount: "10.00"', 'amount: "12.00"').replace(
    'unit_amount: "0.50"', 'unit_amount: "0.40"'
)

# Re-rated by hand: old total, new total, difference
#   acme:  12.00 + 4 x 0.40 + 1.22 = 14.82;  kiwi: 12.00 + 0.80 + 0.10 = 12.90
#   late:  12.00 x 0.516129032258 = 6.193548387096 -> 6.19, + 0.40 = 6.59;  anniv: 12.00 + 0.80 = 12.80
RERATED = {
    "acme": ("13.22", "14.82", "1.60"),
    "anniv": ("11.00", "12.80", "1.80"),
    "kiwi": ("11.10", "12.90", "1.80"),
    "late": ("5.66", "6.59", "0.93"),
}


def catalog(text: str = CATALOG) -> Catalog:
    return load_catalog_text(text, "bill-test.yaml")


def subscribe(valkey: ValkeyServer, subscriptions: Sequence[Subscription]) -> list[Subscription]:
    """Put ``subscriptions`` in the store and read them back as ``tollway bill`` does."""

    async def go() -> list[Subscription]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            store = RedisSubscriptionStore(redis)
            for subscription in subscriptions:
                await store.put(subscription)
            return await store.list()
        finally:
            await redis.aclose()

    return asyncio.run(go())


@pytest.fixture
def billed_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", b"".join(USAGE))
    return chdb_db


def stable(document: dict[str, Any]) -> dict[str, Any]:
    """A document without the times of the write (what a re-run may change)."""
    return {k: v for k, v in document.items() if k not in ("generated_at", "finalized_at", "status")}


def by_customer(report: BillReport) -> dict[str, dict[str, Any]]:
    return {result.document["customer_id"]: result.document for result in report.results}


def quantities(document: dict[str, Any]) -> dict[str, str]:
    return {line["meter"]: line["quantity"] for line in document["lines"] if line["meter"]}


def test_totals_equal_hand_computed_values(billed_db: ChdbDatabase, valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    report = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, out_dir=tmp_path)
    documents = by_customer(report)
    assert report.skipped == ("future",)
    assert {c: (d["total"], quantities(d)) for c, d in documents.items()} == EXPECTED
    assert {r.action for r in report.results} == {"created"}
    kiwi = documents["kiwi"]["period"]
    assert (kiwi["start"], kiwi["end"]) == ("2026-09-30T11:00:00Z", "2026-10-31T11:00:00Z")
    assert kiwi["local_start"] == "2026-10-01T00:00:00+13:00"
    late = documents["late"]
    assert late["period"]["fraction"] == "0.516129032258"
    assert [line["amount"] for line in late["lines"]] == ["5.16", "0.50", "0.00"]
    anniv = documents["anniv"]["period"]
    assert (anniv["start"], anniv["end"]) == ("2026-10-15T00:00:00Z", "2026-11-15T00:00:00Z")
    # the lines add up to the total; the stored rows are the document's
    for document in documents.values():
        assert sum(Decimal(line["amount"]) for line in document["lines"]) == Decimal(document["total"])
    stored = load_current(client, database, [d["invoice_id"] for d in documents.values()])
    assert {s.document["customer_id"]: s.status for s in stored.values()} == dict.fromkeys(EXPECTED, "draft")
    # summed for every customer at once; each line's own one-customer query gives the same quantity
    for document in documents.values():
        for line in document["lines"]:
            if line["quantity_source"] is not None:
                source = QuantitySource(line["quantity_source"]["sql"], line["quantity_source"]["parameters"])
                assert reproduce(client, source) == Decimal(line["quantity"])


def test_each_line_records_the_query_that_reproduces_its_quantity(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = billed_db
    report = bill(client, database, catalog(), subscribe(valkey_fresh, SUBSCRIPTIONS), "2026-10", now=NOW)
    acme = by_customer(report)["acme"]
    lines = load_lines(client, database, acme["invoice_id"])
    assert [(line["kind"], line["charge_id"], line["amount"]) for line in lines] == [
        ("charge", "platform", "10"),
        ("charge", "calls", "2"),
        ("charge", "egress", "1.22"),
    ]
    usage_lines = [line for line in lines if line["meter"]]
    assert len(usage_lines) == 2
    for line in usage_lines:
        assert line["quantity_parameters"]["meter"] == line["meter"]
        source = QuantitySource(line["quantity_sql"], line["quantity_parameters"])
        assert reproduce(client, source) == Decimal(EXPECTED["acme"][1][line["meter"]])
    assert lines[0]["quantity_sql"] == ""  # a flat fee has no usage query


def test_a_second_run_gives_the_same_invoices_and_finalized_ones_never_change(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer, tmp_path: Path
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)

    def run(**options: Any) -> BillReport:
        return bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, **options)

    first = by_customer(run())
    second_report = run()
    assert {r.action for r in second_report.results} == {"replaced"}
    second = by_customer(second_report)
    assert {c: stable(d) for c, d in second.items()} == {c: stable(d) for c, d in first.items()}

    finalized_report = run(finalize=True)
    assert {r.action for r in finalized_report.results} == {"finalized"}
    finalized = by_customer(finalized_report)
    assert {d["status"] for d in finalized.values()} == {"finalized"}
    assert {c: stable(d) for c, d in finalized.items()} == {c: stable(d) for c, d in first.items()}

    # late usage for October arrives; neither a draft run nor another --finalize touches the invoices
    insert_json_rows(client, database, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1}))
    for options in ({}, {"finalize": True}):
        again = run(out_dir=tmp_path, **options)
        assert {r.action for r in again.results} == {"unchanged"}
        assert by_customer(again) == finalized
    stored = load_current(client, database, [d["invoice_id"] for d in finalized.values()])
    assert {s.document["customer_id"]: s.document for s in stored.values()} == finalized
    assert json.loads((tmp_path / f"{finalized['acme']['invoice_id']}.json").read_text()) == finalized["acme"]


def test_a_draft_rerun_picks_up_new_usage_and_keeps_the_invoice_id(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    first = by_customer(bill(client, database, catalog(), subscriptions, "2026-10", now=NOW))["acme"]
    insert_json_rows(client, database, "usage", row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1}))
    second = by_customer(bill(client, database, catalog(), subscriptions, "2026-10", now=NOW))["acme"]
    assert second["invoice_id"] == first["invoice_id"]
    assert (first["total"], second["total"]) == ("13.22", "13.72")
    assert [line["amount"] for line in load_lines(client, database, first["invoice_id"])] == ["10", "2.5", "1.22"]


def adjustment_lines(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in document["lines"] if line["kind"] == "adjustment"]


def test_late_usage_for_a_finalized_period_becomes_an_adjustment_on_the_next_invoice(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, [*SUBSCRIPTIONS, NOT_YET])

    def run(period: str, now: datetime = NOW, **options: Any) -> dict[str, dict[str, Any]]:
        return by_customer(bill(client, database, catalog(), subscriptions, period, now=now, **options))

    october = run("2026-10", finalize=True)["acme"]
    late_row = row("a10", "2026-10-20 00:00:00.000", "acme", 200, {"requests": 1})
    insert_json_rows(client, database, "usage", late_row)

    # November: a7 (1 request, 10 bytes) = 10.00 + 0.50 + 0.01, and October's late request: 13.72 - 13.22
    november = run("2026-11")
    assert "soon" not in november
    for _ in range(2):  # a draft re-run recomputes the adjustment, it does not add a second one
        acme = november["acme"]
        assert acme["total"] == "11.01"
        [adjustment] = adjustment_lines(acme)
        assert adjustment["adjusts"] == october["invoice_id"]
        assert adjustment["amount"] == "0.50"
        assert adjustment["quantities"] == {
            "egress": {"billed": "1215", "now": "1215"},
            "requests": {"billed": "4", "now": "5"},
        }
        assert adjustment["breakdown"] == [
            "requests: 4 billed, 5 now",
            "2026-10 total: 13.72 now − 13.22 billed = 0.50",
        ]
        assert all(not adjustment_lines(d) for c, d in november.items() if c != "acme")
        assert sum(Decimal(line["amount"]) for line in acme["lines"]) == Decimal(acme["total"])
        source = adjustment["quantity_sources"]["requests"]
        assert reproduce(client, QuantitySource(source["sql"], source["parameters"])) == Decimal(5)
        november = run("2026-11")
    assert by_customer(bill(client, database, catalog(), subscriptions, "2026-10", now=NOW))["acme"] == october

    # November finalized; more late usage for October and for November: both adjusted in December
    run("2026-11", now=datetime(2026, 12, 2, tzinfo=UTC), finalize=True)
    insert_json_rows(
        client,
        database,
        "usage",
        row("a11", "2026-10-21 00:00:00.000", "acme", 200, {"requests": 1})
        + row("a12", "2026-11-20 00:00:00.000", "acme", 200, {"requests": 1}),
    )
    december = run("2026-12", now=datetime(2027, 1, 5, tzinfo=UTC))["acme"]
    assert [(line["kind"], line["amount"]) for line in december["lines"]] == [
        ("charge", "10.00"),
        ("charge", "0.00"),
        ("charge", "0.00"),
        ("adjustment", "0.50"),
        ("adjustment", "0.50"),
    ]
    assert [line["quantities"]["requests"] for line in adjustment_lines(december)] == [
        {"billed": "5", "now": "6"},  # October: billed 4, then 5 through November's adjustment
        {"billed": "1", "now": "2"},
    ]
    assert december["total"] == "11.00"
    stored = load_lines(client, database, december["invoice_id"])
    assert [line["kind"] for line in stored] == ["charge", "charge", "charge", "adjustment", "adjustment"]
    assert set(stored[3]["quantity_parameters"]) == {"egress", "requests"}


def test_rerating_prices_history_under_a_new_catalog_and_writes_nothing(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    rerated = rerate(client, database, catalog(), catalog(NEW_CATALOG), subscriptions, "2026-10", now=NOW)
    assert {
        item.customer_id: (str(item.old.total), str(item.new.total), str(item.difference)) for item in rerated
    } == RERATED
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows == [(0,)]


def test_progress_is_reported_every_n_customers(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, database = billed_db
    monkeypatch.setattr("tollway.cli.bill.PROGRESS_EVERY", 2)
    seen: list[tuple[int, int]] = []
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, progress=lambda *p: seen.append(p))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_bad_input_writes_nothing(billed_db: ChdbDatabase, valkey_fresh: ValkeyServer) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    with pytest.raises(BillingError, match="in the future"):
        bill(client, database, catalog(), subscriptions[:1], "2026-12", now=NOW)
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows == [(0,)]


def test_a_customer_that_cannot_be_priced_is_reported_and_the_others_are_billed(
    billed_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = billed_db
    retired = Subscription.new("zed", "retired", datetime(2026, 1, 1, tzinfo=UTC))
    subscriptions = subscribe(valkey_fresh, [*SUBSCRIPTIONS, retired])
    report = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW)
    assert {c: d["total"] for c, d in by_customer(report).items()} == {c: e[0] for c, e in EXPECTED.items()}
    [failure] = report.failures
    assert failure.customer_id == "zed"
    assert "plan 'retired', which the catalog does not have" in str(failure)


def test_html_escapes_every_string(billed_db: ChdbDatabase, valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    client, database = billed_db
    report = bill(
        client, database, catalog(), subscribe(valkey_fresh, SUBSCRIPTIONS[:1]), "2026-10", now=NOW, out_dir=tmp_path
    )
    (json_path, html_path) = report.files[0]
    page = html_path.read_text()
    assert "<b>Calls</b>" not in page
    assert "&lt;b&gt;Calls&lt;/b&gt; &amp; more" in page
    assert "<script" not in page
    assert "13.22 USD" in page
    assert json.loads(json_path.read_text())["total"] == "13.22"


# --- which period a month bills (pure) --------------------------------------------------------------


def test_a_month_has_begun_once_it_is_midnight_in_kiritimati() -> None:
    assert parse_month("2026-12", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)).label == "2026-12"
    with pytest.raises(InvalidBillingPeriod, match="in the future"):
        parse_month("2026-12", datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC))
    for text in ("2026-1", "2026-00", "26-10", "2026-10-01", ""):
        with pytest.raises(InvalidBillingPeriod, match="YYYY-MM"):
            parse_month(text, NOW)


def test_a_yearly_subscription_is_billed_in_the_month_its_period_starts() -> None:
    yearly = Subscription.new(
        "y", "metered", datetime(2025, 3, 10, tzinfo=UTC), alignment="anniversary", interval="year"
    )
    assert billed_period(yearly, parse_month("2026-02", NOW)) is None
    period = billed_period(yearly, parse_month("2026-03", NOW))
    assert period is not None
    assert (period.start, period.end) == (datetime(2026, 3, 10, tzinfo=UTC), datetime(2027, 3, 10, tzinfo=UTC))


def test_the_invoice_id_depends_on_the_customer_and_the_period_start_only() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    assert invoice_id("acme", start) == invoice_id("acme", start)
    assert invoice_id("acme", start) != invoice_id("acme2", start)
    assert invoice_id("acme", start) != invoice_id("acme", datetime(2026, 11, 1, tzinfo=UTC))


# --- the command, in a process of its own (with its own chdb path) ---------------------------------


SELLER_ENV = {"TOLLWAY_SELLER_NAME": "Tollway Test Ltd", "TOLLWAY_SELLER_COUNTRY": "GB"}
"""The seller ``tollway bill --finalize`` needs (docs/billing.md, "Numbers, issue and due dates")."""


def cli_env(valkey: ValkeyServer, engine: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLWAY_REDIS_URL": valkey.url,
        "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{engine}",
        "TOLLWAY_CLICKHOUSE_DATABASE": "tollway",
        **SELLER_ENV,
    }


def tollway(env: dict[str, str], cwd: Path, *args: str) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


LOAD_USAGE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tollway.warehouse.connection import connect, insert_json_rows
    from tollway.warehouse.migrations import Migrator
    client = connect("chdb://" + sys.argv[1])
    Migrator(client, "tollway").migrate()
    insert_json_rows(client, "tollway", "usage", Path(sys.argv[2]).read_bytes())
    """
)


def assert_one_line_failure(result: CliResult, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def command_setup(valkey: ValkeyServer, tmp_path: Path) -> dict[str, str]:
    """The dataset loaded into an embedded ClickHouse under ``tmp_path``, the catalog beside it, the
    subscriptions in ``valkey``: the environment for ``tollway bill`` run from ``tmp_path``."""
    engine = tmp_path / "chdb"
    (tmp_path / "usage.jsonl").write_bytes(b"".join(USAGE))
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_USAGE, str(engine), str(tmp_path / "usage.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    subscribe(valkey, SUBSCRIPTIONS)
    return cli_env(valkey, engine)


def test_the_command(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    env = command_setup(valkey_fresh, tmp_path)

    result = tollway(env, tmp_path, "bill", "--period", "2026-10", "--plans", "catalog.yaml")
    assert result.code == 0, result.stderr
    printed = {line.split()[1]: line.split() for line in result.stdout.splitlines() if line.startswith("in_")}
    assert {customer: fields[3] for customer, fields in printed.items()} == {c: e[0] for c, e in EXPECTED.items()}
    assert (
        "nothing to bill for 2026-10 (no period started in the month, or its plans have no pricing): future"
        in result.stdout
    )
    acme = printed["acme"]
    html_path = tmp_path / acme[-1]
    assert html_path.parent == tmp_path / "invoices"
    document = json.loads(html_path.with_suffix(".json").read_text())
    assert (document["total"], document["status"]) == ("13.22", "draft")

    assert_one_line_failure(tollway(env, tmp_path, "bill", "--period", "2026-10"), "no catalog", "TOLLWAY_CATALOG")
    finalized = tollway(
        {**env, "TOLLWAY_CATALOG": "catalog.yaml"},
        tmp_path,
        "bill",
        "--period",
        "2026-10",
        "--customer",
        "acme",
        "--finalize",
    )
    assert finalized.code == 0, finalized.stderr
    assert "finalized" in finalized.stdout
    assert "13.22 USD" in finalized.stdout
    again = tollway(env, tmp_path, "bill", "--period", "2026-10", "--customer", "acme", "--plans", "catalog.yaml")
    assert again.code == 0, again.stderr
    assert "already finalized, left unchanged" in again.stdout

    (tmp_path / "new.yaml").write_text(NEW_CATALOG)
    rerated = tollway(
        {**env, "TOLLWAY_CATALOG": "catalog.yaml"},
        tmp_path,
        "bill",
        "--period",
        "2026-10",
        "--dry-run",
        "--plans",
        "new.yaml",
    )
    assert rerated.code == 0, rerated.stderr
    table = [line.split() for line in rerated.stdout.splitlines()]
    assert table[0] == ["CUSTOMER", "OLD", "NEW", "DIFFERENCE", "CURRENCY"]
    assert {fields[0]: tuple(fields[1:4]) for fields in table[1:]} == RERATED
    assert_one_line_failure(
        tollway(env, tmp_path, "bill", "--period", "2026-10", "--dry-run", "--plans", "new.yaml"), "TOLLWAY_CATALOG"
    )

    plans = ("--plans", "catalog.yaml")
    assert_one_line_failure(tollway(env, tmp_path, "bill", "--period", "2026-13", *plans), "--period", "YYYY-MM")
    assert_one_line_failure(tollway(env, tmp_path, "bill", "--period", "oct", *plans), "YYYY-MM")
    assert_one_line_failure(tollway(env, tmp_path, "bill", "--period", "2099-01", *plans), "in the future")
    assert_one_line_failure(
        tollway(env, tmp_path, "bill", "--period", "2026-10", "--customer", "nobody", *plans),
        "unknown customer 'nobody'",
    )
    subscribe(valkey_fresh, [Subscription.new("gone", "retired", datetime(2026, 1, 1, tzinfo=UTC))])
    partly = tollway(env, tmp_path, "bill", "--period", "2026-10", *plans)
    assert partly.code == 1, partly  # the others are billed; the failure is reported, one line each
    assert {line.split()[1] for line in partly.stdout.splitlines() if line.startswith("in_")} == set(EXPECTED)
    assert partly.stderr.strip().splitlines() == [
        "tollway: not billed for 2026-10: customer 'gone' is on plan 'retired', which the "
        "catalog does not have (its plans: metered)",
        "tollway: 1 customer(s) not billed for 2026-10",
    ]
