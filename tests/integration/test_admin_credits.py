"""Credit grants and balances through the Entitlement Management API, in-process on a real Valkey and the
embedded ClickHouse: 201 and idempotent retries, decimal strings, voids, the audit log, the ledger, and
problem+json with nothing written for bad input."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.admin_api import AdminApi, admin_api, write_catalog
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.credits import ledger
from tollway.credits.operations import reconcile
from tollway.harness.valkey import ValkeyServer
from tollway.warehouse.errors import WarehouseUnavailable

pytestmark = pytest.mark.integration

Scenario = Callable[[AdminApi, dict[str, str]], Awaitable[None]]
GRANTS = "/customers/acme/credit-grants"


def run(valkey: ValkeyServer, chdb_db: ChdbDatabase, scenario: Scenario, *, catalog: Path | None = None) -> None:
    async def go() -> None:
        async with admin_api(valkey.url, chdb_db, catalog=catalog) as api:
            writer = await api.token("ops", Scope.WRITE)
            assert (await api.http.post("/customers", json={"customer_id": "acme"}, headers=writer)).status_code == 201
            put = await api.http.put("/customers/acme/subscription", json={"plan_id": "basic"}, headers=writer)
            assert put.status_code == 201, put.text
            await scenario(api, writer)

    asyncio.run(go())


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug), body
    return body


def ledger_entries(chdb_db: ChdbDatabase) -> list[tuple[str, str]]:
    rows = ledger.all_rows(chdb_db.client, chdb_db.name).get("acme", [])
    return [(r.entry_id, format(r.amount.normalize(), "f")) for r in rows]


async def audit_actions(api: AdminApi, writer: dict[str, str]) -> list[str]:
    return [e["action"] for e in (await api.http.get("/audit", headers=writer)).json()["items"]]


def test_grant_list_read_void_balance_and_audit(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi, writer: dict[str, str]) -> None:
        created = await api.http.post(
            GRANTS,
            json={"amount": "25.50", "unit": "USD", "grant_id": "top-up-1", "reason": "prepaid", "priority": 1},
            headers=writer,
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{GRANTS}/top-up-1"
        body = created.json()
        assert (body["amount"], body["remaining"], body["status"], body["ledger"], body["created_by"]) == (
            "25.5",
            "25.5",
            "active",
            "recorded",
            "ops",
        )
        retry = await api.http.post(
            GRANTS,
            json={"amount": "25.5", "unit": "USD", "grant_id": "top-up-1", "reason": "prepaid", "priority": 1},
            headers=writer,
        )
        assert retry.status_code == 200, retry.text
        assert retry.json()["grant_id"] == "top-up-1"
        other = await api.http.post(
            GRANTS, json={"amount": "30", "unit": "USD", "grant_id": "top-up-1"}, headers=writer
        )
        assert_problem(other, 409, "conflict")
        api.clock.advance(timedelta(seconds=1))
        minted = await api.http.post(GRANTS, json={"amount": "5", "unit": "USD"}, headers=writer)
        assert minted.status_code == 201
        assert minted.json()["grant_id"].startswith("grt_")
        balance = await api.http.get("/customers/acme/balance", headers=writer)
        assert balance.json() == {
            "customer_id": "acme",
            "unit": "USD",
            "balance": "30.5",
            "grants": 2,
            "at": "2026-11-25T12:00:01.000Z",
        }
        listed = (await api.http.get(GRANTS, params={"limit": 1}, headers=writer)).json()
        assert [g["grant_id"] for g in listed["items"]] == ["top-up-1"]
        assert listed["next"] is not None
        voided = await api.http.post(f"{GRANTS}/top-up-1/void", headers=writer)
        assert voided.status_code == 200, voided.text
        assert (voided.json()["status"], voided.json()["voided_amount"], voided.json()["remaining"]) == (
            "voided",
            "25.5",
            "0",
        )
        assert (await api.http.post(f"{GRANTS}/top-up-1/void", headers=writer)).status_code == 200
        read = await api.http.get(f"{GRANTS}/top-up-1", headers=writer)
        assert read.json()["voided_by"] == "ops"
        assert (await api.http.get("/customers/acme/balance", headers=writer)).json()["balance"] == "5"
        assert await audit_actions(api, writer) == [
            "credit_grant.void",
            "credit_grant.create",
            "credit_grant.create",
            "subscription.create",
            "customer.create",
        ]
        entry = (await api.http.get("/audit", params={"limit": 1}, headers=writer)).json()["items"][0]
        assert (entry["resource_type"], entry["resource_id"], entry["customer_id"]) == (
            "credit_grant",
            "top-up-1",
            "acme",
        )
        assert entry["before"]["status"] == "active"
        assert entry["after"]["status"] == "voided"
        entries = ledger_entries(chdb_db)
        assert ("grant:top-up-1", "25.5") in entries
        assert ("void:top-up-1", "-25.5") in entries
        assert len(entries) == 3
        report = await reconcile(api.services.grants, api.services.warehouse)
        assert report.differences == []

    run(valkey_fresh, chdb_db, scenario)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"amount": "0", "unit": "USD"}, 422, "must be above 0"),
        ({"amount": "-5", "unit": "USD"}, 422, "amount"),
        ({"amount": 5, "unit": "USD"}, 422, "amount"),
        ({"amount": "5.5", "unit": "JPY"}, 422, "JPY allows 0 decimal places"),
        ({"amount": "5.001", "unit": "USD"}, 422, "USD allows 2 decimal places"),
        ({"amount": "١٠", "unit": "USD"}, 422, "amount"),
        ({"amount": "5", "unit": "GOLD"}, 422, "unknown unit 'GOLD'"),
        ({"amount": "5"}, 422, "no unit given"),
        (
            {
                "amount": "5",
                "unit": "USD",
                "effective_at": "2026-12-01T00:00:00Z",
                "expires_at": "2026-12-01T00:00:00Z",
            },
            422,
            "expiry must be after",
        ),
        ({"amount": "5", "unit": "USD", "expires_at": "2026-11-20T00:00:00Z"}, 422, "expiry must be after"),
        ({"amount": "5", "unit": "USD", "rollover_max": "0.001"}, 422, "rollover maximum"),
        ({"amount": "5", "unit": "USD", "grant_id": "returned"}, 422, "reserved"),
        ({"amount": "5", "unit": "USD", "extra": 1}, 422, "extra"),
        ({"amount": "5", "unit": "USD", "reason": "nul\u0000"}, 422, "the reason must be plain text"),
        ({"amount": "5", "unit": "USD", "priority": 10**6 + 1}, 422, "priority"),
    ],
)
def test_bad_input_is_a_problem_and_writes_nothing(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, body: dict[str, Any], status: int, fragment: str
) -> None:
    async def scenario(api: AdminApi, writer: dict[str, str]) -> None:
        response = await api.http.post(GRANTS, json=body, headers=writer)
        problem = assert_problem(response, status, "validation-error")
        assert fragment in response.text, problem
        assert await api.services.grants.list("acme") == []
        assert ledger_entries(chdb_db) == []
        assert "credit_grant.create" not in await audit_actions(api, writer)

    run(valkey_fresh, chdb_db, scenario)


def test_unknown_customer_grant_and_scope(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi, writer: dict[str, str]) -> None:
        reader = await api.token("dash", Scope.READ)
        assert_problem(
            await api.http.post("/customers/nobody/credit-grants", json={"amount": "1", "unit": "USD"}, headers=writer),
            404,
            "not-found",
        )
        assert_problem(await api.http.get(f"{GRANTS}/nope", headers=writer), 404, "not-found")
        assert_problem(await api.http.post(f"{GRANTS}/nope/void", headers=writer), 404, "not-found")
        assert_problem(
            await api.http.post(GRANTS, json={"amount": "1", "unit": "USD"}, headers=reader), 403, "insufficient-scope"
        )
        assert (await api.http.get(GRANTS, headers=reader)).status_code == 200
        await api.http.post("/customers", json={"customer_id": "norecord"}, headers=writer)
        no_subscription = await api.http.post(
            "/customers/norecord/credit-grants", json={"amount": "1", "unit": "USD"}, headers=writer
        )
        assert "has no subscription" in assert_problem(no_subscription, 422, "validation-error")["detail"]

    run(valkey_fresh, chdb_db, scenario)


def test_the_plan_currency_is_the_default_unit(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    async def scenario(api: AdminApi, writer: dict[str, str]) -> None:
        created = await api.http.post(GRANTS, json={"amount": "10.25"}, headers=writer)
        assert created.status_code == 201, created.text
        assert created.json()["unit"] == "EUR"
        wrong = await api.http.post(GRANTS, json={"amount": "1", "unit": "USD"}, headers=writer)
        assert "holds grants in EUR, not USD" in assert_problem(wrong, 409, "conflict")["detail"]

    run(valkey_fresh, chdb_db, scenario, catalog=write_catalog(tmp_path))


def test_a_ledger_that_cannot_be_reached_refuses_and_a_failed_write_is_pending(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase
) -> None:
    async def scenario(api: AdminApi, writer: dict[str, str]) -> None:
        warehouse = api.services.warehouse
        real_run = warehouse.run

        async def down(query: Any) -> Any:
            raise WarehouseUnavailable("ClickHouse unreachable: connection refused")

        warehouse.run = down  # type: ignore[method-assign]
        refused = await api.http.post(GRANTS, json={"amount": "1", "unit": "USD", "grant_id": "g1"}, headers=writer)
        assert_problem(refused, 503, "warehouse-unavailable")
        assert await api.services.grants.list("acme") == []

        calls = 0

        async def fails_after_the_probe(query: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise WarehouseUnavailable("ClickHouse unreachable: connection reset")
            return await real_run(query)

        warehouse.run = fails_after_the_probe  # type: ignore[method-assign]
        made = await api.http.post(GRANTS, json={"amount": "1", "unit": "USD", "grant_id": "g1"}, headers=writer)
        assert made.status_code == 201, made.text
        assert made.json()["ledger"] == "pending"
        warehouse.run = real_run  # type: ignore[method-assign]
        assert ledger_entries(chdb_db) == []
        retry = await api.http.post(GRANTS, json={"amount": "1", "unit": "USD", "grant_id": "g1"}, headers=writer)
        assert (retry.status_code, retry.json()["ledger"]) == (200, "recorded")
        assert ledger_entries(chdb_db) == [("grant:g1", "1")]

    run(valkey_fresh, chdb_db, scenario)
