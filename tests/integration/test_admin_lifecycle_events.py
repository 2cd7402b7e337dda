"""The management API's changes emit their lifecycle events once (docs/notifications.md): keys created,
rotated and revoked, a subscription created and its plan changed."""

import asyncio

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.support.admin_api import admin_api
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event

pytestmark = pytest.mark.integration


async def outbox(url: str, customer: str) -> list[Event]:
    redis: AsyncRedis[str] = AsyncRedis.from_url(url, decode_responses=True)
    try:
        return [Event.from_stream(f) for _, f in await redis.xrange(keys.stream_key("tw:", customer))]
    finally:
        await redis.aclose()


def test_admin_api_changes_emit_one_event_each(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db) as api:
            writer = await api.token("ops", Scope.WRITE)
            assert (await api.http.post("/customers", json={"customer_id": "acme"}, headers=writer)).status_code == 201
            created = await api.http.post("/customers/acme/keys", json={"env": "test"}, headers=writer)
            key_id = created.json()["key"]["key_id"]
            rotated = await api.http.post(f"/keys/{key_id}/rotate", json={"overlap_seconds": 60}, headers=writer)
            successor = rotated.json()["key"]["key_id"]
            for _ in range(2):
                assert (await api.http.post(f"/keys/{key_id}/revoke", headers=writer)).status_code == 200
            path = "/customers/acme/subscription"
            for _ in range(2):
                put = await api.http.put(path, json={"plan_id": "basic", "started_at": "2026-10-01"}, headers=writer)
                assert put.status_code in (200, 201), put.text
            change = {"plan_id": "pro", "effective": "2026-11-20T00:00:00Z"}
            assert (await api.http.post(path + "/plan-changes", json=change, headers=writer)).status_code == 201
            found = await outbox(valkey_fresh.url, "acme")
            assert [(e.type, e.data.get("key_id") or e.data.get("plan")) for e in found] == [
                ("key.created", key_id),
                ("key.created", successor),
                ("key.revoked", key_id),
                ("subscription.changed", "basic"),
                ("subscription.changed", "pro"),
            ]
            assert found[4].data == {
                "plan": "pro",
                "previous_plan": "basic",
                "effective_at": "2026-11-20T00:00:00.000Z",
            }

    asyncio.run(go())
