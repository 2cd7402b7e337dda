"""Customers' own budgets (docs/notifications.md, "Customer budgets"): set, read and removed through the
callers' usage endpoint as the customer, stored in Valkey, and evaluated against the customer's quota
counter and period spend: one ``budget.threshold_crossed`` per (customer, budget, period, level)."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tollway.clock import ManualClock
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.budgets import BUDGETS_PATH, BudgetEvaluator
from tollway.notifications.events import Event, event_id
from tollway.notifications.jobs import NotifySettings
from tollway.notifications.outbox import OutboxWriter
from tollway.notifications.periodic import periodic_jobs
from tollway.plans.loader import load_compiled_catalog
from tollway.ratelimit.keys import quota_key, spend_key
from tollway.server import build_budgets
from tollway.settings import Settings
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.usage.report_server import UsageReportServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "tests" / "fixtures" / "notifications" / "budgets.yaml"
DOC = ROOT / "docs" / "notifications.md"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MARCH_MS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
APRIL_MS = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000)
JSON = "application/json"


def documented(marker: str) -> Any:
    """The JSON block after ``<!-- marker -->`` in docs/notifications.md."""
    block = DOC.read_text().split(f"<!-- {marker} -->", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    return json.loads(block)


class Stack:
    def __init__(self, redis: "AsyncRedis[str]", clock: ManualClock) -> None:
        self.redis = redis
        self.clock = clock
        settings = Settings(redis_url="redis://unused")  # type: ignore[call-arg]
        self.live = LiveCatalog(load_compiled_catalog(CATALOG))
        budgets = build_budgets(settings, redis, clock, self.live)
        self.server = UsageReportServer(self._no_report, "https://tollway.dev/problems/", None, budgets)
        self.evaluator = BudgetEvaluator(redis, "tw:", OutboxWriter(redis), lambda: self.live.current, clock)

    @staticmethod
    async def _no_report(customer: str) -> dict[str, Any]:
        raise AssertionError("not asked")

    async def subscribe(self, customer: str, plan: str) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        await RedisSubscriptionStore(self.redis).put(Subscription.new(customer, plan, start))

    async def call(
        self, method: str, customer: str, body: Any = None, content_type: str = JSON
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        status, _, answer = await self.server.answer(method, BUDGETS_PATH, customer, "req-1", raw, content_type)
        return status, json.loads(answer) if answer else {}

    async def outbox(self, customer: str) -> list[Event]:
        return [Event.from_stream(f) for _, f in await self.redis.xrange(keys.stream_key("tw:", customer))]


def scenario(valkey: ValkeyServer, body: Callable[[Stack], Awaitable[None]]) -> None:
    async def go() -> None:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            await body(Stack(client, ManualClock(NOW)))
        finally:
            await client.aclose()

    asyncio.run(go())


def test_the_documented_request_sets_the_documented_budgets(valkey_fresh: ValkeyServer) -> None:
    async def body(stack: Stack) -> None:
        await stack.subscribe("acme", "capped")
        assert await stack.call("GET", "acme") == (200, {"budgets": [], "max": 10})
        status, answer = await stack.call("PUT", "acme", documented("budgets-request"))
        assert (status, answer) == (200, documented("budgets-response"))
        assert await stack.call("GET", "acme") == (200, answer)
        assert (await stack.call("HEAD", "acme"))[0] == 200
        stored = json.loads(await stack.redis.get("tw:bud:{acme}") or "{}")
        assert stored["budgets"] == answer["budgets"]
        assert await stack.redis.smembers("tw:budget-customers") == {"acme"}
        assert await stack.call("DELETE", "acme") == (200, {"budgets": [], "max": 10})
        assert await stack.redis.exists("tw:bud:{acme}") == 0
        assert await stack.redis.smembers("tw:budget-customers") == set()

    scenario(valkey_fresh, body)


def test_a_budget_fires_once_per_period_and_level_naming_the_customer(valkey_fresh: ValkeyServer) -> None:
    async def body(stack: Stack) -> None:
        await stack.subscribe("acme", "capped")
        assert (await stack.call("PUT", "acme", documented("budgets-request")))[0] == 200
        assert await stack.evaluator.run_once(NOW) == 0  # nothing used yet
        await stack.redis.set(quota_key("tw:", "acme", "requests_month", MARCH_MS), 799)
        await stack.redis.set(spend_key("tw:", "acme", MARCH_MS), 1_999_999)
        assert await stack.evaluator.run_once(NOW) == 0  # just below both
        await stack.redis.set(quota_key("tw:", "acme", "requests_month", MARCH_MS), 800)
        await stack.redis.set(spend_key("tw:", "acme", MARCH_MS), 2_100_000)
        # the job runs again and again: one event per budget
        assert [await stack.evaluator.run_once(NOW) for _ in range(3)] == [2, 0, 0]
        await stack.redis.set(quota_key("tw:", "acme", "requests_month", MARCH_MS), 950)
        assert await stack.evaluator.run_once(NOW) == 0
        found = await stack.outbox("acme")
        assert [e.type for e in found] == ["budget.threshold_crossed"] * 2
        quota, spend = found
        assert quota.id == event_id("budget.threshold_crossed", "acme", "quota-80", MARCH_MS, 800)
        assert quota.body() == {
            "customer_id": "acme",
            "budget_id": "quota-80",
            "kind": "quota",
            "policy": "requests_month",
            "threshold": "80%",
            "value": "800",
            "period_start": "2026-03-01T00:00:00.000Z",
            "period_end": "2026-04-01T00:00:00.000Z",
        }
        assert spend.id == event_id("budget.threshold_crossed", "acme", "spend-2", MARCH_MS, 2_000_000)
        assert (spend.data["kind"], spend.data["threshold"], spend.data["value"]) == ("spend", "2.00", "2.1")
        # the next period starts fresh
        april = datetime(2026, 4, 2, tzinfo=UTC)
        assert await stack.evaluator.run_once(april) == 0
        await stack.redis.set(quota_key("tw:", "acme", "requests_month", APRIL_MS), 801)
        assert await stack.evaluator.run_once(april) == 1
        assert len(await stack.outbox("acme")) == 3

    scenario(valkey_fresh, body)


def test_a_customer_override_moves_the_level_and_other_customers_are_apart(valkey_fresh: ValkeyServer) -> None:
    async def body(stack: Stack) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        store = RedisSubscriptionStore(stack.redis)
        await store.put(Subscription.new("big", "basic", start, overrides={"requests_month": 1000}))
        await stack.subscribe("small", "basic")
        budget = {"budgets": [{"id": "half", "quota": "requests_month", "percent": 50}]}
        for customer in ("big", "small"):
            assert (await stack.call("PUT", customer, budget))[0] == 200
            await stack.redis.set(quota_key("tw:", customer, "requests_month", MARCH_MS), 60)
        assert await stack.evaluator.run_once(NOW) == 1
        assert await stack.outbox("big") == []
        [event] = await stack.outbox("small")
        assert event.customer_id == "small"
        assert event.data["value"] == "60"

    scenario(valkey_fresh, body)


@pytest.mark.parametrize(
    ("plan", "body", "content_type", "status", "slug"),
    [
        ("capped", b"{", JSON, 400, "invalid-body"),
        ("capped", {"budgets": []}, "text/plain", 415, "unsupported-media-type"),
        ("capped", b" " * 5000, JSON, 413, "body-too-large"),
        ("capped", [], JSON, 422, "invalid-budgets"),
        ("capped", {"budget": []}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a", "quota": "nope", "percent": 80}]}, JSON, 422, "unknown-quota"),
        ("capped", {"budgets": [{"id": "a", "quota": "requests_month", "percent": 0}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a", "quota": "requests_month", "percent": 101}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a", "spend": "1.001"}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a", "spend": "-1"}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a b", "spend": "1"}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": "a", "spend": "1"}, {"id": "a", "spend": "2"}]}, JSON, 422, "invalid-budgets"),
        ("capped", {"budgets": [{"id": f"b{i}", "spend": "1"} for i in range(11)]}, JSON, 422, "too-many-budgets"),
        ("basic", {"budgets": [{"id": "a", "spend": "1.00"}]}, JSON, 409, "no-spend-counter"),
        ("none", {"budgets": []}, JSON, 403, "no-subscription"),
    ],
)
def test_bad_input_is_a_problem_and_changes_nothing(
    valkey_fresh: ValkeyServer, plan: str, body: Any, content_type: str, status: int, slug: str
) -> None:
    async def run(stack: Stack) -> None:
        if plan != "none":
            await stack.subscribe("acme", plan)
            assert (
                await stack.call("PUT", "acme", {"budgets": [{"id": "keep", "quota": "requests_month", "percent": 90}]})
            )[0] == 200
        before = await stack.redis.get("tw:bud:{acme}")
        got, problem = await stack.call("PUT", "acme", body, content_type)
        assert (got, problem["type"]) == (status, f"https://tollway.dev/problems/{slug}")
        assert problem["status"] == status
        assert problem["instance"] == "req-1"
        assert await stack.redis.get("tw:bud:{acme}") == before

    scenario(valkey_fresh, run)


def test_methods_and_identity(valkey_fresh: ValkeyServer) -> None:
    async def body(stack: Stack) -> None:
        await stack.subscribe("acme", "capped")
        assert (await stack.call("POST", "acme", {"budgets": []}))[0] == 405
        assert (await stack.call("GET", ""))[0] == 401
        await stack.redis.set("tw:bud:{acme}", "not json")
        assert await stack.call("GET", "acme") == (200, {"budgets": [], "max": 10})  # unreadable: ignored
        assert await stack.evaluator.run_once(NOW) == 0

    scenario(valkey_fresh, body)


def test_the_periodic_jobs_run_until_stopped_and_emit(valkey_fresh: ValkeyServer) -> None:
    async def body(stack: Stack) -> None:
        await stack.subscribe("acme", "capped")
        assert (await stack.call("PUT", "acme", documented("budgets-request")))[0] == 200
        await stack.redis.set(quota_key("tw:", "acme", "requests_month", MARCH_MS), 900)
        settings = NotifySettings(budget_interval_s=0.05, expiry_interval_s=0.05)
        jobs = periodic_jobs(stack.redis, "tw:", stack.clock, lambda: stack.live.current, settings)
        assert [name for name, _ in jobs] == ["expiry notifier", "budget evaluator"]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(job(stop)) for _, job in jobs]
        for _ in range(100):
            if await stack.outbox("acme"):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert [e.data["budget_id"] for e in await stack.outbox("acme")] == ["quota-80"]
        assert [name for name, _ in periodic_jobs(stack.redis, "tw:", stack.clock, None)] == ["expiry notifier"]

    scenario(valkey_fresh, body)
