"""Bad input to ``tollway bill`` writes nothing and is reported for what it is; one customer that
cannot be priced does not stop the others (issue 13, items 13 and 14)."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.test_bill import (
    CATALOG,
    EXPECTED,
    LOAD_USAGE,
    NOW,
    SUBSCRIPTIONS,
    USAGE,
    assert_one_line_failure,
    billed_db,  # noqa: F401 (a fixture)
    by_customer,
    catalog,
    cli_env,
    subscribe,
    tollway,
)
from tests.support.chdb_engine import ChdbDatabase
from tollway.billing.errors import BillingError
from tollway.billing.invoices import invoice_id
from tollway.cli.bill import bill
from tollway.harness.valkey import ValkeyServer
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.model import Subscription

pytestmark = pytest.mark.integration

COUNT_INVOICES = """
import sys
from tollway.warehouse.connection import connect
client = connect("chdb://" + sys.argv[1])
print(client.query("SELECT count() FROM tollway.invoices").result_rows[0][0])
"""


def python(*args: str) -> str:
    done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def cli(valkey_fresh: ValkeyServer, tmp_path: Path) -> dict[str, str]:
    engine = tmp_path / "chdb"
    (tmp_path / "usage.jsonl").write_bytes(b"".join(USAGE))
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    python(LOAD_USAGE, str(engine), str(tmp_path / "usage.jsonl"))
    subscribe(valkey_fresh, SUBSCRIPTIONS)
    return {**cli_env(valkey_fresh, engine), "TOLLWAY_CATALOG": "catalog.yaml"}


# --- item 13: output paths and periods ----------------------------------------------------------------


def test_an_out_that_is_a_file_is_refused_before_anything_is_written(cli: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    result = tollway(cli, tmp_path, "bill", "--period", "2026-10", "--out", "taken")
    assert_one_line_failure(result, "--out taken: is not a directory")
    assert "Redis" not in result.stderr
    under = tollway(cli, tmp_path, "bill", "--period", "2026-10", "--out", "taken/invoices")
    assert_one_line_failure(under, "--out taken/invoices: cannot be created: taken is not a directory")
    assert python(COUNT_INVOICES, str(tmp_path / "chdb")).strip() == "0"
    ok = tollway(cli, tmp_path, "bill", "--period", "2026-10", "--out", "fresh/invoices")
    assert ok.code == 0, ok.stderr
    assert len(list((tmp_path / "fresh" / "invoices").glob("*.html"))) == len(EXPECTED)


@pytest.mark.parametrize("period", ["٢٠٢٦-١١", "２０２６-１１", "2026-1١", "२०२६-10"])
def test_a_period_in_other_digits_is_refused(cli: dict[str, str], tmp_path: Path, period: str) -> None:
    assert_one_line_failure(tollway(cli, tmp_path, "bill", "--period", period), "--period", "YYYY-MM")
    assert python(COUNT_INVOICES, str(tmp_path / "chdb")).strip() == "0"


def test_an_invoice_file_that_is_a_directory_is_refused_before_anything_is_written(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
    tmp_path: Path,
) -> None:
    client, database = billed_db
    acme = invoice_id("acme", datetime(2026, 10, 1, tzinfo=UTC))
    (tmp_path / f"{acme}.html").mkdir()
    with pytest.raises(BillingError, match=f"{acme}.html exists and is not a regular file"):
        bill(client, database, catalog(), subscribe(valkey_fresh, SUBSCRIPTIONS), "2026-10", now=NOW, out_dir=tmp_path)
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows == [(0,)]


# --- item 14: currencies, and one bad plan does not block the others ---------------------------------

CLF = CATALOG.replace("currency: USD", "currency: CLF")


@pytest.mark.parametrize("currency", ["CLF", "XAU", "ABC", "UYW", "XXX"])
def test_a_catalog_priced_in_a_currency_tollway_cannot_round_is_invalid(currency: str) -> None:
    with pytest.raises(CatalogError) as raised:
        load_catalog_text(CATALOG.replace("currency: USD", f"currency: {currency}"), "plans.yaml")
    assert f"plans.yaml:13:17: plans.metered.pricing.currency: Tollway cannot bill in {currency}" in str(raised.value)


def test_plans_validate_and_subscriptions_set_refuse_it(cli: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "clf.yaml").write_text(CLF)
    validated = tollway(cli, tmp_path, "plans", "validate", "clf.yaml")
    assert validated.code != 0
    assert "clf.yaml:13:17" in validated.stderr
    assert "CLF" in validated.stderr
    subscribed = tollway(
        cli, tmp_path, "subscriptions", "set", "--customer", "x", "--plan", "metered", "--catalog", "clf.yaml"
    )
    assert subscribed.code != 0
    assert "CLF" in subscribed.stderr


def test_a_plan_in_an_unroundable_currency_fails_its_customers_only(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    """A catalog that slipped past validation (built in code): the CLF plan's customer is reported,
    everyone else is billed."""
    client, database = billed_db
    usd = catalog()
    metered = usd.plans["metered"]
    assert metered.pricing is not None
    odd = metered.model_copy(update={"pricing": metered.pricing.model_copy(update={"currency": "CLF"})})
    both = usd.model_copy(update={"plans": {**usd.plans, "odd": odd}})
    subscriptions = subscribe(
        valkey_fresh, [*SUBSCRIPTIONS, Subscription.new("uf", "odd", datetime(2026, 1, 1, tzinfo=UTC))]
    )
    report = bill(client, database, both, subscriptions, "2026-10", now=NOW)
    assert {c: d["total"] for c, d in by_customer(report).items()} == {c: e[0] for c, e in EXPECTED.items()}
    [failure] = report.failures
    assert failure.customer_id == "uf"
    assert "unknown currency 'CLF'" in str(failure)
