"""The Entitlement Management API in-process on a real Valkey and the embedded ClickHouse: credentials
and scopes, customers, API keys (the secret once), subscriptions (plan changes billing prorates,
overrides), usage, invoices, the audit log, pagination, and problem+json for every error."""

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.admin_api import NOW, PROBLEM, AdminApi, admin_api, insert_usage, usage_row, write_catalog
from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import TEST_PEPPER
from tollway.admin.scopes import Scope
from tollway.auth.apikey import parse as parse_key
from tollway.auth.digest import KeyDigester
from tollway.cli.bill import bill
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog

pytestmark = pytest.mark.integration

Scenario = Callable[[AdminApi], Awaitable[None]]


def run(valkey: ValkeyServer, chdb_db: ChdbDatabase, scenario: Scenario, *, catalog: Path | None = None) -> None:
    async def go() -> None:
        async with admin_api(valkey.url, chdb_db, catalog=catalog) as api:
            await scenario(api)

    asyncio.run(go())


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith("/" + slug), body
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.headers["x-request-id"]
    return body


async def new_customer(api: AdminApi, writer: dict[str, str], customer: str = "acme") -> None:
    created = await api.http.post("/customers", json={"customer_id": customer}, headers=writer)
    assert created.status_code == 201, created.text


# --- credentials and scopes ------------------------------------------------------------------------


def test_no_credential_is_401_and_an_unknown_one_too(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        missing = await api.http.get("/customers")
        assert_problem(missing, 401, "missing-credentials")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        bogus = await api.http.get("/customers", headers={"Authorization": "Bearer twadm_" + "x" * 43})
        assert_problem(bogus, 401, "invalid-credentials")
        basic = await api.http.get("/customers", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert_problem(basic, 401, "missing-credentials")
        write = await api.http.post("/customers", json={"customer_id": "acme"})
        assert_problem(write, 401, "missing-credentials")

    run(valkey_fresh, chdb_db, scenario)


def test_a_read_only_credential_reads_but_cannot_write(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        reader = await api.token("dashboards", Scope.READ)
        writer = await api.token("ops", Scope.WRITE)
        await new_customer(api, writer)
        assert (await api.http.get("/customers/acme", headers=reader)).status_code == 200
        refused = [
            await api.http.post("/customers", json={"customer_id": "other"}, headers=reader),
            await api.http.patch("/customers/acme", json={"display_name": "Acme"}, headers=reader),
            await api.http.post("/customers/acme/keys", json={}, headers=reader),
            await api.http.put("/customers/acme/subscription", json={"plan_id": "basic"}, headers=reader),
            await api.http.post("/customers/acme/page-links", json={}, headers=reader),
        ]
        for response in refused:
            body = assert_problem(response, 403, "insufficient-scope")
            assert "admin:write" in body["detail"]
        assert (await api.http.get("/customers/other", headers=reader)).status_code == 404
        assert (await api.http.get("/customers/acme", headers=reader)).json()["display_name"] is None
        assert await api.services.keyring.list("acme") == []
        actions = [e["action"] for e in (await api.http.get("/audit", headers=reader)).json()["items"]]
        assert actions == ["customer.create"]  # only the writer's change

    run(valkey_fresh, chdb_db, scenario)


def test_a_revoked_credential_stops_working(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("temp", Scope.WRITE)
        assert (await api.http.get("/customers", headers=writer)).status_code == 200
        listed = await api.services.credentials.list()
        assert [c.name for c in listed] == ["temp"]
        assert await api.services.credentials.revoke("temp")
        assert_problem(await api.http.get("/customers", headers=writer), 401, "invalid-credentials")

    run(valkey_fresh, chdb_db, scenario)


def test_credentials_are_stored_as_digests_only(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        token = writer["Authorization"].removeprefix("Bearer ")
        redis = api.services.keyring._store._redis  # type: ignore[attr-defined]
        dump = []
        for key in await redis.keys("*"):
            kind = await redis.type(key)
            dump.append(key)
            if kind == "hash":
                dump.append(json.dumps(await redis.hgetall(key)))
            elif kind == "string":
                dump.append(await redis.get(key))
        assert token not in "\n".join(dump)

    run(valkey_fresh, chdb_db, scenario)


# --- customers -------------------------------------------------------------------------------------


def test_customers_create_read_update(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        created = await api.http.post(
            "/customers",
            json={"customer_id": "acme-corp", "display_name": "Acme Corp", "email": "billing@acme.test"},
            headers=writer,
        )
        assert created.status_code == 201
        assert created.headers["location"] == "/customers/acme-corp"
        body = created.json()
        assert body["display_name"] == "Acme Corp"
        assert body["created_at"] == "2026-11-25T12:00:00.000Z"
        assert body["plan_id"] is None
        assert body["api_keys"] == 0
        assert body["links"]["page"] == "/customers/acme-corp/page"

        again = await api.http.post("/customers", json={"customer_id": "acme-corp"}, headers=writer)
        assert_problem(again, 409, "conflict")

        patched = await api.http.patch("/customers/acme-corp", json={"email": None}, headers=writer)
        assert patched.status_code == 200
        assert patched.json()["email"] is None
        assert patched.json()["display_name"] == "Acme Corp"

        assert_problem(await api.http.get("/customers/nobody", headers=writer), 404, "not-found")
        assert_problem(await api.http.patch("/customers/nobody", json={}, headers=writer), 404, "not-found")

    run(valkey_fresh, chdb_db, scenario)


def test_a_customer_known_only_by_its_keys_is_found(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        reader = await api.token("ro", Scope.READ)
        await api.services.keyring.create("cli-made")  # as `tollway keys create` would
        found = await api.http.get("/customers/cli-made", headers=reader)
        assert found.status_code == 200
        assert found.json()["api_keys"] == 1
        assert found.json()["created_at"] is None

    run(valkey_fresh, chdb_db, scenario)


def test_errors_are_problem_documents(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        bad_body = await api.http.post("/customers", json={"customer_id": "-bad", "extra": 1}, headers=writer)
        body = assert_problem(bad_body, 422, "validation-error")
        locations = {tuple(issue["location"]) for issue in body["errors"]}
        assert ("body", "customer_id") in locations
        assert ("body", "extra") in locations

        not_json = await api.http.post(
            "/customers", content=b"{", headers={**writer, "content-type": "application/json"}
        )
        assert_problem(not_json, 422, "validation-error")

        bad_path = await api.http.get("/customers/%20bad/keys", headers=writer)
        assert_problem(bad_path, 422, "validation-error")

        bad_query = await api.http.get("/customers?limit=0", headers=writer)
        assert_problem(bad_query, 422, "validation-error")

        assert_problem(await api.http.get("/no/such/route", headers=writer), 404, "not-found")
        wrong_method = await api.http.delete("/customers", headers=writer)
        assert_problem(wrong_method, 405, "method-not-allowed")
        assert "GET" in wrong_method.headers["allow"]

        mine = await api.http.get("/customers/nobody", headers={**writer, "x-request-id": "req-123"})
        assert assert_problem(mine, 404, "not-found")["instance"] == "req-123"

    run(valkey_fresh, chdb_db, scenario)


def test_redis_away_is_503(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        valkey_fresh.stop()
        try:
            away = await api.http.get("/customers", headers=writer)
            assert_problem(away, 503, "store-unavailable")
            assert away.headers["retry-after"] == "1"
        finally:
            valkey_fresh.start()

    run(valkey_fresh, chdb_db, scenario)


# --- API keys --------------------------------------------------------------------------------------


def test_key_secret_is_returned_once_and_never_listed(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        await new_customer(api, writer)
        created = await api.http.post("/customers/acme/keys", json={"env": "test"}, headers=writer)
        assert created.status_code == 201
        body = created.json()
        secret = body["api_key"]
        assert parse_key(secret).env == "test"
        key = body["key"]
        assert key["state"] == "active"
        assert key["last4"] == secret[-4:]
        assert key["customer_id"] == "acme"
        assert created.headers["location"] == f"/keys/{key['key_id']}"
        # the stored digest is the key's: the edge authenticates it
        found = await api.services.keys.fetch(KeyDigester(TEST_PEPPER.encode()).digest(secret))
        assert found is not None
        assert found.key_id == key["key_id"]

        listed = await api.http.get("/customers/acme/keys", headers=writer)
        one = await api.http.get(f"/keys/{key['key_id']}", headers=writer)
        audit = await api.http.get("/audit", headers=writer)
        for response in (listed, one, audit):
            assert response.status_code == 200
            assert secret not in response.text, (response.request.url, response.text)
            assert '"api_key":' not in response.text
        assert [k["key_id"] for k in listed.json()["items"]] == [key["key_id"]]
        assert one.json() == key

        assert_problem(await api.http.get("/keys/key_0000000000000000", headers=writer), 404, "not-found")
        assert_problem(await api.http.post("/customers/nobody/keys", json={}, headers=writer), 404, "not-found")
        past = await api.http.post("/customers/acme/keys", json={"expires_at": "2020-01-01T00:00:00Z"}, headers=writer)
        assert_problem(past, 422, "validation-error")

    run(valkey_fresh, chdb_db, scenario)


def test_key_rotation_and_revocation(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        await new_customer(api, writer)
        old = (await api.http.post("/customers/acme/keys", json={}, headers=writer)).json()
        old_id = old["key"]["key_id"]

        rotated = await api.http.post(f"/keys/{old_id}/rotate", json={"overlap_seconds": 3600}, headers=writer)
        assert rotated.status_code == 201
        body = rotated.json()
        assert body["api_key"] != old["api_key"]
        assert parse_key(body["api_key"]).env == "live"
        assert body["replaces"]["key_id"] == old_id
        assert body["replaces"]["rotated_to"] == body["key"]["key_id"]
        assert body["replaces"]["expires_at"] == "2026-11-25T13:00:00.000Z"
        assert body["replaces"]["state"] == "active"  # during the overlap

        revoked = await api.http.post(f"/keys/{old_id}/revoke", headers=writer)
        assert revoked.status_code == 200
        assert revoked.json()["state"] == "revoked"
        assert revoked.json()["revoked_at"] == "2026-11-25T12:00:00.000Z"
        again = await api.http.post(f"/keys/{old_id}/revoke", headers=writer)
        assert again.status_code == 200
        assert again.json() == revoked.json()
        assert_problem(await api.http.post(f"/keys/{old_id}/rotate", json={}, headers=writer), 409, "conflict")

        actions = [e["action"] for e in (await api.http.get("/audit", headers=writer)).json()["items"]]
        # newest first; the second revocation changed nothing and is not recorded
        assert actions == ["api_key.revoke", "api_key.rotate", "api_key.create", "api_key.create", "customer.create"]

    run(valkey_fresh, chdb_db, scenario)


# --- subscriptions ---------------------------------------------------------------------------------


def test_subscription_create_plan_change_overrides_delete(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path)

    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        await new_customer(api, writer)
        path = "/customers/acme/subscription"
        assert_problem(await api.http.get(path, headers=writer), 404, "not-found")

        created = await api.http.put(
            path,
            json={
                "plan_id": "basic",
                "started_at": "2026-10-01",
                "timezone": "Europe/Paris",
                "overrides": {"burst": 20},
            },
            headers=writer,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["plan_id"] == "basic"
        assert body["overrides"] == {"burst": 20}
        assert body["started_at"] == "2026-09-30T22:00:00Z"  # midnight in Paris
        assert body["current_period"]["start"] == "2026-10-31T23:00:00Z"
        assert body["plan_changes"] == []

        unknown_plan = await api.http.put(path, json={"plan_id": "gold"}, headers=writer)
        assert "gold" in assert_problem(unknown_plan, 422, "validation-error")["detail"]
        unknown_override = await api.http.put(path + "/overrides", json={"overrides": {"nonesuch": 1}}, headers=writer)
        assert_problem(unknown_override, 422, "validation-error")
        future = await api.http.post(
            path + "/plan-changes", json={"plan_id": "pro", "effective": "2026-12-01T00:00:00Z"}, headers=writer
        )
        assert_problem(future, 422, "validation-error")
        same = await api.http.post(path + "/plan-changes", json={"plan_id": "basic"}, headers=writer)
        assert_problem(same, 409, "conflict")

        changed = await api.http.post(
            path + "/plan-changes", json={"plan_id": "pro", "effective": "2026-11-16T00:00:00+01:00"}, headers=writer
        )
        assert changed.status_code == 201, changed.text
        assert changed.json()["plan_id"] == "pro"
        assert changed.json()["plan_changes"] == [{"at": "2026-11-15T23:00:00Z", "from": "basic", "to": "pro"}]
        assert changed.json()["overrides"] == {"burst": 20}
        # recorded with changed_to: billing sees two parts in November (Paris)
        stored = await api.services.subscriptions.get("acme")
        assert stored is not None
        period = stored.current_period(NOW)
        assert [(t.plan_id, t.start, t.end) for t in stored.terms(period.start, period.end)] == [
            ("basic", datetime(2026, 10, 31, 23, tzinfo=UTC), datetime(2026, 11, 15, 23, tzinfo=UTC)),
            ("pro", datetime(2026, 11, 15, 23, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC)),
        ]
        earlier = await api.http.post(
            path + "/plan-changes", json={"plan_id": "basic", "effective": "2026-11-10T00:00:00Z"}, headers=writer
        )
        assert_problem(earlier, 422, "validation-error")  # before the last change

        overrides = await api.http.put(path + "/overrides", json={"overrides": {"monthly": 5000}}, headers=writer)
        assert overrides.status_code == 200
        assert overrides.json()["overrides"] == {"monthly": 5000}

        assert (await api.http.delete(path, headers=writer)).status_code == 204
        assert_problem(await api.http.get(path, headers=writer), 404, "not-found")
        assert_problem(await api.http.delete(path, headers=writer), 404, "not-found")

        entries = (await api.http.get("/audit", headers=writer)).json()["items"]
        assert [e["action"] for e in entries] == [
            "subscription.delete",
            "subscription.overrides",
            "subscription.plan_change",
            "subscription.create",
            "customer.create",
        ]
        delete, overrides_entry, change, create = entries[:4]
        assert delete["after"] is None
        assert delete["before"]["plan_id"] == "pro"
        assert overrides_entry["before"]["overrides"] == {"burst": 20}
        assert overrides_entry["after"]["overrides"] == {"monthly": 5000}
        assert change["before"]["plan_id"] == "basic"
        assert change["after"]["plan_id"] == "pro"
        assert create["before"] is None
        assert create["after"]["timezone"] == "Europe/Paris"

    run(valkey_fresh, chdb_db, scenario, catalog=catalog)


def test_subscription_needs_a_known_customer(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        put = await api.http.put("/customers/ghost/subscription", json={"plan_id": "basic"}, headers=writer)
        assert_problem(put, 404, "not-found")
        await new_customer(api, writer, "real")
        bad_time = await api.http.put(
            "/customers/real/subscription", json={"plan_id": "basic", "started_at": "yesterday"}, headers=writer
        )
        assert_problem(bad_time, 422, "validation-error")
        bad_zone = await api.http.put(
            "/customers/real/subscription", json={"plan_id": "basic", "timezone": "Mars/Olympus"}, headers=writer
        )
        assert_problem(bad_zone, 422, "validation-error")

    run(valkey_fresh, chdb_db, scenario)


# --- audit -----------------------------------------------------------------------------------------


def test_audit_entries_say_who_what_when_and_hold_no_secret(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        alice = await api.token("alice", Scope.WRITE)
        bob = await api.token("bob", Scope.WRITE)
        await new_customer(api, alice)
        issued = (await api.http.post("/customers/acme/keys", json={}, headers=alice)).json()
        api.clock.advance(timedelta(minutes=5))
        rotated = (await api.http.post(f"/keys/{issued['key']['key_id']}/rotate", json={}, headers=bob)).json()
        link = await api.http.post("/customers/acme/page-links", json={"ttl_seconds": 600}, headers=bob)
        assert link.status_code == 201

        entries = (await api.http.get("/audit", headers=alice)).json()["items"]
        assert [(e["actor"], e["action"]) for e in entries] == [
            ("bob", "page_link.create"),
            ("bob", "api_key.rotate"),
            ("bob", "api_key.create"),
            ("alice", "api_key.create"),
            ("alice", "customer.create"),
        ]
        assert entries[-1]["at"] == "2026-11-25T12:00:00.000Z"
        assert entries[0]["at"] == "2026-11-25T12:05:00.000Z"
        assert all(e["customer_id"] == "acme" and re.fullmatch(r"[0-9a-f]{32}", e["request_id"]) for e in entries)
        rotate = entries[1]
        assert rotate["resource_type"] == "api_key"
        assert rotate["resource_id"] == issued["key"]["key_id"]
        assert rotate["before"]["expires_at"] is None
        assert rotate["after"]["expires_at"] == "2026-11-26T12:05:00.000Z"
        assert rotate["after"]["rotated_to"] == rotated["key"]["key_id"]
        assert entries[0]["after"] == {"expires_at": "2026-11-25T12:15:00.000Z"}

        # nothing secret in the log, as served or as stored
        redis = api.services.keyring._store._redis  # type: ignore[attr-defined]
        stored = json.dumps(await redis.xrange("tw:admin-audit"))
        token = link.json()["url"].split("token=")[1]
        digester = KeyDigester(TEST_PEPPER.encode())
        for text in ((await api.http.get("/audit", headers=alice)).text, stored):
            for secret in (issued["api_key"], rotated["api_key"], token):
                assert secret not in text
                assert digester.digest(secret) not in text
            assert alice["Authorization"].split()[1] not in text

    run(valkey_fresh, chdb_db, scenario)


# --- pagination ------------------------------------------------------------------------------------


async def collect(api: AdminApi, path: str, headers: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    url: str | None = path
    while url is not None:
        response = await api.http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        pages += 1
        url = body["next"]
    return items, pages


def test_pagination_follows_next_links_to_the_end(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        names = [f"cust-{n:02d}" for n in range(7)]
        for name in reversed(names):
            await new_customer(api, writer, name)
        customers, pages = await collect(api, "/customers?limit=3", writer)
        assert [c["customer_id"] for c in customers] == names
        assert pages == 3

        for _ in range(5):
            await api.http.post("/customers/cust-00/keys", json={}, headers=writer)
            api.clock.advance(1)
        keys, pages = await collect(api, "/customers/cust-00/keys?limit=2", writer)
        assert len({k["key_id"] for k in keys}) == 5
        assert pages == 3
        assert [k["created_at"] for k in keys] == sorted(k["created_at"] for k in keys)

        entries, pages = await collect(api, "/audit?limit=4", writer)
        assert len(entries) == 12
        assert pages == 3
        ids = [e["audit_id"] for e in entries]
        assert len(set(ids)) == 12
        assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")), reverse=True)

        first = (await api.http.get("/customers?limit=3", headers=writer)).json()
        assert first["next"].startswith("/customers?limit=3&cursor=")
        assert_problem(await api.http.get("/customers?cursor=nonsense", headers=writer), 400, "invalid-cursor")
        assert_problem(await api.http.get("/audit?cursor=WyJ4Il0", headers=writer), 400, "invalid-cursor")

    run(valkey_fresh, chdb_db, scenario)


# --- usage and invoices ----------------------------------------------------------------------------

USAGE = (
    usage_row("u1", "2026-11-02 09:00:00", "acme", {"requests": 1, "egress": 500}, version=1),
    usage_row("u1", "2026-11-02 09:00:00", "acme", {"requests": 1, "egress": 500}),  # replayed: once
    usage_row("u2", "2026-11-02 10:00:00", "acme", {"requests": 1, "egress": 700}),
    usage_row("u3", "2026-11-02 11:00:00", "acme", {"requests": 1}, feature="search"),
    usage_row("u4", "2026-11-03 23:30:00", "acme", {"requests": 1, "egress": 1}),  # Nov 4 in Paris
    usage_row("u5", "2026-11-03 12:00:00", "acme", {"requests": 1}, status=429, outcome="refused", version=1),
    usage_row("g1", "2026-11-02 09:00:00", "globex", {"requests": 1, "egress": 9}),
    usage_row("o1", "2026-10-31 23:59:59", "acme", {"requests": 1}),  # before the range
)


def test_usage_per_day_feature_and_meter(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    insert_usage(chdb_db, USAGE)

    async def scenario(api: AdminApi) -> None:
        reader = await api.token("ro", Scope.READ)
        writer = await api.token("ops", Scope.WRITE)
        await new_customer(api, writer)
        url = "/customers/acme/usage?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z"
        rows, _ = await collect(api, url, reader)
        assert rows == [
            {"day": "2026-11-02", "feature": "api", "meter": "egress", "requests": 2, "quantity": "1200", "refused": 0},
            {"day": "2026-11-02", "feature": "api", "meter": "requests", "requests": 2, "quantity": "2", "refused": 0},
            {
                "day": "2026-11-02",
                "feature": "search",
                "meter": "requests",
                "requests": 1,
                "quantity": "1",
                "refused": 0,
            },
            {"day": "2026-11-03", "feature": "api", "meter": "egress", "requests": 1, "quantity": "1", "refused": 0},
            {"day": "2026-11-03", "feature": "api", "meter": "requests", "requests": 1, "quantity": "1", "refused": 1},
        ]
        paged, pages = await collect(api, url + "&limit=2", reader)
        assert paged == rows
        assert pages == 3
        paris, _ = await collect(api, url + "&timezone=Europe/Paris&meter=egress", reader)
        assert [(r["day"], r["quantity"]) for r in paris] == [("2026-11-02", "1200"), ("2026-11-04", "1")]
        search, _ = await collect(api, url + "&feature=search", reader)
        assert [r["meter"] for r in search] == ["requests"]
        default = (await api.http.get("/customers/acme/usage", headers=reader)).json()  # last 30 days
        assert sum(int(r["requests"]) for r in default["items"] if r["meter"] == "requests") == 5

        backwards = await api.http.get(
            "/customers/acme/usage?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", headers=reader
        )
        assert_problem(backwards, 422, "validation-error")
        naive = await api.http.get("/customers/acme/usage?from=2026-11-02T00:00:00", headers=reader)
        assert_problem(naive, 422, "validation-error")
        too_long = await api.http.get(
            "/customers/acme/usage?from=2020-01-01T00:00:00Z&to=2026-11-01T00:00:00Z", headers=reader
        )
        assert_problem(too_long, 422, "validation-error")
        assert_problem(
            await api.http.get("/customers/acme/usage?timezone=Nowhere", headers=reader), 422, "validation-error"
        )
        assert_problem(await api.http.get("/customers/nobody/usage", headers=reader), 404, "not-found")

    run(valkey_fresh, chdb_db, scenario)


def test_invoices_list_json_and_html(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path) -> None:
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
        assert acme["total"] == "12.00"  # 10.00 + 4 billable requests × 0.50 (the refusal never bills)

        listed = await api.http.get("/customers/acme/invoices", headers=reader)
        assert listed.status_code == 200
        [summary] = listed.json()["items"]
        assert summary["invoice_id"] == acme["invoice_id"]
        assert summary["total"] == "12.00"
        assert summary["currency"] == "EUR"
        assert summary["status"] == "draft"
        assert summary["period"] == "2026-11"
        assert summary["links"]["html"] == f"/customers/acme/invoices/{acme['invoice_id']}/html"

        document = await api.http.get(summary["links"]["json_document"], headers=reader)
        assert document.status_code == 200
        assert document.json() == acme
        page = await api.http.get(summary["links"]["html"], headers=reader)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert acme["invoice_id"] in page.text
        assert "12.00" in page.text

        other = by_customer["globex"]["invoice_id"]
        assert_problem(await api.http.get(f"/customers/acme/invoices/{other}", headers=reader), 404, "not-found")
        missing = "in_" + "0" * 24
        assert_problem(await api.http.get(f"/customers/acme/invoices/{missing}/html", headers=reader), 404, "not-found")
        assert_problem(await api.http.get("/customers/acme/invoices/in_bad", headers=reader), 422, "validation-error")

    run(valkey_fresh, chdb_db, scenario)


def test_openapi_document_is_served(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        document = (await api.http.get("/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        assert "Problem" in document["components"]["schemas"]
        assert document["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
        post = document["paths"]["/customers/{customer_id}/keys"]["post"]
        assert set(post["responses"]) >= {"201", "401", "403", "404", "422"}
        assert PROBLEM in post["responses"]["422"]["content"]
        assert "HTTPValidationError" not in json.dumps(document)

    run(valkey_fresh, chdb_db, scenario)


# --- the command -----------------------------------------------------------------------------------


def test_admin_command_creates_credentials_and_serves(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.support.tollway_cli import run_cli
    from tollway.harness.ports import free_ports

    created = run_cli(
        valkey_fresh.url, "admin", "credentials", "create", "--name", "ops", "--scope", "admin:write", "--json"
    )
    assert created.code == 0, created.stderr
    token = created.json()["token"]
    assert created.json()["scope"] == "admin:write"
    twice = run_cli(valkey_fresh.url, "admin", "credentials", "create", "--name", "ops", "--scope", "admin:read")
    assert twice.code == 1
    assert "exists already" in twice.stderr
    listed = run_cli(valkey_fresh.url, "admin", "credentials", "list", "--json")
    assert [c["name"] for c in listed.json()] == ["ops"]
    assert token not in listed.stdout

    [port] = free_ports(1)
    env = {
        **os.environ,
        "TOLLWAY_REDIS_URL": valkey_fresh.url,
        "TOLLWAY_PEPPER": TEST_PEPPER,
        "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
    }
    log = (tmp_path / "admin.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tollway", "admin", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "admin.log").read_text()
                assert time.monotonic() < deadline, "tollway admin did not start"
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(base + "/customers", json={"customer_id": "acme"}, headers=auth).status_code == 201
        assert httpx.get(base + "/customers/acme/usage", headers=auth).status_code == 200  # chdb migrated
        assert httpx.get(base + "/customers").status_code == 401

        revoked = run_cli(valkey_fresh.url, "admin", "credentials", "revoke", "ops")
        assert revoked.code == 0
        assert httpx.get(base + "/customers", headers=auth).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
    output = (tmp_path / "admin.log").read_text()
    assert token not in output
    assert "GET /customers/acme/usage 200" in output  # the access log: method, path, status
