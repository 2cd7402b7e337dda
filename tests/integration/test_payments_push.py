"""``tollway payments push`` end to end: finalized invoices in the embedded ClickHouse, the push state in a
real Valkey, the official ``stripe`` SDK talking to the fake Stripe server on loopback
(``tests/support/fake_stripe.py``). Two invoices pushed once; a 4xx for one reported while the other is
pushed; lost state rebuilt from Stripe; a ``kill -9`` of the command at each step of a push, then a
re-run: every Stripe object exists once; a missing or wrong key: a clear error, nothing sent or recorded.

The documents are built by hand in the shape ``Invoice.as_dict()`` stores, with the keys finalization
adds (``number``, ``issued_on``, ``due_on``, ``buyer``: docs/payments.md) on one of them.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis

from tests.support.chdb_engine import ChdbDatabase
from tests.support.fake_stripe import Failure, FakeStripe
from tests.support.tollway_cli import CliResult
from tollway.harness.valkey import ValkeyServer
from tollway.payments.push_settings import StripePushSettings
from tollway.payments.push_state import PushState
from tollway.payments.stripe_push import (
    PushResult,
    StripeKeyRefused,
    StripePusher,
    StripeUnreachable,
    finalized_documents,
    stripe_client,
)
from tollway.warehouse.connection import insert_json_rows
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

ACME = "in_acme_2026_10"
KIWI = "in_kiwi_2026_10"


def document(
    invoice_id: str, customer: str, lines: Sequence[tuple[str, str, str]], *, status: str = "finalized", **extra: Any
) -> dict[str, Any]:
    """An invoice document as stored: ``lines`` are (kind, description, amount)."""
    total = sum((Decimal(amount) for _, _, amount in lines), Decimal(0))
    return {
        "invoice_id": invoice_id,
        "customer_id": customer,
        "status": status,
        "plan": "metered",
        "currency": "USD",
        "period": {
            "month": "2026-10",
            "start": "2026-10-01T00:00:00Z",
            "end": "2026-11-01T00:00:00Z",
            "timezone": "UTC",
            "local_start": "2026-10-01T00:00:00+00:00",
            "local_end": "2026-11-01T00:00:00+00:00",
            "fraction": "1",
            "index": 0,
        },
        "plans": [],
        "lines": [
            {
                "kind": kind,
                "charge_id": description.lower().split()[0],
                "discount_id": None,
                "meter": None,
                "description": description,
                "quantity": None,
                "amount": amount,
                "timing": "in_arrears",
                "breakdown": [],
                "quantity_source": None,
                "part": 0,
            }
            for kind, description, amount in lines
        ],
        "total": f"{total:.2f}",
        "balance": None,
        "generated_at": "2026-11-02T00:00:00Z",
        "finalized_at": "2026-11-02T00:00:00Z" if status == "finalized" else None,
        **extra,
    }


DOCUMENTS = [
    document(
        ACME,
        "acme",
        [("charge", "Platform", "10.00"), ("charge", "Calls (4 requests)", "2.00"), ("discount", "Partner", "-1.80")],
        number="INV-2026-000001",
        issued_on="2026-11-02",
        due_on="2026-12-02",
        payment_terms_days=30,
        buyer={"name": "Acme Corp", "email": "billing@acme.example", "address": ["1 Main St"], "country": "US"},
    ),
    document(KIWI, "kiwi", [("charge", "Platform", "10.00"), ("charge", "Egress", "0.10")]),
]
DRAFT = document("in_late_2026_10", "late", [("charge", "Platform", "5.16")], status="draft")
LINES = {ACME: 3, KIWI: 2}


def invoice_row(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "invoice_id": doc["invoice_id"],
        "customer_id": doc["customer_id"],
        "plan_id": doc["plan"],
        "period": doc["period"]["month"],
        "period_start": "2026-10-01 00:00:00",
        "period_end": "2026-11-01 00:00:00",
        "timezone": "UTC",
        "currency": doc["currency"],
        "status": doc["status"],
        "total": doc["total"],
        "generated_at": "2026-11-02 00:00:00",
        "finalized_at": "2026-11-02 00:00:00" if doc["status"] == "finalized" else None,
        "document": json.dumps(doc, sort_keys=True),
        "version": 1,
    }


def rows(documents: Sequence[dict[str, Any]]) -> bytes:
    return b"".join((json.dumps(invoice_row(doc)) + "\n").encode() for doc in documents)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def invoices_db(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "invoices", rows([*DOCUMENTS, DRAFT]))
    return chdb_db


def push(
    valkey: ValkeyServer, fake: FakeStripe, documents: Sequence[dict[str, Any]], key: str | None = None
) -> list[PushResult]:
    settings = StripePushSettings(api_key=SecretStr(key or fake.api_key), api_base=fake.url, max_network_retries=0)
    return asyncio.run(push_with(settings, valkey, documents))


async def push_with(
    settings: StripePushSettings, valkey: ValkeyServer, documents: Sequence[dict[str, Any]]
) -> list[PushResult]:
    client = AsyncRedis.from_url(valkey.url, decode_responses=True)
    try:
        pusher = StripePusher(stripe_client(settings), PushState(client, "tw:"), settings.options())
        return await pusher.push_all(documents)
    finally:
        await client.aclose()


def stripe_state(valkey: ValkeyServer) -> dict[str, Any]:
    client = redis.Redis(host=valkey.host, port=valkey.port, decode_responses=True)
    try:
        found: dict[str, Any] = {}
        for key in sorted(client.scan_iter("tw:stripe:*")):
            found[key] = client.get(key) if client.type(key) == "string" else client.hgetall(key)
        return found
    finally:
        client.close()


def assert_each_object_once(fake: FakeStripe, invoices: dict[str, int]) -> None:
    """One Stripe customer per Tollway customer, one invoice per Tollway invoice (finalized), one item per
    line; no create executed twice (a retry is replayed, never executed again)."""
    customers = Counter(c["metadata"]["tollway_customer_id"] for c in fake.of("customer"))
    stripe_invoices = fake.of("invoice")
    assert Counter(i["metadata"]["tollway_invoice_id"] for i in stripe_invoices) == dict.fromkeys(invoices, 1)
    assert customers == dict.fromkeys({i["metadata"]["tollway_customer_id"] for i in stripe_invoices}, 1)
    assert {i["status"] for i in stripe_invoices} == {"open"}
    items = Counter(
        (i["metadata"]["tollway_invoice_id"], i["metadata"]["tollway_line"]) for i in fake.of("invoiceitem")
    )
    assert items == {(invoice, str(n)): 1 for invoice, count in invoices.items() for n in range(1, count + 1)}
    executed = Counter(r.idempotency_key for r in fake.executed())
    assert all(count == 1 for count in executed.values()), executed
    mismatched = [r for r in fake.requests if r.error_type == "idempotency_error"]
    assert not mismatched, "a retry sends the same parameters under the same key"


# --- in process ----------------------------------------------------------------------------------


def test_two_finalized_invoices_are_pushed_once_and_a_rerun_sends_nothing(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    client, database = invoices_db
    documents = finalized_documents(client, database)
    assert [d["invoice_id"] for d in documents] == [ACME, KIWI]  # the draft is not pushed
    assert [d["invoice_id"] for d in finalized_documents(client, database, customer_id="kiwi")] == [KIWI]
    assert finalized_documents(client, database, period="2026-09") == []

    results = push(valkey_fresh, fake, documents)

    assert [(r.invoice_id, r.outcome) for r in results] == [(ACME, "pushed"), (KIWI, "pushed")]
    assert_each_object_once(fake, LINES)
    acme = next(i for i in fake.of("invoice") if i["metadata"]["tollway_invoice_id"] == ACME)
    assert acme["metadata"] == {"tollway_invoice_id": ACME, "tollway_customer_id": "acme"}
    assert (acme["number"], acme["total"], acme["collection_method"]) == ("INV-2026-000001", 1020, "send_invoice")
    assert acme["due_date"] == 1796212800  # 2026-12-02 12:00 UTC
    assert acme["auto_advance"] is True  # set at finalization; created with False
    customer = next(c for c in fake.of("customer") if c["id"] == acme["customer"])
    assert (customer["name"], customer["email"]) == ("Acme Corp", "billing@acme.example")
    amounts = [i["amount"] for i in fake.of("invoiceitem") if i["invoice"] == acme["id"]]
    assert amounts == [1000, 200, -180]
    kiwi = next(i for i in fake.of("invoice") if i["metadata"]["tollway_invoice_id"] == KIWI)
    assert (kiwi["number"], kiwi["days_until_due"]) == ("FAKE-0001", 30)  # no number, no due date: Stripe's
    state = stripe_state(valkey_fresh)
    assert state["tw:stripe:customer:{acme}"] == acme["customer"]
    assert state[f"tw:stripe:invoice:{{acme}}:{ACME}"]["invoice"] == acme["id"]
    assert state[f"tw:stripe:invoice:{{acme}}:{ACME}"]["status"] == "finalized"
    assert len([k for k in state[f"tw:stripe:invoice:{{acme}}:{ACME}"] if k.startswith("item:")]) == 3

    sent = len(fake.requests)
    again = push(valkey_fresh, fake, documents)
    assert [(r.outcome, r.stripe_invoice_id) for r in again] == [
        ("already pushed", acme["id"]),
        ("already pushed", kiwi["id"]),
    ]
    assert len(fake.requests) == sent  # nothing sent


def test_a_4xx_for_one_invoice_is_reported_for_it_and_the_others_are_pushed(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    client, database = invoices_db
    refusal = Failure(
        "POST",
        "/v1/invoices",
        {"metadata[tollway_invoice_id]": ACME},
        code="invoice_number_taken",
        message="An invoice with number INV-2026-000001 already exists",
    )
    fake.fail(refusal)

    results = push(valkey_fresh, fake, finalized_documents(client, database))

    failed, pushed = results
    assert (failed.invoice_id, failed.outcome, failed.code) == (ACME, "failed", "invoice_number_taken")
    assert failed.message == "Stripe answered 400: An invoice with number INV-2026-000001 already exists"
    assert (pushed.invoice_id, pushed.outcome) == (KIWI, "pushed")
    assert f"tw:stripe:invoice:{{acme}}:{ACME}" not in stripe_state(valkey_fresh)

    fake.failures.remove(refusal)
    results = push(valkey_fresh, fake, finalized_documents(client, database))
    assert [r.outcome for r in results] == ["pushed", "already pushed"]
    assert_each_object_once(fake, LINES)


def test_a_lost_push_state_is_rebuilt_from_stripe_without_duplicates(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    """Half-done (the finalization refused: customer, invoice and items exist in Stripe) and done
    invoices, with the Redis state gone: the re-run finds every object by its metadata and creates none."""
    client, database = invoices_db
    documents = finalized_documents(client, database)
    stop = Failure(
        "POST", "/v1/invoices/in_fake000002/finalize", {}, status=402, code="invoice_payment_intent_requires_action"
    )
    fake.fail(stop)
    assert [r.outcome for r in push(valkey_fresh, fake, documents)] == ["failed", "pushed"]
    fake.failures.remove(stop)
    with redis.Redis(host=valkey_fresh.host, port=valkey_fresh.port) as flush:
        flush.flushall()
    created = len(fake.objects)

    results = push(valkey_fresh, fake, documents)

    assert [r.outcome for r in results] == ["pushed", "pushed"]
    assert len(fake.objects) == created  # found, not created
    assert_each_object_once(fake, LINES)


def test_an_item_that_differs_from_its_line_stops_that_invoice_before_finalization(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    client, database = invoices_db
    documents = finalized_documents(client, database, customer_id="kiwi")
    stop = Failure("POST", "/v1/invoices/in_fake000002/finalize", {}, status=402, code="card_declined")
    fake.fail(stop)
    push(valkey_fresh, fake, documents)
    fake.failures.remove(stop)
    item = fake.of("invoiceitem")[0]
    fake.objects[item["id"]]["amount"] = 999  # changed in Stripe's dashboard meanwhile

    (result,) = push(valkey_fresh, fake, documents)

    assert (result.outcome, result.code) == ("failed", "mismatch")
    assert f"Stripe item {item['id']} of line 1 has amount 999, the line 1000" in str(result.message)
    assert fake.of("invoice")[0]["status"] == "draft"


def test_a_wrong_key_is_refused_and_nothing_is_recorded(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    client, database = invoices_db
    with pytest.raises(StripeKeyRefused, match=r"Stripe refused the API key \(401\): Invalid API Key provided"):
        push(valkey_fresh, fake, finalized_documents(client, database), key="sk_test_wrong_key_000000000000")
    assert stripe_state(valkey_fresh) == {}
    assert fake.objects == {}
    assert {r.status for r in fake.requests} == {401}


def test_stripe_out_of_reach_stops_the_run_and_what_was_pushed_stands(
    invoices_db: ChdbDatabase, valkey_fresh: ValkeyServer, fake: FakeStripe
) -> None:
    client, database = invoices_db
    documents = finalized_documents(client, database)
    fake.fail(Failure("POST", "/v1/invoices", {"metadata[tollway_invoice_id]": KIWI}, status=500, type="api_error"))
    with pytest.raises(StripeUnreachable, match="Stripe could not be reached or failed: injected failure"):
        push(valkey_fresh, fake, documents)
    state = stripe_state(valkey_fresh)
    assert state[f"tw:stripe:invoice:{{acme}}:{ACME}"]["status"] == "finalized"
    assert "tw:stripe:customer:{kiwi}" in state  # the customer was created, the invoice not: resumed next run

    closed = FakeStripe()  # never started: nothing listens on its URL
    with closed:
        url = closed.url
    settings = StripePushSettings(api_key=SecretStr(fake.api_key), api_base=url, max_network_retries=0)
    with pytest.raises(StripeUnreachable, match="Stripe could not be reached"):
        asyncio.run(push_with(settings, valkey_fresh, documents[1:]))

    fake.failures.clear()
    assert [r.outcome for r in push(valkey_fresh, fake, documents)] == ["already pushed", "pushed"]
    assert_each_object_once(fake, LINES)


# --- the command, in a process of its own (its own chdb path) --------------------------------------

LOAD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tollway.warehouse.connection import connect, insert_json_rows
    from tollway.warehouse.migrations import Migrator
    client = connect("chdb://" + sys.argv[1])
    Migrator(client, "tollway").migrate()
    insert_json_rows(client, "tollway", "invoices", Path(sys.argv[2]).read_bytes())
    """
)


def command_env(valkey: ValkeyServer, fake: FakeStripe, tmp_path: Path) -> dict[str, str]:
    """DOCUMENTS and DRAFT in an embedded ClickHouse under ``tmp_path``; the environment of the command."""
    engine = tmp_path / "chdb"
    (tmp_path / "invoices.jsonl").write_bytes(rows([*DOCUMENTS, DRAFT]))
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, str(engine), str(tmp_path / "invoices.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOLLWAY_STRIPE_")}
    env.update(
        {
            "TOLLWAY_REDIS_URL": valkey.url,
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{engine}",
            "TOLLWAY_CLICKHOUSE_DATABASE": "tollway",
            "TOLLWAY_STRIPE_API_BASE": fake.url,
            "TOLLWAY_STRIPE_API_KEY": fake.api_key,
        }
    )
    return env


def tollway(env: dict[str, str], cwd: Path, *args: str) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


# A clean push of DOCUMENTS sends 17 requests: acme 1 search, 2 customer, 3 list invoices, 4 invoice,
# 5 list items, 6-8 items, 9 finalize; kiwi 10-17 likewise with 2 items. The held request is executed after
# the kill: Stripe did the work, Tollway never heard the answer. Stripe's search lags (as it may for up to a
# minute): a customer created by the killed run is not found by the re-run's search, and its creation is
# sent again with the same idempotency key, which Stripe answers with the customer the first one created.
@pytest.mark.parametrize("killed_at", [2, 4, 7, 9, 17])
def test_a_push_killed_at_any_step_resumes_without_a_duplicate(
    valkey_fresh: ValkeyServer, fake: FakeStripe, tmp_path: Path, killed_at: int
) -> None:
    env = command_env(valkey_fresh, fake, tmp_path)
    fake.search_delay_s = 3600
    fake.hold(killed_at)
    process = subprocess.Popen(
        [sys.executable, "-m", "tollway", "payments", "push"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert fake.held.wait(timeout=60), process.stderr.read() if process.poll() is not None else "not reached"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        fake.release()
        if process.poll() is None:
            process.kill()
        assert process.stderr is not None
        process.stderr.close()

    result = tollway(env, tmp_path, "payments", "push")

    assert result.code == 0, result
    outcomes = {line.split()[0]: line.split()[2:4] for line in result.stdout.splitlines()}
    assert set(outcomes) == {ACME, KIWI}
    assert_each_object_once(fake, LINES)
    replayed = {r.idempotency_key for r in fake.requests if r.replayed}
    if killed_at == 2:  # the customer's creation, answered to no one, then sent again: the same customer
        assert replayed == {"tollway:customer:acme:v1"}
    again = tollway(env, tmp_path, "payments", "push")
    assert (again.code, again.stdout.count("already pushed")) == (0, 2), again


def test_the_command_reports_a_refused_invoice_and_pushes_the_others(
    valkey_fresh: ValkeyServer, fake: FakeStripe, tmp_path: Path
) -> None:
    env = command_env(valkey_fresh, fake, tmp_path)
    fake.fail(
        Failure(
            "POST",
            "/v1/invoiceitems",
            {"metadata[tollway_invoice_id]": KIWI},
            code="amount_too_large",
            message="Amount must be no more than $999,999.99",
        )
    )

    result = tollway(env, tmp_path, "payments", "push")

    assert result.code == 1, result
    assert result.stdout.startswith(f"{ACME}  acme  pushed  in_fake"), result.stdout
    assert result.stdout.strip().endswith("INV-2026-000001")
    assert result.stderr.splitlines() == [
        f"tollway: not pushed: invoice {KIWI} (customer kiwi): Stripe answered 400: Amount must be no more than "
        "$999,999.99 [amount_too_large]",
        "tollway: 1 invoice(s) not pushed",
    ]

    only = tollway(env, tmp_path, "payments", "push", "--customer", "acme", "--period", "2026-10")
    assert (only.code, only.stdout.split()[2:4]) == (0, ["already", "pushed"])
    bad = tollway(env, tmp_path, "payments", "push", "--period", "2026-13")
    assert (bad.code, bad.stderr.strip()) == (2, "tollway: invalid --period '2026-13': expected YYYY-MM")


def test_without_a_key_nothing_is_sent_and_a_wrong_key_is_a_clear_error(
    valkey_fresh: ValkeyServer, fake: FakeStripe, tmp_path: Path
) -> None:
    env = command_env(valkey_fresh, fake, tmp_path)
    del env["TOLLWAY_STRIPE_API_KEY"]
    missing = tollway(env, tmp_path, "payments", "push")
    assert (missing.code, missing.stderr.strip()) == (
        2,
        "tollway: no Stripe API key: set TOLLWAY_STRIPE_API_KEY (nothing was sent)",
    )
    assert fake.requests == []

    wrong_key = "sk_test_not_the_right_one_4242"
    wrong = tollway({**env, "TOLLWAY_STRIPE_API_KEY": wrong_key}, tmp_path, "payments", "push")
    assert wrong.code == 2, wrong
    assert wrong.stderr.startswith("tollway: Stripe refused the API key (401): Invalid API Key provided"), wrong.stderr
    assert wrong.stderr.strip().endswith("check TOLLWAY_STRIPE_API_KEY")
    assert len(wrong.stderr.splitlines()) == 1
    assert wrong_key not in wrong.stderr + wrong.stdout
    assert stripe_state(valkey_fresh) == {}
    assert fake.objects == {}

    bad_base = tollway({**env, "TOLLWAY_STRIPE_API_BASE": "ftp://x"}, tmp_path, "payments", "push")
    assert bad_base.code == 2, bad_base
    assert "TOLLWAY_STRIPE_API_BASE" in bad_base.stderr
