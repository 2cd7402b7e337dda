"""Customers on a plan without pricing (a free plan, as the example catalog's ``free``): ``tollway bill``
has nothing to bill for them (no invoice, listed as such, exit status 0: the monthly CronJob must not
fail on them), and a customer who changed between a free and a priced plan in the period is billed for
the priced part only, prorated like any plan change. Likewise ``--progressive``."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.test_bill import CATALOG, LOAD_USAGE, cli_env, subscribe, tollway
from tests.integration.test_bill_progressive import CATALOG as PROGRESSIVE
from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import usage_row
from tollway.cli.bill import bill, progressive
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.model import Subscription
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

FREE = "  free:\n    features: []\n"
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
OCTOBER_16 = datetime(2026, 10, 16, tzinfo=UTC)


def requests(customer: str, *days: int, count: int = 1) -> bytes:
    """``count`` requests of ``customer`` on each October ``day``."""
    return b"".join(
        usage_row(f"{customer}-{day}-{n}", f"2026-10-{day:02d} 10:00:00.000", customer, {"requests": 1})
        for day in days
        for n in range(count)
    )


@pytest.fixture
def db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    return chdb_db


def test_bill_has_nothing_to_bill_for_a_free_customer_and_exits_0(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    engine, rows = tmp_path / "chdb", tmp_path / "usage.jsonl"
    rows.write_bytes(requests("acme", 3) + requests("gratis", 4, 5))
    subprocess.run([sys.executable, "-c", LOAD_USAGE, str(engine), str(rows)], check=True, timeout=120)
    (tmp_path / "plans.yaml").write_text(CATALOG + FREE)
    subscribe(valkey_fresh, [Subscription.new("acme", "metered", JANUARY), Subscription.new("gratis", "free", JANUARY)])
    env = {**cli_env(valkey_fresh, engine), "TOLLWAY_CATALOG": "plans.yaml"}
    (tmp_path / "out").mkdir()

    done = tollway(env, tmp_path, "bill", "--period", "2026-10", "--out", "out")

    # acme: 10.00 + 1 × 0.50 = 10.50; gratis: no invoice, no failure.
    assert (done.code, done.stderr) == (0, ""), done
    invoice, skipped = done.stdout.splitlines()
    assert invoice.split()[1:5] == ["acme", "2026-10", "10.50", "USD"]
    assert (
        skipped == "nothing to bill for 2026-10 (no period started in the month, or its plans have no pricing): gratis"
    )
    written = [path.name for path in (tmp_path / "out").iterdir()]
    assert len(written) == 3, written  # acme's JSON, HTML and PDF
    assert not [name for name in written if "gratis" in name]


def test_a_change_between_a_free_and_a_priced_plan_bills_the_priced_part(db: ChdbDatabase) -> None:
    """October 2026 has 31 days; ``metered`` is 10.00 a month (flat, prorated) + 0.50 a request (+ egress,
    none here); a request on a free part is not billed.

    - up: ``free`` since January, ``metered`` from 16 October 00:00 (16 of 31 days); requests on the 10th
      (free) and the 20th: 10.00 × 16/31 = 5.161290… → 5.16, + 1 × 0.50 = **5.66**
    - down: ``metered`` since January, ``free`` from 16 October (15 of 31 days); requests on the 10th and
      the 20th (free): 10.00 × 15/31 = 4.838709… → 4.84, + 1 × 0.50 = **5.34**
    - before: ``free`` in 2025, ``metered`` since January: October whole, no request: **10.00**
    - gratis: ``free`` all along: nothing to bill
    """
    client, database = db
    insert_json_rows(client, database, "usage", requests("up", 10, 20) + requests("down", 10, 20))
    subscriptions = [
        Subscription.new("up", "free", JANUARY).changed_to("metered", OCTOBER_16),
        Subscription.new("down", "metered", JANUARY).changed_to("free", OCTOBER_16),
        Subscription.new("before", "free", datetime(2025, 1, 1, tzinfo=UTC)).changed_to("metered", JANUARY),
        Subscription.new("gratis", "free", JANUARY),
    ]
    catalog = load_catalog_text(CATALOG + FREE, "plans.yaml")

    report = bill(client, database, catalog, subscriptions, "2026-10", now=datetime(2026, 11, 2, tzinfo=UTC))

    assert (report.failures, report.skipped) == ((), ("gratis",))
    documents = {r.document["customer_id"]: r.document for r in report.results}
    assert {customer: d["total"] for customer, d in documents.items()} == {
        "before": "10.00",
        "down": "5.34",
        "up": "5.66",
    }
    assert [p["plan"] for p in documents["up"]["plans"]] == ["metered"]
    assert [p["plan"] for p in documents["down"]["plans"]] == ["metered"]
    lines = {(line["charge_id"], line["amount"]) for line in documents["up"]["lines"]}
    assert {("platform", "5.16"), ("calls", "0.50")} <= lines


def test_progressive_bills_the_priced_part_of_a_period_that_began_free(db: ChdbDatabase) -> None:
    """The progressive example's ``pro`` (10.00 a month prorated + 0.50 a request, threshold 20.00, the
    minimum only at the period's end) from 5 October 00:00 (27 of 31 days), ``free`` before; 40 requests
    on the 9th. A pass on 10 October at 12:00: 10.00 × 27/31 = 8.709677… → 8.71, + 40 × 0.50 = 20.00:
    28.71 ≥ 20.00, interim invoice 1 of **28.71**. A customer on ``free`` all along is not billed either."""
    client, database = db
    insert_json_rows(client, database, "usage", requests("up", 9, count=40) + requests("gratis", 9))
    subscriptions = [
        Subscription.new("up", "free", JANUARY).changed_to("pro", datetime(2026, 10, 5, tzinfo=UTC)),
        Subscription.new("gratis", "free", JANUARY),
    ]
    catalog = load_catalog_text(PROGRESSIVE + FREE, "progressive.yaml")

    report = progressive(
        client, database, catalog, subscriptions, "2026-10", now=datetime(2026, 10, 10, 12, tzinfo=UTC)
    )

    assert report.failures == ()
    (result,) = report.results
    assert (result.action, result.document["customer_id"], result.document["total"]) == ("finalized", "up", "28.71")
    assert result.document["interim"]["sequence"] == 1
