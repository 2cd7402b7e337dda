"""Invoice numbers, issue and due dates, seller and buyer on finalized invoices (docs/billing.md,
"Numbers, issue and due dates"), with the billing tests' dataset on the embedded ClickHouse and a real
Valkey: numbered only when finalized, in finalization order, never changed by a re-run, no gap after a
run killed between numbering and writing, none when two finalizations race, and the command's bad
seller configuration."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from tests.integration.test_bill import (  # the billing tests' dataset and helpers
    CATALOG,
    NOW,
    SUBSCRIPTIONS,
    billed_db,  # noqa: F401 - a fixture
    catalog,
    command_setup,
    subscribe,
    tollway,
)
from tests.support.chdb_engine import ChdbDatabase
from tollway.billing.documents import InvoiceFacts
from tollway.billing.finalization import NumberingUnavailable
from tollway.billing.invoice_store import load_current
from tollway.billing.invoices import Invoice
from tollway.billing.numbering import numbers_assigned
from tollway.billing.seller import Seller, load_seller
from tollway.cli.bill import BillReport, FactsSource, bill, numbering, progressive
from tollway.customers import BillingDetails, CustomerRecord, RedisCustomerStore
from tollway.harness.ports import free_ports
from tollway.harness.valkey import ValkeyServer
from tollway.parties import Party
from tollway.plans.loader import load_catalog_text
from tollway.settings import Settings
from tollway.subscriptions.model import Subscription
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

SELLER = Seller(
    Party("Tollway Test Ltd", ("1 Test Street", "London EC1A 1AA"), "GB", "GB123456789", "billing@tollway.test"),
    timezone="Pacific/Auckland",  # NOW (2026-11-25 12:00Z) is 2026-11-26 01:00 there
    payment_terms_days=30,
    series="INV",
)
ORDER = ["acme", "anniv", "kiwi", "late"]  # the store lists them by id: the order they are finalized in


def facts_source(valkey: ValkeyServer, seller: Seller = SELLER) -> FactsSource:
    return numbering(Settings(redis_url=valkey.url), seller)


def numbers(valkey: ValkeyServer, year: int, series: str = "INV") -> dict[str, int]:
    async def go() -> dict[str, int]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await numbers_assigned(redis, prefix="tw:", series=series, year=year)
        finally:
            await redis.aclose()

    return asyncio.run(go())


def put_customer(valkey: ValkeyServer, record: CustomerRecord) -> None:
    async def go() -> None:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            await RedisCustomerStore(redis).put(record)
        finally:
            await redis.aclose()

    asyncio.run(go())


def by_customer(report: BillReport) -> dict[str, dict[str, Any]]:
    return {r.document["customer_id"]: r.document for r in report.results}


FACT_KEYS = {"number", "issued_on", "due_on", "payment_terms_days", "seller", "buyer"}


def test_finalized_invoices_get_numbers_in_order_dates_terms_seller_and_buyer(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
    tmp_path: Path,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    put_customer(
        valkey_fresh,
        CustomerRecord(
            "acme",
            "Acme",
            "ops@acme.test",
            NOW,
            BillingDetails("Acme Corporation Ltd", ("1 Road Runner Way",), "US", "US-1", "ap@acme.test", 14),
        ),
    )
    put_customer(valkey_fresh, CustomerRecord("kiwi", "Kiwi Ltd", "ops@kiwi.test", NOW))
    facts = facts_source(valkey_fresh)

    drafts = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, facts=facts, out_dir=tmp_path)
    assert all(FACT_KEYS.isdisjoint(r.document) for r in drafts.results)  # drafts: never numbered
    assert numbers(valkey_fresh, 2026) == {}

    report = bill(
        client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True, facts=facts, out_dir=tmp_path
    )
    assert [r.document["customer_id"] for r in report.results] == ORDER
    documents = by_customer(report)
    assert [documents[c]["number"] for c in ORDER] == [f"INV-2026-00000{i}" for i in (1, 2, 3, 4)]
    seller = {
        "name": "Tollway Test Ltd",
        "address": ["1 Test Street", "London EC1A 1AA"],
        "country": "GB",
        "tax_id": "GB123456789",
        "email": "billing@tollway.test",
    }
    assert {k: documents["acme"][k] for k in FACT_KEYS} == {
        "number": "INV-2026-000001",
        "issued_on": "2026-11-26",  # in the seller's time zone
        "due_on": "2026-12-10",  # the customer's 14 days
        "payment_terms_days": 14,
        "seller": seller,
        "buyer": {
            "name": "Acme Corporation Ltd",
            "address": ["1 Road Runner Way"],
            "country": "US",
            "tax_id": "US-1",
            "email": "ap@acme.test",
        },
    }
    assert documents["kiwi"]["buyer"] == {"name": "Kiwi Ltd", "email": "ops@kiwi.test"}  # record, no details
    assert documents["late"]["buyer"] == {"name": "late"}  # no record: the customer id
    assert (documents["kiwi"]["due_on"], documents["kiwi"]["payment_terms_days"]) == ("2026-12-26", 30)
    # stored: the document, and the columns of migration 0010
    stored = load_current(client, database, [d["invoice_id"] for d in documents.values()])
    assert {s.document["customer_id"]: s.document for s in stored.values()} == documents
    rows = client.query(
        f"SELECT customer_id, number, toString(issued_on), toString(due_on) FROM {database}.invoices FINAL "
        "ORDER BY number"
    ).result_rows
    assert [tuple(r) for r in rows] == [
        ("acme", "INV-2026-000001", "2026-11-26", "2026-12-10"),
        ("anniv", "INV-2026-000002", "2026-11-26", "2026-12-26"),
        ("kiwi", "INV-2026-000003", "2026-11-26", "2026-12-26"),
        ("late", "INV-2026-000004", "2026-11-26", "2026-12-26"),
    ]
    assert json.loads((tmp_path / f"{documents['acme']['invoice_id']}.json").read_text()) == documents["acme"]

    # a re-run (draft or --finalize, even a year later) leaves them as they are, numbers included
    later = datetime(2027, 3, 1, tzinfo=UTC)
    for options in ({}, {"finalize": True}):
        again = bill(client, database, catalog(), subscriptions, "2026-10", now=later, facts=facts, **options)
        assert {r.action for r in again.results} == {"unchanged"}
        assert by_customer(again) == documents
    assert numbers(valkey_fresh, 2026) == {documents[c]["invoice_id"]: i for i, c in enumerate(ORDER, start=1)}
    assert numbers(valkey_fresh, 2027) == {}

    # the next month's invoices continue the sequence, in the year of their issue date
    december = datetime(2026, 12, 2, 6, tzinfo=UTC)
    november = bill(client, database, catalog(), subscriptions, "2026-11", now=december, finalize=True, facts=facts)
    finalized = [(r.document["customer_id"], r.document["number"]) for r in november.results]
    assert finalized == [
        ("acme", "INV-2026-000005"),
        ("future", "INV-2026-000006"),
        ("kiwi", "INV-2026-000007"),
        ("late", "INV-2026-000008"),
    ]  # anniv's November period has not ended: not finalized, not numbered
    assert [f.customer_id for f in november.failures] == ["anniv"]


def test_old_rows_and_drafts_read_with_empty_numbers(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    bill(client, database, catalog(), subscriptions, "2026-10", now=NOW)
    rows = client.query(f"SELECT number, issued_on, due_on FROM {database}.invoices FINAL").result_rows
    assert {tuple(r) for r in rows} == {("", None, None)}
    # finalizing without facts (the Python API as before): finalized as before, unnumbered
    report = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True)
    assert all(FACT_KEYS.isdisjoint(r.document) for r in report.results)


class Killed(BaseException):
    """The process dies here (a BaseException: nothing catches it)."""


def test_a_run_killed_after_numbering_leaves_no_gap(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    """Numbers (and issue dates) are kept per invoice id in Redis before ClickHouse is written: a run
    killed in between leaves them reserved, and the re-run — on another day, even in another year —
    uses them. No number is skipped, none is given twice."""
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    real = facts_source(valkey_fresh)
    given: dict[str, InvoiceFacts] = {}

    def killed_after_numbering(invoices: Sequence[Invoice], now: datetime) -> Mapping[str, InvoiceFacts]:
        given.update(real(invoices, now))
        raise Killed

    with pytest.raises(Killed):
        bill(
            client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True, facts=killed_after_numbering
        )
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows[0][0] == 0
    assert [given[i].number for i in given] == [f"INV-2026-00000{i}" for i in (1, 2, 3, 4)]

    next_year = datetime(2027, 1, 4, tzinfo=UTC)
    report = bill(client, database, catalog(), subscriptions, "2026-10", now=next_year, finalize=True, facts=real)
    documents = {r.invoice_id: r.document for r in report.results}
    assert {i: (d["number"], d["issued_on"], d["due_on"]) for i, d in documents.items()} == {
        i: (f.number, "2026-11-26", "2026-12-26") for i, f in given.items()
    }
    assert sorted(numbers(valkey_fresh, 2026).values()) == [1, 2, 3, 4]
    assert numbers(valkey_fresh, 2027) == {}


def test_two_finalizations_racing_on_one_warehouse_number_without_gap(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    """Two finalizations of October at once, in two threads, against the same ClickHouse database, each
    with its own Redis client: one bills every customer in order, the other the same customers in reverse
    order. A barrier makes both number at the same moment. Every invoice gets one number, the same in
    both runs' results and in what is stored, and the numbers are exactly 1..4."""
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    barrier = threading.Barrier(2, timeout=60)

    def racing(source: FactsSource) -> FactsSource:
        def facts(invoices: Sequence[Invoice], now: datetime) -> Mapping[str, InvoiceFacts]:
            barrier.wait()
            return source(invoices, now)

        return facts

    reports: dict[str, BillReport] = {}
    errors: list[BaseException] = []

    def run(name: str, order: Sequence[Any]) -> None:
        try:
            reports[name] = bill(
                client,
                database,
                catalog(),
                order,
                "2026-10",
                now=NOW,
                finalize=True,
                facts=racing(facts_source(valkey_fresh)),
            )
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=("forward", subscriptions)),
        threading.Thread(target=run, args=("backward", list(reversed(subscriptions)))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    forward = {r.invoice_id: r.document.get("number") for r in reports["forward"].results}
    backward = {r.invoice_id: r.document.get("number") for r in reports["backward"].results}
    assert forward == backward
    assert sorted(forward.values()) == [f"INV-2026-00000{i}" for i in (1, 2, 3, 4)]
    stored = load_current(client, database, list(forward))
    assert {i: s.document["number"] for i, s in stored.items()} == forward
    assert {s.status for s in stored.values()} == {"finalized"}
    assert sorted(numbers(valkey_fresh, 2026).values()) == [1, 2, 3, 4]


def test_interim_invoices_are_numbered_when_issued(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    client, database = billed_db
    text = CATALOG.replace(
        "      interval: month\n", '      interval: month\n      progressive_billing: {threshold: "1.00"}\n'
    )
    progressive_catalog = catalog(text)
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    october_10 = datetime(2026, 10, 10, 12, tzinfo=UTC)
    report = progressive(
        client,
        database,
        progressive_catalog,
        subscriptions,
        "2026-10",
        now=october_10,
        facts=facts_source(valkey_fresh),
    )
    (issued,) = [r.document for r in report.results if r.action == "finalized"]
    assert (issued["number"], issued["issued_on"], issued["due_on"]) == ("INV-2026-000001", "2026-10-11", "2026-11-10")
    again = progressive(
        client,
        database,
        progressive_catalog,
        subscriptions,
        "2026-10",
        now=october_10,
        facts=facts_source(valkey_fresh),
    )
    assert [r.document["number"] for r in again.results] == ["INV-2026-000001"]


# --- the command ----------------------------------------------------------------------------------

COUNT_INVOICES = (
    "import sys; from tollway.warehouse.connection import connect; "
    "c = connect('chdb://' + sys.argv[1]); "
    "print(c.query('SELECT count() FROM tollway.invoices').result_rows[0][0])"
)


def invoice_rows(engine: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", COUNT_INVOICES, str(engine)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def without_seller(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("TOLLWAY_SELLER_")}


def test_the_command_refuses_to_finalize_without_a_valid_seller(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    env = without_seller(command_setup(valkey_fresh, tmp_path))
    base = ("bill", "--period", "2026-10", "--plans", "catalog.yaml", "--out", "out")
    for argv in (("--finalize",), ("--progressive",)):
        missing = tollway(env, tmp_path, *base, *argv)
        assert missing.code == 2, missing
        (line,) = missing.stderr.strip().splitlines()
        assert "TOLLWAY_SELLER_NAME is not set" in line
    bad = {
        **env,
        "TOLLWAY_SELLER_NAME": "Tollway Test Ltd",
        "TOLLWAY_SELLER_COUNTRY": "United Kingdom",
        "TOLLWAY_SELLER_EMAIL": "nobody",
        "TOLLWAY_SELLER_TIMEZONE": "Europe/Atlantis",
        "TOLLWAY_SELLER_PAYMENT_TERMS_DAYS": "-5",
        "TOLLWAY_SELLER_NUMBER_PREFIX": "INV-2026",
        "TOLLWAY_SELLER_ADDRESS": '["unclosed"',
    }
    invalid = tollway(bad, tmp_path, *base, "--finalize")
    assert invalid.code == 2, invalid
    (line,) = invalid.stderr.strip().splitlines()
    for name in ("COUNTRY", "EMAIL", "TIMEZONE", "PAYMENT_TERMS_DAYS", "NUMBER_PREFIX", "ADDRESS"):
        assert f"TOLLWAY_SELLER_{name}:" in line, (name, line)  # every error at once
    # nothing was written: no invoice row, no file, no number
    assert invoice_rows(tmp_path / "chdb") == 0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert numbers(valkey_fresh, 2026) == {}
    # a draft run needs no seller
    drafts = tollway(env, tmp_path, *base)
    assert drafts.code == 0, drafts.stderr
    assert invoice_rows(tmp_path / "chdb") == 4


def test_two_finalizing_processes_at_once_share_one_sequence(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    """Two real ``tollway bill --finalize`` processes started at once on the same Redis. The embedded
    ClickHouse opens a path in one process only, so each has its own copy of the dataset (the same
    invoice ids); they race on the numbering only (the one-warehouse race is the threads test above).
    Each invoice gets one number, the same in both, and the numbers are exactly 1..4."""
    envs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        envs.append(command_setup(valkey_fresh, tmp_path / name))
    argv = [sys.executable, "-m", "tollway", "bill", "--period", "2026-10", "--plans", "catalog.yaml", "--finalize"]
    processes = [
        subprocess.Popen(argv, env=env, cwd=tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for env, name in zip(envs, ("one", "two"), strict=True)
    ]
    outputs = [process.communicate(timeout=180) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    found = []
    for name in ("one", "two"):
        documents = [json.loads(p.read_text()) for p in sorted((tmp_path / name / "invoices").glob("*.json"))]
        found.append({d["invoice_id"]: d["number"] for d in documents})
    assert found[0] == found[1]
    assert sorted(found[0].values()) == [f"INV-2026-00000{i}" for i in (1, 2, 3, 4)]
    for out, _ in outputs:  # each line names the number and the due date
        assert all(f"{n} due " in out for n in found[0].values()), out
    assert sorted(numbers(valkey_fresh, 2026).values()) == [1, 2, 3, 4]


def test_a_redis_that_lost_the_sequence_continues_from_the_stored_numbers(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    """Redis emptied (or restored from an older backup) after October was finalized: November's invoices
    continue from the highest number ClickHouse holds, never reusing one."""
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    facts = numbering(Settings(redis_url=valkey_fresh.url), SELLER, (client, database))
    october = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True, facts=facts)
    assert sorted(r.document["number"] for r in october.results) == [f"INV-2026-00000{i}" for i in (1, 2, 3, 4)]

    _flushall(valkey_fresh)
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    december = datetime(2026, 12, 2, 6, tzinfo=UTC)
    november = bill(client, database, catalog(), subscriptions, "2026-11", now=december, finalize=True, facts=facts)
    assert [r.document["number"] for r in november.results] == [f"INV-2026-00000{i}" for i in (5, 6, 7, 8)]


def _flushall(valkey: ValkeyServer) -> None:
    client = redis.Redis(host=valkey.host, port=valkey.port)
    try:
        client.flushall()
    finally:
        client.close()


# --- docs/billing.md's worked example ------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "billing.md"


def numbers_example() -> tuple[str, dict[str, str], dict[str, Any], list[list[str]], dict[str, Any]]:
    """The section's catalog, seller settings, acme's billing details, table rows and document excerpt."""
    section = DOC.read_text().split("<!-- numbers-example -->", 1)[1].split("\n## ", 1)[0]
    catalog_text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    shell = section.split("```sh\n", 1)[1].split("```", 1)[0]
    env = {}
    for line in shell.splitlines():
        name, value = line.split("=", 1)
        (env[name],) = shlex.split(value)
    patch, excerpt = (json.loads(block.split("```", 1)[0]) for block in section.split("```json\n")[1:3])
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines() if line.startswith("|")
    ]
    return catalog_text, env, patch, rows[2:], excerpt


def test_the_worked_example_in_billing_md(chdb_db: ChdbDatabase, valkey_fresh: ValkeyServer) -> None:
    catalog_text, env, patch, rows, excerpt = numbers_example()
    client, database = chdb_db
    Migrator(client, database).migrate()
    plans = load_catalog_text(catalog_text, "numbers.yaml")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    subscriptions = subscribe(valkey_fresh, [Subscription.new(c, "basic", start) for c in ("acme", "bolt")])
    details = patch["billing"]
    billing = BillingDetails(**{**details, "address": tuple(details["address"])})
    put_customer(valkey_fresh, CustomerRecord("acme", None, None, start, billing))
    with mock.patch.dict(os.environ, env):
        seller = load_seller()
    facts = numbering(Settings(redis_url=valkey_fresh.url), seller, (client, database))

    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for when, command, customer, number, issued_on, due_on in rows:
        if (when, command) not in runs:
            argv = command.strip("`").split()
            now = datetime.fromisoformat(when).replace(tzinfo=UTC)
            report = bill(
                client, database, plans, subscriptions, argv[2], now=now, finalize="--finalize" in argv, facts=facts
            )
            runs[(when, command)] = {r.document["customer_id"]: r for r in report.results}
        result = runs[(when, command)][customer]
        document = result.document
        if number == "— (draft)":
            assert (result.action, FACT_KEYS & set(document)) == ("created", set()), (when, customer)
            continue
        expected_action = "unchanged" if number.endswith("(unchanged)") else "finalized"
        assert result.action == expected_action, (when, customer)
        got = (document["number"], document["issued_on"], document["due_on"])
        assert got == (number.removesuffix(" (unchanged)"), issued_on, due_on), (when, customer)
    october = runs[("2026-11-02 06:30", "`bill --period 2026-10 --finalize`")]
    assert {k: october["acme"].document[k] for k in excerpt} == excerpt
    assert (october["bolt"].document["buyer"], october["bolt"].document["payment_terms_days"]) == ({"name": "bolt"}, 30)


def test_redis_unreachable_while_numbering_writes_nothing(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS)
    (port,) = free_ports(1)
    nowhere = numbering(Settings(redis_url=f"redis://127.0.0.1:{port}/0"), SELLER, (client, database))
    with pytest.raises(NumberingUnavailable, match="cannot number the invoices: Redis"):
        bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, finalize=True, facts=nowhere)
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows[0][0] == 0
