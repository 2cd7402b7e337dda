"""Stripe's signed webhooks on the management API (real Valkey, the session's chdb): the payment status
recorded on Tollway's invoices, the customer's overdue flag set and cleared on their subscription record
(announced on the change channel), idempotent per event id, ordered by the event's ``created``, and every
bad input refused or recorded as unmatched without touching any state."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import ValkeyServer
from tests.support.admin_api import CATALOG, NOW, PROBLEM, AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.stripe_events import SECRET, insert_invoice, invoice_event, signed
from tollway.admin.scopes import Scope
from tollway.billing.payment_status import read_history
from tollway.billing.stripe_webhooks import InvoiceEvent
from tollway.harness.valkey_cluster import ValkeyCluster

pytestmark = pytest.mark.integration

URL = "/payments/stripe/webhook"
AT = int(NOW.timestamp())


def write_catalog(directory: Path) -> Path:
    path = directory / "catalog.yaml"
    path.write_text(CATALOG.replace("  pro:\n", "  pro:\n    overdue: {plan: basic}\n"), encoding="utf-8")
    return path


async def raw_state(redis_url: str) -> dict[str, Any]:
    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        state: dict[str, Any] = {}
        for key in sorted(await redis.keys("tw:*")):
            kind = await redis.type(key)
            state[key] = (
                await redis.hgetall(key) if kind == "hash" else await redis.get(key) if kind == "string" else kind
            )
        return state
    finally:
        await redis.aclose()


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug), body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


async def setup(api: AdminApi, chdb_db: ChdbDatabase) -> dict[str, str]:
    writer = await api.token("ops", Scope.WRITE)
    for customer in ("acme", "globex"):
        assert (await api.http.post("/customers", json={"customer_id": customer}, headers=writer)).status_code == 201
        put = await api.http.put(
            f"/customers/{customer}/subscription",
            json={"plan_id": "pro", "started_at": "2026-01-01T00:00:00Z"},
            headers=writer,
        )
        assert put.status_code == 201, put.text
    client, database = chdb_db
    for invoice_id, customer in (
        ("in_acacacacacacacacacac0010", "acme"),
        ("in_acacacacacacacacacac0011", "acme"),
        ("in_9b9b9b9b9b9b9b9b9b9b0011", "globex"),
    ):
        insert_invoice(client, database, invoice_id, customer)
    insert_invoice(client, database, "in_acacacacacacacacacacdaf0", "acme", status="draft")
    return writer


async def post(api: AdminApi, body: bytes, at: int = AT, secret: str = SECRET) -> Any:
    return await api.http.post(URL, content=body, headers=signed(body, at, secret))


def test_payment_failed_then_paid_marks_and_clears_the_customer_overdue(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await setup(api, chdb_db)
        redis = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        pubsub = redis.pubsub()
        await pubsub.subscribe("tw:subscription-changes")
        await pubsub.get_message(timeout=1)

        failed = invoice_event(
            "evt_f1", "invoice.payment_failed", AT - 60, invoice_id="in_acacacacacacacacacac0010", customer_id="acme"
        )
        answer = await post(api, failed)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "event_id": "evt_f1",
            "type": "invoice.payment_failed",
            "outcome": "applied",
            "invoice_id": "in_acacacacacacacacacac0010",
            "customer_id": "acme",
            "status": "payment_failed",
            "overdue_changed": True,
            "detail": None,
        }
        announced = await pubsub.get_message(timeout=2)
        assert announced is not None
        assert announced["data"] == "acme"
        assert await redis.hget("tw:subscription:{acme}", "overdue") == '["in_acacacacacacacacacac0010"]'
        held = (await api.http.get("/customers/acme/subscription", headers=writer)).json()
        assert (held["plan_id"], held["overdue"]) == ("pro", ["in_acacacacacacacacacac0010"])
        shown = (await api.http.get("/customers/acme/invoices/in_acacacacacacacacacac0010", headers=writer)).json()
        assert shown["payment_status"]["status"] == "payment_failed"
        assert shown["payment_status"]["event_id"] == "evt_f1"
        assert shown["payment_status"]["event_created"] == "2026-11-25T11:59:00Z"
        assert (
            "payment_status"
            not in (await api.http.get("/customers/acme/invoices/in_acacacacacacacacacac0011", headers=writer)).json()
        )

        # Stripe redelivers: nothing changes, nothing is announced.
        state = await raw_state(valkey_fresh.url)
        again = await post(api, failed, AT + 30)
        assert (again.status_code, again.json()["outcome"], again.json()["overdue_changed"]) == (
            200,
            "duplicate",
            False,
        )
        assert await raw_state(valkey_fresh.url) == state

        # A second invoice fails; paying one of the two leaves the customer overdue.
        other = invoice_event("evt_f2", "invoice.payment_failed", AT - 50, invoice_id="in_acacacacacacacacacac0011")
        assert (await post(api, other)).json()["overdue_changed"] is True
        assert (
            await redis.hget("tw:subscription:{acme}", "overdue")
            == '["in_acacacacacacacacacac0010","in_acacacacacacacacacac0011"]'
        )
        paid = invoice_event(
            "evt_p1", "invoice.paid", AT - 10, invoice_id="in_acacacacacacacacacac0010", customer_id="acme"
        )
        assert (await post(api, paid)).json()["outcome"] == "applied"
        assert await redis.hget("tw:subscription:{acme}", "overdue") == '["in_acacacacacacacacacac0011"]'

        # Out of order: a failure created before the payment arrives after it: recorded as stale, no change.
        late = invoice_event("evt_f0", "invoice.payment_failed", AT - 30, invoice_id="in_acacacacacacacacacac0010")
        stale = await post(api, late)
        assert (stale.json()["outcome"], stale.json()["overdue_changed"]) == ("stale", False)
        assert (await api.services.payments.get("acme", "in_acacacacacacacacacac0010")).status == "paid"  # type: ignore[union-attr]

        # Paying the last overdue invoice restores the customer; the field is gone (as before any failure).
        done = invoice_event("evt_p2", "invoice.paid", AT - 5, invoice_id="in_acacacacacacacacacac0011")
        assert (await post(api, done)).json()["overdue_changed"] is True
        assert "overdue" not in await redis.hgetall("tw:subscription:{acme}")
        subscription = await api.services.subscriptions.get("acme")
        assert subscription is not None
        assert subscription.overdue == ()

        # A voided invoice is no longer owed: it ends the overdue like a payment (and a late failure is stale).
        void_failed = invoice_event(
            "evt_v0", "invoice.payment_failed", AT - 4, invoice_id="in_acacacacacacacacacac0011"
        )
        assert (await post(api, void_failed)).json()["outcome"] == "applied"
        assert await redis.hget("tw:subscription:{acme}", "overdue") == '["in_acacacacacacacacacac0011"]'
        voided = invoice_event("evt_v1", "invoice.voided", AT - 3, invoice_id="in_acacacacacacacacacac0011")
        answer = await post(api, voided)
        assert (answer.json()["status"], answer.json()["overdue_changed"]) == ("voided", True)
        assert "overdue" not in await redis.hgetall("tw:subscription:{acme}")
        same_second = invoice_event(
            "evt_v2", "invoice.payment_failed", AT - 3, invoice_id="in_acacacacacacacacacac0011"
        )
        assert (await post(api, same_second)).json()["outcome"] == "stale"

        # A plan change through the API keeps (never overwrites) the overdue flag.
        again_failed = invoice_event(
            "evt_f3", "invoice.payment_failed", AT - 1, invoice_id="in_9b9b9b9b9b9b9b9b9b9b0011"
        )
        assert (await post(api, again_failed)).json()["customer_id"] == "globex"
        changed = await api.http.put(
            "/customers/globex/subscription",
            json={"plan_id": "basic", "started_at": "2026-01-01T00:00:00Z"},
            headers=writer,
        )
        assert changed.status_code in (200, 201), changed.text
        assert await redis.hget("tw:subscription:{globex}", "overdue") == '["in_9b9b9b9b9b9b9b9b9b9b0011"]'

        client, database = chdb_db
        history = read_history(client, database, invoice_id="in_acacacacacacacacacac0010")
        assert [(row["event_id"], row["status"], row["outcome"]) for row in history] == [
            ("evt_f1", "payment_failed", "applied"),
            ("evt_f0", "payment_failed", "stale"),
            ("evt_p1", "paid", "applied"),
        ]
        await pubsub.aclose()
        await redis.aclose()

    async def go() -> None:
        async with admin_api(
            valkey_fresh.url, chdb_db, catalog=write_catalog(tmp_path), stripe_webhook_secret=SECRET
        ) as api:
            await scenario(api)

    asyncio.run(go())


def test_bad_signatures_malformed_events_and_unknown_invoices_change_nothing(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        await setup(api, chdb_db)
        state = await raw_state(valkey_fresh.url)
        body = invoice_event("evt_b1", "invoice.payment_failed", AT, invoice_id="in_acacacacacacacacacac0010")

        for headers in (
            signed(body, AT, "whsec_someone_else"),
            signed(body, AT - 301),  # older than the 300 s tolerance: a replayed delivery
            {"Content-Type": "application/json"},
            {"Stripe-Signature": "t=abc,v1=00"},
        ):
            refused = assert_problem(await api.http.post(URL, content=body, headers=headers), 400, "invalid-signature")
            assert SECRET not in json.dumps(refused)
        tampered = body.replace(b"in_acacacacacacacacacac0010", b"in_acacacacacacacacacac0011")
        assert_problem(await api.http.post(URL, content=tampered, headers=signed(body, AT)), 400, "invalid-signature")
        for malformed in (b"{not json", b"[]", b'{"id": "evt_x", "type": "invoice.paid", "created": 1}'):
            assert_problem(await post(api, malformed), 400, "malformed-event")
        huge = b"{" + b" " * (1 << 20) + b"}"
        assert_problem(await post(api, huge), 413, "body-too-large")

        async def streamed() -> Any:
            for _ in range(20):
                yield b" " * 65536

        chunked = await api.http.post(URL, content=streamed(), headers={"Stripe-Signature": f"t={AT},v1=00"})
        assert_problem(chunked, 413, "body-too-large")
        assert await raw_state(valkey_fresh.url) == state

        # Events Tollway cannot match: 200 (a retry cannot fix them), recorded as unmatched, nothing changed.
        client, database = chdb_db
        for event_id, invoice_id, customer, why in (
            ("evt_u1", "in_000000000000000000000000", None, "Tollway has no invoice 'in_000000000000000000000000'"),
            ("evt_u2", "in_acacacacacacacacacacdaf0", None, "is a draft, not finalized"),
            ("evt_u3", "in_acacacacacacacacacac0010", "globex", "belongs to customer 'acme', not to 'globex'"),
            ("evt_u4", None, None, "has no metadata.tollway_invoice_id"),
        ):
            unmatched = invoice_event(
                event_id, "invoice.payment_failed", AT, invoice_id=invoice_id, customer_id=customer
            )
            answer = await post(api, unmatched)
            assert answer.status_code == 200, answer.text
            assert (answer.json()["outcome"], answer.json()["invoice_id"]) == ("unmatched", None)
            assert why in answer.json()["detail"]
        assert await raw_state(valkey_fresh.url) == state
        history = read_history(client, database, invoice_id="in_000000000000000000000000")
        assert [(row["event_id"], row["outcome"]) for row in history] == [("evt_u1", "unmatched")]

        # Other event types are acknowledged and ignored.
        other = json.dumps({"id": "evt_o1", "type": "customer.updated", "data": {"object": {}}}).encode()
        assert (await post(api, other)).json()["outcome"] == "ignored"
        assert await raw_state(valkey_fresh.url) == state

    async def go() -> None:
        async with admin_api(
            valkey_fresh.url, chdb_db, catalog=write_catalog(tmp_path), stripe_webhook_secret=SECRET
        ) as api:
            await scenario(api)

    asyncio.run(go())


def test_without_a_secret_the_webhook_is_503_and_records_nothing(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        await setup(api, chdb_db)
        state = await raw_state(valkey_fresh.url)
        body = invoice_event("evt_n1", "invoice.payment_failed", AT, invoice_id="in_acacacacacacacacacac0010")
        answer = assert_problem(await post(api, body), 503, "payments-not-configured")
        assert "TOLLWAY_STRIPE_WEBHOOK_SECRET" in answer["detail"]
        assert await raw_state(valkey_fresh.url) == state

    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db, catalog=write_catalog(tmp_path)) as api:
            await scenario(api)

    asyncio.run(go())


def test_the_payment_script_runs_on_a_redis_cluster(valkey_cluster: ValkeyCluster) -> None:
    """Every key of one event is in the customer's slot: the script runs on a cluster, the subscription's
    overdue field included."""
    import uuid
    from datetime import UTC, datetime

    from redis.asyncio.cluster import RedisCluster

    from tollway.billing.payment_status import PaymentStatusStore
    from tollway.billing.stripe_webhooks import parse_event
    from tollway.subscriptions.model import Subscription
    from tollway.subscriptions.redis_store import RedisSubscriptionStore

    async def scenario() -> None:
        prefix = f"pay{uuid.uuid4().hex[:8]}:"
        redis = RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=2)
        try:
            subscriptions = RedisSubscriptionStore(redis, prefix)
            await subscriptions.put(Subscription.new("acme", "pro", datetime(2026, 1, 1, tzinfo=UTC)))
            store = PaymentStatusStore(redis, subscriptions, prefix)
            failed = parse_event(invoice_event("evt_c1", "invoice.payment_failed", AT, invoice_id="in_x"))
            assert isinstance(failed, InvoiceEvent)
            recorded = await store.record(failed, "in_x", "acme", NOW)
            assert (recorded.outcome, recorded.overdue_changed) == ("applied", True)
            assert (await subscriptions.get("acme")).overdue == ("in_x",)  # type: ignore[union-attr]
            assert (await store.record(failed, "in_x", "acme", NOW)).outcome == "duplicate"
            paid = parse_event(invoice_event("evt_c2", "invoice.paid", AT + 1, invoice_id="in_x"))
            assert isinstance(paid, InvoiceEvent)
            assert (await store.record(paid, "in_x", "acme", NOW)).overdue_changed
            assert (await subscriptions.get("acme")).overdue == ()  # type: ignore[union-attr]
        finally:
            await redis.aclose()

    asyncio.run(scenario())
