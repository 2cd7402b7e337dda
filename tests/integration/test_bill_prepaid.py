"""``tollway bill`` for prepaid and spend-capped customers, on the embedded ClickHouse and a real Valkey:
usage rows carrying the prices the limiter burned (``price_micros``, ``balance_unit``) and credit-ledger
entries, billed into invoices with credits applied, a spend-cap line and the balance section; totals and
balances checked against values computed by hand (docs/billing.md, "Prepaid plans")."""

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_bill import cli_env, subscribe, tollway
from tests.integration.test_credits import Cli, insert_burns
from tests.integration.test_credits import burn as burn_grant
from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import ms
from tests.unit.billing.test_prepaid import CATALOG, burn, money_of
from tollway.billing.invoice_store import load_lines
from tollway.cli.bill import BillReport, bill
from tollway.credits.ledger import LedgerEntry, insert_entries
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.model import Subscription
from tollway.usage.row import UsageRow, encode_row
from tollway.warehouse.connection import insert_json_rows, query_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def row(
    request_id: str,
    ts: str,
    customer: str,
    plan: str,
    feature: str,
    price: int,
    unit: str,
    *,
    outcome: str = "admitted",
    version: int = 2,
    cost: int = 1,
) -> bytes:
    meters: dict[str, int] = {"requests": 1}
    if feature == "search":
        meters["search-units"] = cost
    return encode_row(
        UsageRow(
            request_id=request_id,
            ts_ms=ms(ts),
            customer_id=customer,
            subject="key",
            plan=plan,
            feature=feature,
            route="/v1/items",
            method="GET",
            status=200 if version == 2 else 0,
            outcome="refused" if outcome == "refused" else "admitted",
            reason="insufficient-credits" if outcome == "refused" else "",
            limits_checked=True,
            request_bytes=0,
            response_bytes=0,
            upstream_latency_ms=1.0,
            meters=meters if outcome != "refused" else {},
            version=version,
            price_micros=price,
            balance_unit=unit,
        )
    )


def priced(requests: Sequence[tuple[str, int]], month: str, prefix: str) -> list[bytes]:
    """acme's rows for ``requests`` (feature, cost) in ``month``, each with the marginal price the limiter
    burns for it (the running quantities start at 0 in each period)."""
    money = money_of("prepaid")
    rows: list[bytes] = []
    done: list[tuple[str, int]] = []
    for n, request in enumerate(requests):
        before, _ = burn(money, done)
        done.append(request)
        after, _ = burn(money, done)
        ts = f"{month}-{n // 3 + 1:02d} {n % 24:02d}:00:00.000"
        feature, cost = request
        if n == 7:  # the decision row, then the response row: counted once
            rows.append(
                row(f"{prefix}{n}", ts, "acme", "prepaid", feature, after - before, "credits", version=1, cost=cost)
            )
        rows.append(row(f"{prefix}{n}", ts, "acme", "prepaid", feature, after - before, "credits", cost=cost))
    return rows


def prepaid_rows() -> list[bytes]:
    """acme (prepaid in credits): 10 reads in September; in October 50 reads then 10 searches of cost 5;
    a refused request."""
    rows = priced([("read", 1)] * 10, "2026-09", "s")
    rows += priced([("read", 1)] * 50 + [("search", 5)] * 10, "2026-10", "o")
    rows.append(row("x1", "2026-10-30 12:00:00.000", "acme", "prepaid", "read", 0, "credits", outcome="refused"))
    return rows


def capped_rows() -> list[bytes]:
    """capped: 33 requests at 0.30 (9.90) and the 34th refused with 402 spend-cap-reached. open: 50
    requests admitted without the cap's check (an outage under fail_open: price 0)."""
    rows = [
        row(f"c{n}", f"2026-10-{n % 28 + 1:02d} 09:00:00.000", "capped", "capped", "read", 300_000, "")
        for n in range(33)
    ]
    rows.append(row("c33", "2026-10-29 09:00:00.000", "capped", "capped", "read", 0, "", outcome="refused"))
    rows += [row(f"f{n}", f"2026-10-{n % 28 + 1:02d} 09:00:00.000", "open", "capped", "read", 0, "") for n in range(50)]
    return rows


def entry(entry_id: str, ts: str, kind: Any, grant_id: str, amount: str, note: str = "") -> LedgerEntry:
    return LedgerEntry(
        entry_id, "acme", ms(ts), kind, grant_id, Decimal(amount), "credits", actor="cli:test", note=note
    )


LEDGER: Sequence[LedgerEntry] = (
    entry("grant:welcome", "2026-08-20 00:00:00", "grant", "welcome", "5000"),
    entry("grant:old", "2026-09-02 00:00:00", "grant", "old", "1000"),
    entry("void:old", "2026-09-15 00:00:00", "void", "old", "-400"),
    entry("rollover:welcome:1790812800000", "2026-10-01 00:00:00", "rollover", "welcome", "-1500"),
    entry("grant:topup-42", "2026-10-05 00:00:00", "grant", "topup-42", "2500", "invoice 42"),
    entry("expiry:topup-42", "2026-10-31 12:00:00", "expiry", "topup-42", "-100"),
    entry("grant:next", "2026-11-02 00:00:00", "grant", "next", "300"),
)

SUBSCRIPTIONS = (
    Subscription.new("acme", "prepaid", datetime(2026, 1, 1, tzinfo=UTC)),
    Subscription.new("capped", "capped", datetime(2026, 1, 1, tzinfo=UTC)),
    Subscription.new("open", "capped", datetime(2026, 1, 1, tzinfo=UTC)),
)

# Hand-computed, October 2026 (USD). acme: 60 requests, 50 search units:
#   platform 10.00; calls 60 x 0.25 = 15.00; searches 40 x 0.10 + 0.50 + 10 x 0.05 = 5.00;
#   bundles ceil((60 - 3) / 7) = 9 x 0.33 = 2.97; extra (60 - 10) x 0.07 = 3.50; bulk 60 x 0.01 = 0.60;
#   egress 0.00; credits applied -(15.00 + 5.00 + 2.97 + 3.50) = -26.47 (2647 credits burned) -> 10.60 due
#   balance: start 5000 + 1000 - 400 - 283 (September: 10 x 25 calls + 1 bundle of 33) = 5317;
#            -1500 rollover, +2500 top-up, -100 expiry, -2647 burned -> end 3570
# capped: 5.00 + 33 x 0.30 = 14.90;  open: 5.00 + 50 x 0.30 = 20.00, spend cap -5.00 -> 20.00 - 5.00 = 15.00
EXPECTED_LINES = {
    "acme": [
        ("platform", "10.00"),
        ("calls", "15.00"),
        ("searches", "5.00"),
        ("bundles", "2.97"),
        ("extra", "3.50"),
        ("bulk", "0.60"),
        ("egress", "0.00"),
        ("credits_applied", "-26.47"),
    ],
    "capped": [("platform", "5.00"), ("calls", "9.90")],
    "open": [("platform", "5.00"), ("calls", "15.00"), ("spend_cap", "-5.00")],
}
EXPECTED_TOTALS = {"acme": "10.60", "capped": "14.90", "open": "15.00"}
EXPECTED_BALANCE = [
    ("balance_start", None, "5317", "53.17"),
    ("rolled_over", "welcome", "-1500", "-15.00"),
    ("top_up", "topup-42", "2500", "25.00"),
    ("expired", "topup-42", "-100", "-1.00"),
    ("burned", None, "-2647", "-26.47"),
    ("balance_end", None, "3570", "35.70"),
]


@pytest.fixture
def prepaid_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", b"".join(prepaid_rows() + capped_rows()))
    insert_entries(client, database, LEDGER)
    return chdb_db


def by_customer(report: BillReport) -> dict[str, dict[str, Any]]:
    return {result.document["customer_id"]: result.document for result in report.results}


def test_prepaid_and_capped_invoices_equal_hand_computed_values(
    prepaid_db: ChdbDatabase, valkey_fresh: ValkeyServer, tmp_path: Path
) -> None:
    client, database = prepaid_db
    catalog = load_catalog_text(CATALOG, "prepaid.yaml")
    report = bill(
        client, database, catalog, subscribe(valkey_fresh, SUBSCRIPTIONS), "2026-10", now=NOW, out_dir=tmp_path
    )
    documents = by_customer(report)
    assert {
        c: [(line["charge_id"], line["amount"]) for line in d["lines"]] for c, d in documents.items()
    } == EXPECTED_LINES
    assert {c: d["total"] for c, d in documents.items()} == EXPECTED_TOTALS
    for document in documents.values():
        assert sum(Decimal(line["amount"]) for line in document["lines"]) == Decimal(document["total"])

    acme = documents["acme"]
    # the burns of October's admitted rows are the real-time charges' amount before rounding
    (burned,) = query_rows(
        client,
        "SELECT sum(price_micros) FROM {db:Identifier}.usage FINAL WHERE customer_id = 'acme' "
        "AND outcome = 'admitted' AND ts >= '2026-10-01 00:00:00' AND ts < '2026-11-01 00:00:00'",
        {"db": database},
    )[0]
    assert Decimal(burned) / 1_000_000 * Decimal("0.01") == Decimal("26.47")
    credits = acme["lines"][-1]
    assert (credits["kind"], credits["quantity"], credits["part"]) == ("credits", "2647", 0)
    balance = acme["balance"]
    assert (balance["unit"], balance["currency"], balance["value"]) == ("credits", "USD", "0.01")
    assert (balance["start"], balance["end"]) == ("5317", "3570")
    shown = [(r["kind"], r["grant_id"], r["amount"], r["amount_currency"]) for r in balance["lines"]]
    assert shown == EXPECTED_BALANCE
    assert documents["capped"]["balance"] is None

    # stored: the priced lines, then the balance rows (never part of the total)
    lines = load_lines(client, database, acme["invoice_id"])
    assert [(line["kind"], line["charge_id"]) for line in lines[7:]] == [
        ("credits", "credits_applied"),
        *(("balance", kind) for kind, _, _, _ in EXPECTED_BALANCE),
    ]
    assert [line["amount"] for line in lines if line["kind"] == "balance"] == [
        "53.17",
        "-15",
        "25",
        "-1",
        "-26.47",
        "35.7",
    ]
    page = (tmp_path / f"{acme['invoice_id']}.html").read_text()
    assert "Prepaid balance (1 credits = 0.01 USD)" in page
    assert "top-up: grant topup-42 (invoice 42)" in page
    on_file = json.loads((tmp_path / f"{acme['invoice_id']}.json").read_text())
    assert on_file["balance"] == balance


def test_draft_reruns_follow_the_ledger_and_a_finalized_prepaid_invoice_never_changes(
    prepaid_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = prepaid_db
    catalog = load_catalog_text(CATALOG, "prepaid.yaml")
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    first = by_customer(bill(client, database, catalog, subscriptions, "2026-10", now=NOW))["acme"]
    assert len(load_lines(client, database, first["invoice_id"])) == 8 + 6
    # the plan made postpaid: no credits line, no balance rows left behind by the earlier draft
    postpaid = load_catalog_text(CATALOG.replace("    prepaid: {unit: credits}\n", ""), "postpaid.yaml")
    plain = by_customer(bill(client, database, postpaid, subscriptions, "2026-10", now=NOW))["acme"]
    assert (plain["total"], plain["balance"]) == ("37.07", None)
    assert len(load_lines(client, database, first["invoice_id"])) == 7
    # a grant made and voided in the period: two more rows; the end balance is unchanged
    bonus = [
        entry("grant:bonus", "2026-10-10 00:00:00", "grant", "bonus", "300"),
        entry("void:bonus", "2026-10-12 00:00:00", "void", "bonus", "-300"),
    ]
    insert_entries(client, database, bonus)
    second = by_customer(bill(client, database, catalog, subscriptions, "2026-10", now=NOW))["acme"]
    kinds = [r["kind"] for r in second["balance"]["lines"]]
    assert kinds == ["balance_start", "rolled_over", "top_up", "top_up", "voided", "expired", "burned", "balance_end"]
    assert (second["balance"]["end"], second["total"]) == ("3570", "10.60")
    assert len(load_lines(client, database, second["invoice_id"])) == 8 + 8
    # finalized: a later ledger entry, or a re-run, never changes it
    done = bill(client, database, catalog, subscriptions, "2026-10", now=NOW, finalize=True)
    assert done.results[0].action == "finalized"
    insert_entries(client, database, [entry("grant:late", "2026-10-20 00:00:00", "grant", "late", "999")])
    again = bill(client, database, catalog, subscriptions, "2026-10", now=NOW)
    assert again.results[0].action == "unchanged"
    assert again.results[0].document["balance"]["end"] == "3570"
    assert len(load_lines(client, database, second["invoice_id"])) == 8 + 8


LOAD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tollway.warehouse.connection import connect, insert_json_rows
    from tollway.warehouse.migrations import Migrator
    client = connect("chdb://" + sys.argv[1])
    Migrator(client, "tollway").migrate()
    insert_json_rows(client, "tollway", "usage", Path(sys.argv[2]).read_bytes())
    insert_json_rows(client, "tollway", "credit_ledger", Path(sys.argv[3]).read_bytes())
    """
)


def test_the_command_bills_a_prepaid_customer(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    engine = tmp_path / "chdb"
    (tmp_path / "usage.jsonl").write_bytes(b"".join(prepaid_rows()))
    (tmp_path / "ledger.jsonl").write_bytes(b"".join(e.json_row() for e in LEDGER))
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, str(engine), str(tmp_path / "usage.jsonl"), str(tmp_path / "ledger.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    result = tollway(cli_env(valkey_fresh, engine), tmp_path, "bill", "--period", "2026-10", "--plans", "catalog.yaml")
    assert result.code == 0, result.stderr
    (line,) = [line.split() for line in result.stdout.splitlines() if line.startswith("in_")]
    assert line[1:5] == ["acme", "2026-10", "10.60", "USD"]
    document = json.loads((tmp_path / line[-1]).with_suffix(".json").read_text())
    first = document["balance"]["lines"][0]
    assert (first["kind"], first["amount"]) == ("balance_start", "5317")


def test_late_usage_that_burned_adds_only_what_settles_at_invoice(
    prepaid_db: ChdbDatabase, valkey_fresh: ValkeyServer
) -> None:
    client, database = prepaid_db
    catalog = load_catalog_text(CATALOG, "prepaid.yaml")
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    october = by_customer(bill(client, database, catalog, subscriptions, "2026-10", now=NOW, finalize=True))
    assert october["acme"]["total"] == "10.60"
    # late rows for October: acme's 61st request (burned: calls 25 + extra 7 credits); and 'open'
    # (already at its cap) 5 more unchecked requests
    money = money_of("prepaid")
    sixty = [("read", 1)] * 50 + [("search", 5)] * 10
    price = burn(money, [*sixty, ("read", 1)])[0] - burn(money, sixty)[0]
    assert price == 32_000_000
    late = [row("late1", "2026-10-31 20:00:00.000", "acme", "prepaid", "read", price, "credits")]
    late += [row(f"late-open{n}", "2026-10-31 20:00:00.000", "open", "capped", "read", 0, "") for n in range(5)]
    insert_json_rows(client, database, "usage", b"".join(late))
    november = by_customer(bill(client, database, catalog, subscriptions, "2026-11", now=NOW))
    adjustments = {
        customer: [(line["charge_id"], line["amount"]) for line in document["lines"] if line["kind"] == "adjustment"]
        for customer, document in november.items()
    }
    # acme: only the volume charge (settled at invoice) grows: 61 x 0.01 - 60 x 0.01; open: still at its
    # cap (the adjustment claims the 5 requests for 0.00)
    assert adjustments == {"acme": [("late_usage", "0.01")], "capped": [], "open": [("late_usage", "0.00")]}
    assert november["acme"]["balance"]["start"] == "3538"  # 3570 - 32, the late burn


@pytest.fixture
def credits_cli(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, capsys: pytest.CaptureFixture[str]) -> Cli:
    client, database = chdb_db
    Migrator(client, database).migrate()
    subscribe(valkey_fresh, [Subscription.new("acme", "prepaid-usd", datetime(2026, 1, 1, tzinfo=UTC))])
    return Cli(valkey_fresh, chdb_db, capsys)


def test_the_balance_at_the_period_end_is_the_live_balance_reconcile_checks(credits_cli: Cli) -> None:
    cli = credits_cli
    cli.ok("grant", "acme", "10", "--unit", "USD", "--id", "a", "--reason", "top-up")
    cli.ok("grant", "acme", "5", "--unit", "USD", "--id", "b")
    burn_grant(cli.valkey, "acme", "a", 30 * 100)  # 30 requests at 0.0001 USD, as the limiter burns them
    insert_burns(cli.db, "acme", [100] * 30)  # type: ignore[arg-type]
    cli.ok("void", "acme", "b")
    assert cli("reconcile").code == 0
    assert cli.ok("balance", "acme").out.strip() == "acme: 9.997 USD"
    client, database = cli.db  # type: ignore[misc]
    catalog = load_catalog_text(CATALOG, "prepaid.yaml")
    subscriptions = subscribe(cli.valkey, [])
    (document,) = by_customer(bill(client, database, catalog, subscriptions, "2026-11", now=cli.clock.now())).values()
    balance = document["balance"]
    assert [(r["kind"], r["grant_id"], r["amount"]) for r in balance["lines"]] == [
        ("balance_start", None, "0"),
        ("top_up", "a", "10"),
        ("top_up", "b", "5"),
        ("voided", "b", "-5"),
        ("burned", None, "-0.003"),
        ("balance_end", None, "9.997"),
    ]
    # calls: 30 x 0.0001 = 0.003 -> 0.00, paid by the burns; `more` (not prepaid) is due: 30 x 0.001
    assert [(line["charge_id"], line["amount"]) for line in document["lines"]] == [
        ("calls", "0.00"),
        ("more", "0.03"),
        ("credits_applied", "0.00"),
    ]
    assert document["total"] == "0.03"
