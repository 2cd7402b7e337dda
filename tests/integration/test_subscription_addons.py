"""Selling add-ons through the faces, on a real Valkey: ``tollway subscriptions addon`` and the admin API's
``PUT /customers/{id}/subscription/addons/{addon}``. An add-on the plan does not allow (or a quantity
out of range, or a removal of one not held) is refused with a clear error — CLI exit 2 and a message,
a 422 RFC 9457 problem — and nothing is written; a plan change that would drop an allowed add-on is
refused the same way; a sale is stored and read back, and reaches the gateway (through Envoy) within
a second, raising the quota of the counter already in use."""

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import EnvoyFactory
from tests.support.admin_api import AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.inprocess_tollway import inprocess_tollway
from tests.support.tollway_cli import create_key
from tests.unit.test_gate_addons import CATALOG
from tollway.admin.scopes import Scope
from tollway.cli.main import main
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer
from tollway.subscriptions.model import AddOn, Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)
WITH_LONE = CATALOG + "  lone:\n    features: [items]\n"


def raw(valkey: ValkeyServer) -> dict[str, object]:
    async def go() -> dict[str, object]:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            keys = sorted(await redis.keys("tw:*"))
            return {key: await redis.hgetall(key) if await redis.type(key) == "hash" else {} for key in keys}
        finally:
            await redis.aclose()

    return asyncio.run(go())


def put(valkey: ValkeyServer, subscription: Subscription) -> None:
    async def go() -> None:
        redis = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            await RedisSubscriptionStore(redis).put(subscription)
        finally:
            await redis.aclose()

    asyncio.run(go())


def test_the_cli_sells_an_allowed_add_on_and_refuses_the_rest_writing_nothing(
    valkey_fresh: ValkeyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOLLWAY_REDIS_URL", valkey_fresh.url)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(WITH_LONE)
    put(valkey_fresh, Subscription.new("acme", "small", datetime(2026, 11, 1, tzinfo=UTC)))
    put(valkey_fresh, Subscription.new("solo", "lone", datetime(2026, 11, 1, tzinfo=UTC)))
    state = raw(valkey_fresh)
    capsys.readouterr()
    for argv, message in (
        (("--customer", "solo", "--addon", "pack"), "plan 'lone' does not allow add-on 'pack' (it allows: none)"),
        (("--customer", "acme", "--addon", "lone"), "add-on 'lone' is a plan, not an add-on"),
        (("--customer", "acme", "--addon", "nope"), "add-on 'nope' is not in the catalog (add-ons: exports, pack)"),
        (("--customer", "acme", "--addon", "pack", "--quantity", "6"), "sold in quantities from 1 to 5, not 6"),
        (("--customer", "acme", "--addon", "pack", "--quantity", "0"), "does not hold add-on 'pack'"),
        (("--customer", "acme", "--addon", "pack", "--effective", "2026-10-01"), "before the subscription's start"),
    ):  # fmt: skip
        code = main(["subscriptions", "addon", *argv, "--catalog", str(catalog)])
        assert (code, message in capsys.readouterr().err) == (2, True), argv
        assert raw(valkey_fresh) == state, argv
    assert main(["subscriptions", "addon", "--customer", "acme", "--addon", "pack"]) == 2  # no catalog
    assert "needs the plan catalog" in capsys.readouterr().err

    code = main(["subscriptions", "addon", "--customer", "acme", "--addon", "pack", "--quantity", "2",
                 "--effective", "2026-11-10T12:00:00Z", "--catalog", str(catalog), "--json"])  # fmt: skip
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["addons"] == [{"addon": "pack", "quantity": 2, "start": "2026-11-10T12:00:00Z", "end": None}]
    # A plan change to a plan that does not allow a held add-on is refused, nothing written.
    state = raw(valkey_fresh)
    code = main(["subscriptions", "set", "--customer", "acme", "--plan", "lone", "--catalog", str(catalog)])
    assert code == 2
    assert (
        "plan 'lone' does not allow add-on 'pack' (it allows: none): remove the add-on first" in capsys.readouterr().err
    )
    assert raw(valkey_fresh) == state


def test_the_admin_api_sells_an_add_on_and_answers_problems_for_the_rest(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(WITH_LONE)

    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        for customer, plan in (("acme", "small"), ("solo", "lone")):
            assert (
                await api.http.post("/customers", json={"customer_id": customer}, headers=writer)
            ).status_code == 201
            created = await api.http.put(
                f"/customers/{customer}/subscription",
                json={"plan_id": plan, "started_at": "2026-11-01"},
                headers=writer,
            )
            assert created.status_code == 201, created.text
            assert created.json()["addons"] == []
        before = {
            c: (await api.http.get(f"/customers/{c}/subscription", headers=writer)).json() for c in ("acme", "solo")
        }
        for customer, addon, body, fragment in (
            ("solo", "pack", {}, "plan 'lone' does not allow add-on 'pack' (it allows: none)"),
            ("acme", "nope", {}, "add-on 'nope' is not in the catalog"),
            ("acme", "pack", {"quantity": 6}, "sold in quantities from 1 to 5, not 6"),
            ("acme", "pack", {"quantity": 0}, "does not hold add-on 'pack'"),
            ("acme", "pack", {"effective": "2026-10-01"}, "before the subscription's start"),
            ("acme", "pack", {"effective": "tomorrow"}, "is not 'now' or an ISO 8601"),
            ("acme", "pack", {"quantity": -1}, "quantity"),
            ("acme", "pack", {"colour": "red"}, "colour"),
            ("acme", "bad{id}", {}, "addon_id"),
        ):
            refused = await api.http.put(
                f"/customers/{customer}/subscription/addons/{addon}", json=body, headers=writer
            )
            assert refused.status_code == 422, (addon, body, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["type"].endswith("/validation-error")
            assert fragment in json.dumps(refused.json()), refused.text
        after = {
            c: (await api.http.get(f"/customers/{c}/subscription", headers=writer)).json() for c in ("acme", "solo")
        }
        assert after == before  # nothing written

        sold = await api.http.put("/customers/acme/subscription/addons/pack", json={"quantity": 3}, headers=writer)
        assert sold.status_code == 200, sold.text
        assert sold.json()["addons"] == [{"addon": "pack", "quantity": 3, "start": "2026-11-10T12:00:00Z", "end": None}]
        change = await api.http.post(
            "/customers/acme/subscription/plan-changes", json={"plan_id": "lone"}, headers=writer
        )
        assert change.status_code == 422
        assert "remove the add-on first" in change.text
        removed = await api.http.put(
            "/customers/acme/subscription/addons/pack", json={"quantity": 0, "effective": "2026-11-20"}, headers=writer
        )
        assert removed.status_code == 200, removed.text
        stored = await api.services.subscriptions.get("acme")
        assert stored is not None
        assert stored.addons == (
            AddOn("pack", 3, datetime(2026, 11, 10, 12, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)),
        )
        actions = [e["action"] for e in (await api.http.get("/audit", headers=writer)).json()["items"]]
        assert actions.count("subscription.addon") == 2

    async def go() -> None:
        async with admin_api(valkey_fresh.url, chdb_db, catalog=catalog, now=NOW) as api:
            await scenario(api)

    asyncio.run(go())


def test_a_pack_sold_mid_period_reaches_the_gateway_within_a_second(
    valkey_fresh: ValkeyServer, envoy_factory: EnvoyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Envoy and a real Valkey limiter: `small` admits 2 requests a month; `subscriptions addon`
    sells 2 packs of 3 (and the export feature); within a second the gateway admits 2 + 2 × 3 = 8 on
    the same `monthly` counter (6 more), and the export route."""
    monkeypatch.setenv("TOLLWAY_REDIS_URL", valkey_fresh.url)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(WITH_LONE)
    put(valkey_fresh, Subscription.new("acme", "small", datetime(2026, 11, 1, tzinfo=UTC)))
    key = str(create_key(valkey_fresh.url, "acme")["api_key"])
    headers = {"authorization": f"Bearer {key}"}
    with inprocess_tollway(valkey_fresh.url, catalog, clock=ManualClock(NOW)) as tollway:
        envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
            statuses = [client.get("/v1/items", headers=headers).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]
            assert client.get("/v1/export", headers=headers).status_code == 403
            for addon, quantity in (("pack", "2"), ("exports", "1")):
                code = main(["subscriptions", "addon", "--customer", "acme", "--addon", addon, "--quantity",
                             quantity, "--effective", "2026-11-10T12:00:00Z", "--catalog", str(catalog)])  # fmt: skip
                assert code == 0
            sold = time.monotonic()
            while (status := client.get("/v1/export", headers=headers).status_code) == 403:
                assert time.monotonic() - sold < 1.5, "the sale did not reach the gateway within a second"
                time.sleep(0.05)
            assert status == 200  # one of the 6 more: `monthly` counts every feature
            statuses = [client.get("/v1/items", headers=headers).status_code for _ in range(6)]
            assert statuses == [200, 200, 200, 200, 200, 429]
