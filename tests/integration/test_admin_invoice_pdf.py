"""``GET /customers/{id}/invoices/{invoice_id}/pdf``: the invoice as a PDF (application/pdf), rendered from
the same HTML page, with a credential or a signed page link; the problems of the JSON route (404 for
another customer's or a missing invoice, 422 for a malformed id). The PDF opened with pypdf holds the
total, and, for a finalized invoice with the keys finalization adds, its number and due date."""

import asyncio
import io
from pathlib import Path
from typing import Any

import pypdf
import pytest

from tests.integration.test_admin_api import USAGE, assert_problem, new_customer, run
from tests.support.admin_api import NOW, AdminApi, insert_usage, write_catalog
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.routes import page
from tollway.admin.scopes import Scope
from tollway.cli.bill import bill
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog

pytestmark = pytest.mark.integration


FINALIZED_KEYS = {
    "number": "INV-2026-000007",
    "issued_on": "2026-12-01",
    "due_on": "2026-12-31",
    "payment_terms_days": 30,
    "seller": {"name": "Tollway Demo GmbH", "address": ["Hauptstraße 1", "10115 Berlin"], "country": "DE"},
    "buyer": {"name": "Acme Corp", "email": "ap@acme.example"},
}


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def test_the_invoice_as_a_pdf(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_usage(chdb_db, USAGE)
    catalog_path = write_catalog(tmp_path)

    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        reader = await api.token("ro", Scope.READ)
        for customer in ("acme", "globex"):
            await new_customer(api, writer, customer)
            put = await api.http.put(
                f"/customers/{customer}/subscription",
                json={"plan_id": "basic", "started_at": "2026-01-01T00:00:00Z"},
                headers=writer,
            )
            assert put.status_code == 201
        client, database = chdb_db
        subscriptions = await api.services.subscriptions.list()
        report = await asyncio.to_thread(
            bill, client, database, load_catalog(catalog_path), subscriptions, "2026-11", now=NOW
        )
        by_customer = {r.document["customer_id"]: r.document for r in report.results}
        acme = by_customer["acme"]
        assert acme["total"] == "12.00"

        [summary] = (await api.http.get("/customers/acme/invoices", headers=reader)).json()["items"]
        assert summary["links"]["pdf"] == f"/customers/acme/invoices/{acme['invoice_id']}/pdf"
        answer = await api.http.get(summary["links"]["pdf"], headers=reader)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/pdf"
        assert answer.headers["content-disposition"] == f'inline; filename="{acme["invoice_id"]}.pdf"'
        text = pdf_text(answer.content)
        assert "12.00 EUR" in text
        assert acme["invoice_id"] in text
        assert "DRAFT" in text

        # a page link opens it too (the customer's own invoices, without a credential)
        link = (await api.http.post("/customers/acme/page-links", json={}, headers=writer)).json()
        token = link["url"].split("token=", 1)[1]
        shared = await api.http.get(f"{summary['links']['pdf']}?token={token}")
        assert shared.status_code == 200
        assert shared.headers["content-type"] == "application/pdf"

        # the same problems as the JSON route
        other = by_customer["globex"]["invoice_id"]
        assert_problem(await api.http.get(f"/customers/acme/invoices/{other}/pdf", headers=reader), 404, "not-found")
        missing = "in_" + "0" * 24
        for path, status, slug in [
            (f"/customers/acme/invoices/{missing}/pdf", 404, "not-found"),
            (f"/customers/nobody/invoices/{missing}/pdf", 404, "not-found"),
            ("/customers/acme/invoices/in_bad/pdf", 422, "validation-error"),
        ]:
            assert_problem(await api.http.get(path, headers=reader), status, slug)
        assert_problem(await api.http.get(summary["links"]["pdf"]), 401, "missing-credentials")

        # a finalized invoice with the keys finalization adds: its number and due date are in the PDF
        real = page.load_document

        async def finalized(*args: Any) -> dict[str, Any]:
            return {**await real(*args), "status": "finalized", **FINALIZED_KEYS}

        monkeypatch.setattr(page, "load_document", finalized)
        answer = await api.http.get(summary["links"]["pdf"], headers=reader)
        assert answer.headers["content-disposition"] == 'inline; filename="INV-2026-000007.pdf"'
        text = pdf_text(answer.content)
        for shown in ("12.00 EUR", "INV-2026-000007", "Due date 2026-12-31", "Tollway Demo GmbH", "Acme Corp"):
            assert shown in text
        assert "DRAFT" not in text

    run(valkey_fresh, chdb_db, scenario, catalog=catalog_path)


def test_the_pdf_route_is_in_the_openapi_document(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        document = (await api.http.get("/openapi.json")).json()
        operation = document["paths"]["/customers/{customer_id}/invoices/{invoice_id}/pdf"]["get"]
        assert set(operation["responses"]["200"]["content"]) == {"application/pdf"}
        assert {"401", "404", "422", "503"} <= set(operation["responses"])
        links = document["components"]["schemas"]["InvoiceLinks"]
        assert "pdf" in links["required"]

    run(valkey_fresh, chdb_db, scenario)
