"""Customers' billing details (the buyer on invoices) through the admin API on a real Valkey: create,
read, update field by field, clear; records written before the fields existed load unchanged; bad
fields are 422 problems naming each one."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.test_admin_api import assert_problem
from tests.support.admin_api import AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.customers import BillingDetails, CustomerRecord, RedisCustomerStore
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

Scenario = Callable[[AdminApi], Awaitable[None]]

EMPTY = {"legal_name": None, "address": [], "country": None, "tax_id": None, "email": None, "payment_terms_days": None}
ACME = {
    "legal_name": "Acme Corporation Ltd",
    "address": ["1 Road Runner Way", "Phoenix AZ 85001"],
    "country": "US",
    "tax_id": "US-12-3456789",
    "email": "ap@acme.test",
    "payment_terms_days": 14,
}


def run(valkey: ValkeyServer, chdb_db: ChdbDatabase, scenario: Scenario) -> None:
    async def go() -> None:
        async with admin_api(valkey.url, chdb_db) as api:
            await scenario(api)

    asyncio.run(go())


def test_billing_details_are_created_read_updated_and_cleared(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        created = await api.http.post(
            "/customers", json={"customer_id": "acme", "display_name": "Acme", "billing": ACME}, headers=writer
        )
        assert created.status_code == 201, created.text
        assert created.json()["billing"] == ACME
        assert (await api.http.get("/customers/acme", headers=writer)).json()["billing"] == ACME
        stored = await api.services.customers.get("acme")
        assert stored is not None
        assert stored.billing == BillingDetails(
            "Acme Corporation Ltd", ("1 Road Runner Way", "Phoenix AZ 85001"), "US", "US-12-3456789", "ap@acme.test", 14
        )

        # fields given replace the stored ones, null clears one, the others stay
        patched = await api.http.patch(
            "/customers/acme", json={"billing": {"tax_id": None, "payment_terms_days": 45}}, headers=writer
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["billing"] == {**ACME, "tax_id": None, "payment_terms_days": 45}
        assert patched.json()["display_name"] == "Acme"
        # a change of something else leaves them as they are
        renamed = await api.http.patch("/customers/acme", json={"display_name": "ACME"}, headers=writer)
        assert renamed.json()["billing"] == {**ACME, "tax_id": None, "payment_terms_days": 45}
        # billing: null clears them all
        cleared = await api.http.patch("/customers/acme", json={"billing": None}, headers=writer)
        assert cleared.json()["billing"] == EMPTY

    run(valkey_fresh, chdb_db, scenario)


def test_a_record_written_before_billing_details_loads_unchanged(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase
) -> None:
    """A record as the previous version of the store wrote it (no billing fields) reads as it did, shows
    empty details, and a change of its name adds none."""

    async def scenario(api: AdminApi) -> None:
        redis = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        try:
            old = {
                "customer_id": "old",
                "display_name": "Old Co",
                "email": "",
                "created_at": "2026-01-02T03:04:05.000Z",
            }
            await redis.sadd("tw:customers", "old")
            await redis.hset("tw:customer:{old}", mapping=old)
            store = RedisCustomerStore(redis)
            record = await store.get("old")
            assert record == CustomerRecord("old", "Old Co", None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
            assert record.as_dict() == {**old, "email": None}  # no "billing" key: as before

            writer = await api.token("ops", Scope.WRITE)
            shown = (await api.http.get("/customers/old", headers=writer)).json()
            assert (shown["display_name"], shown["billing"]) == ("Old Co", EMPTY)
            await api.http.patch("/customers/old", json={"display_name": "Old Company"}, headers=writer)
            after = await redis.hgetall("tw:customer:{old}")
            assert after["display_name"] == "Old Company"
            assert not any(value for name, value in after.items() if name.startswith("billing_"))
            again = await store.get("old")
            assert again is not None
            assert again.billing == BillingDetails()
        finally:
            await redis.aclose()

    run(valkey_fresh, chdb_db, scenario)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"country": "Germany"}, "country"),
    ({"country": "de"}, "country"),
    ({"payment_terms_days": -1}, "payment_terms_days"),
    ({"payment_terms_days": 366}, "payment_terms_days"),
    ({"payment_terms_days": "30 days"}, "payment_terms_days"),
    ({"payment_terms_days": True}, "payment_terms_days"),
    ({"address": ["a"] * 7}, "address"),
    ({"address": ["line one\nline two"]}, "address"),
    ({"address": "one line"}, "address"),
    ({"email": "not-an-email"}, "email"),
    ({"tax_id": ""}, "tax_id"),
    ({"legal_name": "   "}, "legal_name"),
    ({"legal_name": "x" * 201}, "legal_name"),
    ({"iban": "DE00"}, "iban"),
]


def test_bad_billing_details_are_422_naming_each_field(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        assert (await api.http.post("/customers", json={"customer_id": "acme"}, headers=writer)).status_code == 201
        for billing, field in BAD:
            for method, path, body in (
                ("POST", "/customers", {"customer_id": "acme2", "billing": billing}),
                ("PATCH", "/customers/acme", {"billing": billing}),
            ):
                response = await api.http.request(method, path, json=body, headers=writer)
                problem = assert_problem(response, 422, "validation-error")
                locations = {tuple(issue["location"][:3]) for issue in problem["errors"]}
                assert ("body", "billing", field) in locations, (billing, problem)
        # every bad field at once, each named
        everything = {"country": "x", "email": "y", "payment_terms_days": 1000}
        response = await api.http.patch("/customers/acme", json={"billing": everything}, headers=writer)
        problem = assert_problem(response, 422, "validation-error")
        assert {tuple(issue["location"]) for issue in problem["errors"]} == {
            ("body", "billing", "country"),
            ("body", "billing", "email"),
            ("body", "billing", "payment_terms_days"),
        }
        # nothing was written
        assert (await api.http.get("/customers/acme", headers=writer)).json()["billing"] == EMPTY
        assert (await api.http.get("/customers/acme2", headers=writer)).status_code == 404

    run(valkey_fresh, chdb_db, scenario)
