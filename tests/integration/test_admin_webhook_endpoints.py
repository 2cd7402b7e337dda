"""Webhook endpoints through the Entitlement Management API (in-process, real Valkey): the secret shown
once and verifiable with ``standardwebhooks``, never listed or audited; list pages; update; delete;
rotation with its overlap; scopes; and an RFC 9457 problem for every bad input (URLs that are malformed,
http, private or loopback; unknown event types; oversized filters; unknown ids)."""

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest
import standardwebhooks

from tests.integration.test_admin_api import assert_problem, run
from tests.support.admin_api import PROBLEM, AdminApi
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.endpoint_store import MAX_ENDPOINTS
from tollway.notifications.endpoints import signature_header
from tollway.notifications.events import EVENT_TYPES

pytestmark = pytest.mark.integration

URL = "https://hooks.example.com/tollway"
BASE = "/webhooks/endpoints"


def verifies(secret: str, signing: list[str]) -> bool:
    """Whether a delivery signed with ``signing`` (the store's live secrets) verifies with ``secret``."""
    body, stamp = b'{"type":"webhook.test","data":{}}', int(time.time())
    headers = {
        "webhook-id": "evt_00000000000000000000000000000000",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header(signing, "evt_00000000000000000000000000000000", stamp, body),
    }
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


async def live_secrets(api: AdminApi, endpoint_id: str) -> list[str]:
    store = api.services.webhook_endpoints
    return (await store.require(endpoint_id)).signing_secrets(store.box, api.clock.now())


def test_create_shows_the_secret_once_and_never_again(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        created = await api.http.post(
            BASE,
            json={"url": URL, "description": "CRM", "event_types": ["quota.threshold_crossed", "balance.low"]},
            headers=writer,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        secret = body["secret"]
        endpoint = body["endpoint"]
        assert secret.startswith("whsec_")
        assert endpoint["endpoint_id"].startswith("ep_")
        assert endpoint["event_types"] == ["quota.threshold_crossed", "balance.low"]
        assert endpoint["state"] == "enabled"
        assert endpoint["created_at"] == "2026-11-25T12:00:00.000Z"
        assert endpoint["previous_secret_expires_at"] is None
        assert created.headers["location"] == f"{BASE}/{endpoint['endpoint_id']}"
        # The secret shown is the one deliveries are signed with.
        assert verifies(secret, await live_secrets(api, endpoint["endpoint_id"]))

        one = await api.http.get(f"{BASE}/{endpoint['endpoint_id']}", headers=writer)
        listed = await api.http.get(BASE, headers=writer)
        audit = await api.http.get("/audit", headers=writer)
        for response in (one, listed, audit):
            assert response.status_code == 200
            assert secret not in response.text
            assert secret.removeprefix("whsec_") not in response.text
            assert '"secret":' not in response.text
        assert one.json() == endpoint
        assert listed.json()["items"] == [endpoint]
        entry = audit.json()["items"][0]
        assert (entry["actor"], entry["action"], entry["resource_type"], entry["resource_id"]) == (
            "ops",
            "webhook_endpoint.create",
            "webhook_endpoint",
            endpoint["endpoint_id"],
        )
        assert entry["after"]["url"] == URL

    run(valkey_fresh, chdb_db, scenario)


def test_update_delete_and_their_audit(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        endpoint = (await api.http.post(BASE, json={"url": URL, "description": "CRM"}, headers=writer)).json()[
            "endpoint"
        ]
        path = f"{BASE}/{endpoint['endpoint_id']}"
        api.clock.advance(timedelta(minutes=1))
        patched = await api.http.patch(
            path, json={"event_types": ["key.revoked"], "description": None, "enabled": False}, headers=writer
        )
        assert patched.status_code == 200, patched.text
        after = patched.json()
        assert (after["event_types"], after["description"], after["enabled"], after["state"]) == (
            ["key.revoked"],
            "",
            False,
            "disabled",
        )
        assert after["disabled_at"] == after["updated_at"] == "2026-11-25T12:01:00.000Z"
        assert after["url"] == URL
        again = await api.http.patch(path, json={"enabled": True}, headers=writer)
        assert again.json()["state"] == "enabled"
        assert again.json()["disabled_at"] is None
        unchanged = await api.http.patch(path, json={}, headers=writer)
        assert unchanged.json() == again.json()

        deleted = await api.http.delete(path, headers=writer)
        assert deleted.status_code == 204
        assert_problem(await api.http.get(path, headers=writer), 404, "not-found")
        assert_problem(await api.http.delete(path, headers=writer), 404, "not-found")
        assert_problem(await api.http.patch(path, json={"enabled": True}, headers=writer), 404, "not-found")
        assert_problem(await api.http.post(f"{path}/rotate-secret", json={}, headers=writer), 404, "not-found")

        actions = [e["action"] for e in (await api.http.get("/audit", headers=writer)).json()["items"]]
        assert actions == [
            "webhook_endpoint.delete",
            "webhook_endpoint.update",
            "webhook_endpoint.update",
            "webhook_endpoint.create",
        ]

    run(valkey_fresh, chdb_db, scenario)


def test_rotation_shows_the_new_secret_once_and_both_sign_for_the_overlap(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        first = (await api.http.post(BASE, json={"url": URL}, headers=writer)).json()
        endpoint_id = first["endpoint"]["endpoint_id"]
        rotated = await api.http.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=writer)  # no body: 24 h
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()
        assert second["secret"] != first["secret"]
        assert second["endpoint"]["previous_secret_expires_at"] == "2026-11-26T12:00:00.000Z"
        signing = await live_secrets(api, endpoint_id)
        assert verifies(first["secret"], signing)
        assert verifies(second["secret"], signing)

        api.clock.advance(timedelta(hours=24))
        signing = await live_secrets(api, endpoint_id)
        assert not verifies(first["secret"], signing)
        assert verifies(second["secret"], signing)

        third = await api.http.post(f"{BASE}/{endpoint_id}/rotate-secret", json={"overlap_seconds": 0}, headers=writer)
        assert third.json()["endpoint"]["previous_secret_expires_at"] is None
        assert not verifies(second["secret"], await live_secrets(api, endpoint_id))
        too_long = await api.http.post(
            f"{BASE}/{endpoint_id}/rotate-secret", json={"overlap_seconds": 7 * 86400 + 1}, headers=writer
        )
        assert_problem(too_long, 422, "validation-error")

        audit = await api.http.get("/audit", headers=writer)
        assert [e["action"] for e in audit.json()["items"]][:2] == [
            "webhook_endpoint.rotate_secret",
            "webhook_endpoint.rotate_secret",
        ]
        for shown in (first, second, third.json()):
            assert shown["secret"] not in audit.text
        assert first["secret"] not in json.dumps(await api.services.audit.newest_first(50), default=str)

    run(valkey_fresh, chdb_db, scenario)


BAD_URLS = [
    ("http://hooks.example.com/", "https"),
    ("https://10.1.2.3/hook", "private"),
    ("https://127.0.0.1:8080/", "loopback"),
    ("https://localhost/", "loopback"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://[::1]/", "loopback"),
    ("https://[fd00::1]/", "private"),
    ("https://100.64.0.1/", "CGNAT"),
    ("https://user:pw@hooks.example.com/", "user name"),
    ("https://hooks.example.com/#x", "fragment"),
    ("hooks.example.com/hook", "absolute"),
    ("https://127.1/", "a.b.c.d"),
    ("https://hooks.example.com:99999/", "port"),
    ("https://hooks.example.com/" + "a" * 3000, "at most"),
    ("", "at least 1"),
]


def test_every_bad_input_is_a_problem(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        for url, says in BAD_URLS:
            body = assert_problem(await api.http.post(BASE, json={"url": url}, headers=writer), 422, "validation-error")
            assert says in json.dumps(body), (url, body)
            assert ["body", "url"] in [issue["location"][:2] for issue in body["errors"]]
        bad_bodies: list[Any] = [
            {"url": URL, "event_types": ["quota.crossed"]},
            {"url": URL, "event_types": [*EVENT_TYPES, "key.created"]},
            {"url": URL, "event_types": ["x" * 100_000]},
            {"url": URL, "event_types": "key.created"},
            {"url": URL, "description": "x" * 501},
            {"url": URL, "extra": 1},
            {"url": 42},
            {},
            [URL],
        ]
        for bad in bad_bodies:
            assert_problem(await api.http.post(BASE, json=bad, headers=writer), 422, "validation-error")
        not_json = await api.http.post(BASE, content=b"{", headers={**writer, "content-type": "application/json"})
        assert_problem(not_json, 422, "validation-error")
        assert await api.services.webhook_endpoints.all() == []  # nothing was written

        endpoint_id = (await api.http.post(BASE, json={"url": URL}, headers=writer)).json()["endpoint"]["endpoint_id"]
        path = f"{BASE}/{endpoint_id}"
        for patch in ({"url": None}, {"event_types": None}, {"enabled": None}, {"url": "https://10.0.0.1/"}):
            body = assert_problem(await api.http.patch(path, json=patch, headers=writer), 422, "validation-error")
            assert body["errors"][0]["location"][:2] == ["body", next(iter(patch))]
        assert (await api.http.get(path, headers=writer)).json()["url"] == URL

        for bad_id in ("ep_123", "nope", "ep_" + "G" * 24):
            assert_problem(await api.http.get(f"{BASE}/{bad_id}", headers=writer), 422, "validation-error")
        assert_problem(await api.http.get(f"{BASE}/ep_{'0' * 24}", headers=writer), 404, "not-found")
        assert_problem(await api.http.get(f"{BASE}?cursor=bm9wZQ", headers=writer), 400, "invalid-cursor")
        assert_problem(await api.http.get(f"{BASE}?limit=0", headers=writer), 422, "validation-error")
        assert_problem(await api.http.put(path, json={}, headers=writer), 405, "method-not-allowed")

    run(valkey_fresh, chdb_db, scenario)


def test_the_endpoint_limit_is_a_conflict(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        store = api.services.webhook_endpoints
        await asyncio.gather(*(store.create(f"https://h{n}.example.com/") for n in range(MAX_ENDPOINTS)))
        body = assert_problem(await api.http.post(BASE, json={"url": URL}, headers=writer), 409, "conflict")
        assert str(MAX_ENDPOINTS) in body["detail"]

    run(valkey_fresh, chdb_db, scenario)


def test_reading_needs_read_scope_and_changes_write_scope(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        reader = await api.token("dashboards", Scope.READ)
        writer = await api.token("ops", Scope.WRITE)
        endpoint_id = (await api.http.post(BASE, json={"url": URL}, headers=writer)).json()["endpoint"]["endpoint_id"]
        path = f"{BASE}/{endpoint_id}"
        assert (await api.http.get(BASE, headers=reader)).status_code == 200
        assert (await api.http.get(path, headers=reader)).status_code == 200
        for response in (
            await api.http.post(BASE, json={"url": URL}, headers=reader),
            await api.http.patch(path, json={"enabled": False}, headers=reader),
            await api.http.delete(path, headers=reader),
            await api.http.post(f"{path}/rotate-secret", json={}, headers=reader),
        ):
            assert "admin:write" in assert_problem(response, 403, "insufficient-scope")["detail"]
        assert_problem(await api.http.get(BASE), 401, "missing-credentials")
        assert (await api.http.get(path, headers=reader)).json()["enabled"] is True

    run(valkey_fresh, chdb_db, scenario)


def test_the_list_is_paginated_in_creation_order(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        made = []
        for n in range(5):
            created = await api.http.post(BASE, json={"url": f"https://h{n}.example.com/"}, headers=writer)
            made.append(created.json()["endpoint"]["endpoint_id"])
            api.clock.advance(timedelta(seconds=1))
        seen: list[str] = []
        link: str | None = f"{BASE}?limit=2"
        pages = 0
        while link is not None:
            page = (await api.http.get(link, headers=writer)).json()
            seen.extend(item["endpoint_id"] for item in page["items"])
            link = page["next"]
            pages += 1
        assert seen == made
        assert pages == 3

    run(valkey_fresh, chdb_db, scenario)


def test_openapi_documents_the_webhook_endpoints(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        document = (await api.http.get("/openapi.json")).json()
        paths = document["paths"]
        assert set(paths[BASE]) == {"get", "post"}
        assert set(paths[f"{BASE}/{{endpoint_id}}"]) == {"get", "patch", "delete"}
        create = paths[BASE]["post"]
        assert set(create["responses"]) >= {"201", "401", "403", "409", "422"}
        assert PROBLEM in create["responses"]["422"]["content"]
        schema = document["components"]["schemas"]["EndpointCreate"]["properties"]["event_types"]
        assert schema["maxItems"] == len(EVENT_TYPES)
        assert "post" in paths[f"{BASE}/{{endpoint_id}}/rotate-secret"]

    run(valkey_fresh, chdb_db, scenario)
