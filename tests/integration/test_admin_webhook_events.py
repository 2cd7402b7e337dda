"""The webhook events routes of the Entitlement Management API on a real Valkey and the embedded ClickHouse:
events with filters and keyset pages, one event, attempts per endpoint, replay of one event and of a time
range (re-queued with the same id), a test event, and problem+json for bad input."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.test_admin_api import assert_problem
from tests.support.admin_api import AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event, event_id
from tollway.notifications.history import table_rows
from tollway.notifications.queue import event_row
from tollway.warehouse.connection import insert_json_rows

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000  # 2026-09-21T…Z


def events() -> list[Event]:
    return [
        Event(
            event_id("key.created" if n % 2 else "key.revoked", n),
            "key.created" if n % 2 else "key.revoked",
            T0 + n * 1000,
            "acme" if n < 8 else "other",
            {"key_id": f"key_{n:016x}"},
        )
        for n in range(10)
    ]


def load(chdb_db: ChdbDatabase, rows: list[str]) -> None:
    client, database = chdb_db
    for table, data in table_rows(rows).items():
        insert_json_rows(client, database, table, data)


def attempt(ep: str, event: Event, n: int, outcome: str, status: int) -> str:
    row = {"t": "webhook_deliveries", "event_id": event.id, "endpoint_id": ep, "attempt_id": f"a{n}"}
    row |= {"attempt": n, "ts": event.ts_ms + n, "status": status, "outcome": outcome, "duration_ms": 3, "error": ""}
    return json.dumps(row)


def test_events_attempts_replay_and_test(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase) -> None:
    async def scenario(api: AdminApi) -> None:
        reader = await api.token("r", Scope.READ)
        writer = await api.token("w", Scope.WRITE)
        evs = events()
        assert api.services.webhooks is not None
        redis = api.services.webhooks.queue._redis
        store = api.services.webhook_endpoints
        ep = {
            "a": (await store.create("https://a.example/hook")).endpoint.id,
            "b": (await store.create("https://b.example/hook", event_types=["key.created"])).endpoint.id,
            "off": (await store.create("https://c.example/hook", enabled=False)).endpoint.id,
        }
        load(
            chdb_db,
            [event_row(e) for e in evs]
            + [attempt(ep["a"], evs[0], 1, "retry", 500), attempt(ep["a"], evs[0], 2, "delivered", 200)],
        )

        page = await api.http.get("/webhooks/events", params={"customer_id": "acme", "limit": 3}, headers=reader)
        assert page.status_code == 200, page.text
        seen = [item["id"] for item in page.json()["items"]]
        while page.json()["next"]:
            page = await api.http.get(page.json()["next"], headers=reader)
            seen += [item["id"] for item in page.json()["items"]]
        assert seen == [e.id for e in reversed(evs[:8])]

        typed = await api.http.get(
            "/webhooks/events",
            params={"type": "key.created", "since": "2026-09-21T00:00:00Z"},
            headers=reader,
        )
        assert [i["id"] for i in typed.json()["items"]] == [e.id for e in reversed(evs) if e.type == "key.created"]
        one = await api.http.get(f"/webhooks/events/{evs[1].id}", headers=reader)
        assert one.json()["data"] == {"customer_id": "acme", "key_id": f"key_{1:016x}"}
        assert one.json()["timestamp"].endswith("Z")

        tried = await api.http.get(f"/webhooks/endpoints/{ep['a']}/attempts", headers=reader)
        assert [(a["attempt"], a["outcome"], a["status"]) for a in tried.json()["items"]] == [
            (2, "delivered", 200),
            (1, "retry", 500),
        ]

        # replay one event: its endpoints (filters apply, disabled ones skipped), the same id
        replayed = await api.http.post(f"/webhooks/events/{evs[1].id}/replay", headers=writer)
        assert replayed.status_code == 202, replayed.text
        assert replayed.json() == {"events": 1, "deliveries_queued": 2}
        due = set(await redis.zrange(keys.due_key("tw:"), 0, -1))
        assert due == {f"{ep['a']}|{evs[1].id}", f"{ep['b']}|{evs[1].id}"}
        again = await api.http.post(
            f"/webhooks/events/{evs[1].id}/replay", json={"endpoint_id": ep["a"]}, headers=writer
        )
        assert again.json()["deliveries_queued"] == 0  # already waiting: not queued twice
        # a time range
        ranged = await api.http.post(
            "/webhooks/replays",
            json={"since": "2026-09-21T00:00:00Z", "until": "2100-01-01T00:00:00Z", "customer_id": "other"},
            headers=writer,
        )
        assert ranged.json() == {"events": 2, "deliveries_queued": 3}  # evs[8] (revoked) to ep_a; evs[9] to both

        sent = await api.http.post(f"/webhooks/endpoints/{ep['b']}/test", headers=writer)
        assert sent.status_code == 202, sent.text
        assert f"{ep['b']}|{sent.json()['event_id']}" in set(await redis.zrange(keys.due_key("tw:"), 0, -1))

        # bad input: problems
        assert_problem(
            await api.http.get("/webhooks/events", params={"type": "nope"}, headers=reader), 422, "validation-error"
        )
        assert_problem(
            await api.http.get("/webhooks/events", params={"since": "yesterday"}, headers=reader),
            422,
            "validation-error",
        )
        assert_problem(
            await api.http.get("/webhooks/events", params={"cursor": "zzz"}, headers=reader), 400, "invalid-cursor"
        )
        assert_problem(await api.http.get("/webhooks/events/evt_nothex", headers=reader), 422, "validation-error")
        assert_problem(await api.http.get(f"/webhooks/events/evt_{'0' * 32}", headers=reader), 404, "not-found")
        assert_problem(
            await api.http.post(f"/webhooks/events/{evs[1].id}/replay", headers=reader), 403, "insufficient-scope"
        )
        assert_problem(
            await api.http.post(
                f"/webhooks/events/{evs[1].id}/replay", json={"endpoint_id": "ep_none"}, headers=writer
            ),
            404,
            "not-found",
        )
        assert_problem(await api.http.post(f"/webhooks/endpoints/{ep['off']}/test", headers=writer), 409, "conflict")
        assert_problem(await api.http.post("/webhooks/endpoints/ep_none/test", headers=writer), 404, "not-found")
        assert_problem(
            await api.http.post(
                "/webhooks/replays",
                json={"since": "2026-09-22T00:00:00Z", "until": "2026-09-21T00:00:00Z"},
                headers=writer,
            ),
            422,
            "validation-error",
        )
        assert_problem(
            await api.http.post(
                "/webhooks/replays",
                json={"since": "2026-09-21T00:00:00Z", "until": "2026-09-22T00:00:00Z", "types": ["x"]},
                headers=writer,
            ),
            422,
            "validation-error",
        )
        assert_problem(
            await api.http.post(
                "/webhooks/replays",
                json={"since": "2026-09-21T00:00:00Z", "until": "2026-09-22T00:00:00Z", "extra": 1},
                headers=writer,
            ),
            422,
            "validation-error",
        )

    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db) as api:
            await scenario(api)

    asyncio.run(go())
