"""Overdue customers at the gateway, end to end: real Envoy, two ``tollway serve`` processes (Envoy spreads
the checks over both), real Valkey, and Stripe's webhook on the management API. A signed
``invoice.payment_failed`` puts the customer on their plan's overdue plan (or a 402, for a plan that refuses)
at every process within 1 s; ``invoice.paid`` restores the plan. The events are built as Stripe builds
them and signed as Stripe signs them (``tests.support.stripe_events``)."""

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory, ValkeyServer
from tests.support.admin_api import NOW, AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.stripe_events import SECRET, insert_invoice, invoice_event, signed
from tests.support.tollway_cli import create_key
from tollway.admin.scopes import Scope

pytestmark = pytest.mark.integration

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: overdue-e2e, version: "1"}
features:
  items:
    routes:
      - {methods: [GET], prefix: /v1/items}
  reports:
    routes:
      - {methods: [GET], prefix: /v1/reports}
plans:
  free:
    features: [items]
  pro:
    features: [items, reports]
    overdue: {plan: free}
  strict:
    features: [items, reports]
    overdue: {refuse: true}
"""
BOUND_S = 1.0  # the acceptance: the gateway answers as the overdue policy says within a second
AT = int(NOW.timestamp())
ACME_INVOICE = "in_acacacacacacacacacac0011"
GLOBEX_INVOICE = "in_9b9b9b9b9b9b9b9b9b9b0011"


async def answers_within(check: Callable[[], object], client: httpx.AsyncClient, key: str, path: str) -> httpx.Response:
    """Poll ``path`` until ``check(response)`` holds, at most ``BOUND_S`` after the call; the last response."""
    deadline = time.monotonic() + BOUND_S
    while True:
        response = await client.get(path, headers={"authorization": f"Bearer {key}"})
        if check(response):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: still {response.status_code} {response.text[:200]} after {BOUND_S} s")
        await asyncio.sleep(0.02)


def test_a_failed_payment_puts_the_customer_on_the_overdue_plan_within_a_second_and_paying_restores_it(
    valkey_fresh: ValkeyServer,
    chdb_db: ChdbDatabase,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    keys = {customer: str(create_key(valkey_fresh.url, customer)["api_key"]) for customer in ("acme", "globex")}
    tollways = [tollway_factory({"TOLLWAY_CATALOG": str(catalog)}, redis_url=valkey_fresh.url) for _ in range(2)]
    envoy = envoy_factory("http", endpoints={"tollway_http": [t.http_endpoint for t in tollways]})
    client_db, database = chdb_db

    async def scenario(api: AdminApi, gateway: httpx.AsyncClient) -> None:
        writer = await api.token("ops", Scope.WRITE)
        for customer, plan in (("acme", "pro"), ("globex", "strict")):
            assert (
                await api.http.post("/customers", json={"customer_id": customer}, headers=writer)
            ).status_code == 201
            put = await api.http.put(
                f"/customers/{customer}/subscription",
                json={"plan_id": plan, "started_at": "2026-01-01T00:00:00Z"},
                headers=writer,
            )
            assert put.status_code == 201, put.text
        insert_invoice(client_db, database, ACME_INVOICE, "acme")
        insert_invoice(client_db, database, GLOBEX_INVOICE, "globex")

        def plan_of(response: httpx.Response) -> str:
            assert response.status_code == 200, response.text
            return str(json.loads(response.text)["headers"]["x-tollway-plan"])

        async def webhook(event_id: str, kind: str, created: int, invoice_id: str) -> None:
            body = invoice_event(event_id, kind, created, invoice_id=invoice_id)
            answer = await api.http.post("/payments/stripe/webhook", content=body, headers=signed(body, AT))
            assert answer.status_code == 200, answer.text
            assert (answer.json()["outcome"], answer.json()["overdue_changed"]) == ("applied", True)

        # Paying customers: their plans' answers (several requests: Envoy spreads them over both processes).
        for _ in range(4):
            assert (
                await gateway.get("/v1/reports/1", headers={"authorization": f"Bearer {keys['acme']}"})
            ).status_code == 200
            assert (
                await gateway.get("/v1/items/1", headers={"authorization": f"Bearer {keys['globex']}"})
            ).status_code == 200

        await webhook("evt_e2e_f1", "invoice.payment_failed", AT - 60, ACME_INVOICE)
        refused = await answers_within(lambda r: r.status_code == 403, gateway, keys["acme"], "/v1/reports/1")
        assert "does not include the 'reports' feature" in refused.json()["detail"]
        for _ in range(4):  # every process answers as the overdue plan (free): items yes, reports no
            overdue = await gateway.get("/v1/items/1", headers={"authorization": f"Bearer {keys['acme']}"})
            assert plan_of(overdue) == "free"
            assert (
                await gateway.get("/v1/reports/1", headers={"authorization": f"Bearer {keys['acme']}"})
            ).status_code == 403

        await webhook("evt_e2e_f2", "invoice.payment_failed", AT - 60, GLOBEX_INVOICE)
        suspended = await answers_within(lambda r: r.status_code == 402, gateway, keys["globex"], "/v1/items/1")
        problem = suspended.json()
        assert suspended.headers["content-type"] == "application/problem+json"
        assert (problem["type"], problem["title"]) == (
            "https://tollway.dev/problems/payment-overdue",
            "Payment overdue",
        )
        assert "overdue" in problem["detail"]

        await webhook("evt_e2e_p1", "invoice.paid", AT - 10, ACME_INVOICE)
        restored = await answers_within(lambda r: r.status_code == 200, gateway, keys["acme"], "/v1/reports/1")
        assert plan_of(restored) == "pro"
        await webhook("evt_e2e_p2", "invoice.paid", AT - 10, GLOBEX_INVOICE)
        back = await answers_within(lambda r: r.status_code == 200, gateway, keys["globex"], "/v1/items/1")
        assert plan_of(back) == "strict"
        for _ in range(4):
            assert (
                plan_of(await gateway.get("/v1/reports/1", headers={"authorization": f"Bearer {keys['acme']}"}))
                == "pro"
            )

    async def go() -> None:
        async with (
            admin_api(valkey_fresh.url, chdb_db, catalog=catalog, stripe_webhook_secret=SECRET) as api,
            httpx.AsyncClient(base_url=envoy.base_url, timeout=5) as gateway,
        ):
            await scenario(api, gateway)

    asyncio.run(go())
