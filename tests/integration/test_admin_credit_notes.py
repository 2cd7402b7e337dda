"""Credit notes through the management API (real Valkey, the embedded ClickHouse): issue and list, the
acceptance (a credit note restores a corrected amount), retries with ``Idempotency-Key``, and a problem
document for every bad request (404 unknown invoice, 409 draft, 422 too large or a bad amount)."""

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.integration.test_admin_api import assert_problem, run
from tests.support.admin_api import AdminApi
from tests.support.chdb_engine import ChdbDatabase
from tests.support.invoice_documents import invoice_document, store_invoice
from tollway.admin.scopes import Scope
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

INVOICE = "in_" + "a" * 24
DRAFT = "in_" + "d" * 24
OTHERS = "in_" + "b" * 24
URL = f"/customers/acme/invoices/{INVOICE}/credit-notes"


@pytest.fixture
def invoices(chdb_db: ChdbDatabase) -> ChdbDatabase:
    client, database = chdb_db
    Migrator(client, database).migrate()
    store_invoice(client, database, invoice_document(INVOICE))
    store_invoice(client, database, invoice_document(DRAFT, status="draft"))
    store_invoice(client, database, invoice_document(OTHERS, "globex"))
    return chdb_db


async def events(valkey: ValkeyServer, customer: str) -> list[Event]:
    redis = Redis.from_url(valkey.url, decode_responses=True)
    try:
        return [Event.from_stream(f) for _, f in await redis.xrange(keys.stream_key("tw:", customer))]
    finally:
        await redis.aclose()


def test_a_credit_note_restores_a_corrected_amount(valkey_fresh: ValkeyServer, invoices: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        reader = await api.token("ro", Scope.READ)
        # 76.65 USD invoiced, of which egress 6.65 was wrongly charged: 76.65 − 6.65 = 70.00 is owed.
        body = {"reason": "egress double-counted on 2026-11-03", "amount": "6.65"}
        created = await api.http.post(URL, json=body, headers={**writer, "Idempotency-Key": "fix-egress"})
        assert created.status_code == 201, created.text
        note = created.json()
        assert note["number"].endswith("-000001")
        assert note["number"].startswith("CN-")
        assert (note["total"], note["currency"], note["invoice_number"]) == ("6.65", "USD", "INV-2026-000042")
        assert created.headers["location"] == URL
        listed = await api.http.get(URL, headers=reader)
        assert listed.status_code == 200, listed.text
        assert listed.json() == {
            "items": [note],
            "invoice_total": "76.65",
            "credited": "6.65",
            "net": "70.00",
            "currency": "USD",
        }
        # A retry (same key, same request) is the same credit note: 200, nothing new.
        retried = await api.http.post(URL, json=body, headers={**writer, "Idempotency-Key": "fix-egress"})
        assert retried.status_code == 200, retried.text
        assert retried.json() == note
        reused = await api.http.post(
            URL, json={**body, "amount": "1.00"}, headers={**writer, "Idempotency-Key": "fix-egress"}
        )
        assert_problem(reused, 409, "conflict")
        # Lines: what remains of line 2 (21.00), then part of line 1.
        lines = await api.http.post(
            URL, json={"reason": "calls", "lines": [{"line": 2}, {"line": 1, "amount": "0.5"}]}, headers=writer
        )
        assert lines.status_code == 201, lines.text
        assert [(li["invoice_line"], li["amount"]) for li in lines.json()["lines"]] == [(2, "21.00"), (1, "0.50")]
        assert lines.json()["number"].endswith("-000002")
        after = (await api.http.get(URL, headers=reader)).json()
        assert (after["credited"], after["net"]) == ("28.15", "48.50")  # 76.65 − 6.65 − 21.00 − 0.50

        audit = (await api.http.get("/audit", headers=reader)).json()["items"]
        issued = [entry for entry in audit if entry["action"] == "credit_note.issue"]
        assert len(issued) == 2  # the retry wrote no entry
        assert {entry["resource_id"] for entry in issued} == {note["credit_note_id"], lines.json()["credit_note_id"]}
        found = [e for e in await events(valkey_fresh, "acme") if e.type == "credit_note.issued"]
        assert sorted(e.data["number"] for e in found) == sorted([note["number"], lines.json()["number"]])

    run(valkey_fresh, invoices, scenario)


def test_bad_requests_are_problems_and_write_nothing(valkey_fresh: ValkeyServer, invoices: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        reader = await api.token("ro", Scope.READ)
        ok = {"reason": "r", "amount": "1.00"}

        async def post(body: Any, url: str = URL, headers: dict[str, str] | None = None) -> Any:
            return await api.http.post(url, json=body, headers={**writer, **(headers or {})})

        assert_problem(await post(ok, f"/customers/acme/invoices/in_{'0' * 24}/credit-notes"), 404, "not-found")
        assert_problem(await post(ok, f"/customers/acme/invoices/{OTHERS}/credit-notes"), 404, "not-found")
        assert_problem(await post(ok, f"/customers/nobody/invoices/{INVOICE}/credit-notes"), 404, "not-found")
        draft = assert_problem(await post(ok, f"/customers/acme/invoices/{DRAFT}/credit-notes"), 409, "conflict")
        assert "is a draft" in draft["detail"]
        too_large = assert_problem(await post({"reason": "r", "amount": "76.66"}), 422, "credit-too-large")
        assert "76.66 USD is larger than what remains to credit" in too_large["detail"]
        assert_problem(await post({"reason": "r", "lines": [{"line": 3, "amount": "6.66"}]}), 422, "credit-too-large")
        for body in (
            {"reason": "r", "amount": "6.655"},  # more places than USD
            {"reason": "r", "amount": "0"},
            {"reason": "r", "amount": "-1"},
            {"reason": "r", "amount": 6.65},  # a JSON number
            {"reason": "r", "amount": "1e2"},
            {"reason": "r", "amount": "NaN"},
            {"reason": "r", "amount": "1", "lines": [{"line": 1}]},
            {"reason": "r"},
            {"reason": "", "amount": "1"},
            {"reason": " ", "amount": "1"},
            {"reason": "a\nb", "amount": "1"},
            {"reason": "x" * 501, "amount": "1"},
            {"amount": "1"},
            {"reason": "r", "lines": []},
            {"reason": "r", "lines": [{"line": 0}]},
            {"reason": "r", "lines": [{"line": 9}]},
            {"reason": "r", "lines": [{"line": 1}, {"line": 1}]},
            {"reason": "r", "lines": [{"line": "one"}]},
            {"reason": "r", "lines": [{"line": 1, "extra": 1}]},
            {"reason": "r", "amount": "1", "credit_note_id": "cn_x"},
            [],
            "text",
        ):
            assert_problem(await post(body), 422, "validation-error")
        assert_problem(await post(ok, headers={"Idempotency-Key": "has space"}), 422, "validation-error")
        assert_problem(await post(ok, headers={"Idempotency-Key": "x" * 256}), 422, "validation-error")
        assert_problem(await post(ok, "/customers/acme/invoices/in_bad/credit-notes"), 422, "validation-error")
        not_json = await api.http.post(URL, content=b"{", headers={**writer, "content-type": "application/json"})
        assert not_json.status_code in (400, 422)
        assert not_json.headers["content-type"] == "application/problem+json"
        read_only = await api.http.post(URL, json=ok, headers=reader)
        assert_problem(read_only, 403, "insufficient-scope")
        assert_problem(await api.http.post(URL, json=ok), 401, "missing-credentials")
        assert_problem(
            await api.http.get(f"/customers/acme/invoices/{OTHERS}/credit-notes", headers=reader), 404, "not-found"
        )
        listed = (await api.http.get(URL, headers=reader)).json()
        assert (listed["items"], listed["net"]) == ([], "76.65")

    run(valkey_fresh, invoices, scenario)


def test_two_credit_notes_posted_at_once_never_credit_more_than_the_invoice(
    valkey_fresh: ValkeyServer, invoices: ChdbDatabase
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        answers = await asyncio.gather(
            *(api.http.post(URL, json={"reason": f"race {i}", "amount": "40.00"}, headers=writer) for i in range(3))
        )
        assert sorted(a.status_code for a in answers) == [201, 422, 422], [a.text for a in answers]
        listed = (await api.http.get(URL, headers=writer)).json()
        assert (listed["credited"], listed["net"]) == ("40.00", "36.65")

    run(valkey_fresh, invoices, scenario)
