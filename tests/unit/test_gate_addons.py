"""The gate enforces a plan combined with the add-ons held at the moment: buying a quota pack mid-period
raises the limit of the same counter (quota counters are keyed by customer, policy name and period, not
plan), a feature add-on unlocks its routes, removing the add-on (even on a date set in advance) takes it
back, and the change reaches the gate as any subscription change does (the cached subscription is at
most ``ttl`` = 1 s old)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.clock import ManualClock
from tollway.entitlements.errors import FeatureNotEntitled, LimitExceeded, PlanUnavailable
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.addons import with_quantity
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: gate-addons, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes: [{methods: [GET], path: /v1/items}]
  export:
    routes: [{methods: [GET], path: /v1/export}]
plans:
  small:
    features: [items]
    addons: [pack, exports]
    quotas:
      - {name: monthly, limit: 2}
  pack:
    addon: {max_quantity: 5}
    quotas:
      - {name: monthly, limit: 3}
  exports:
    addon: {}
    features: [export]
"""


async def outcome(gate: EntitlementGate, path: str = "/v1/items") -> str:
    try:
        admission = await gate.admit("acme", "GET", path)
    except LimitExceeded:
        return "429"
    except FeatureNotEntitled:
        return "403"
    if admission.verdict is None:
        return "200"
    state = admission.verdict.states[0]
    return f"200 {state.name} {state.remaining}/{state.limit}"


@pytest.mark.parametrize("leases", [0, 100])
def test_a_quota_pack_bought_mid_period_raises_the_same_counter_and_its_removal_lowers_it(leases: int) -> None:
    async def scenario() -> list[str]:
        clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
        store = MemorySubscriptionStore()
        subscription = Subscription.new("acme", "small", datetime(2026, 11, 1, tzinfo=UTC))
        await store.put(subscription)
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
            SubscriptionResolver(store, SubscriptionCache(clock.monotonic, ttl=1.0)),
            MemoryLimiter(),
            clock,
            max_lease_ms=leases,
        )
        seen = [await outcome(gate), await outcome(gate), await outcome(gate), await outcome(gate, "/v1/export")]
        # Two packs bought now, removal set in advance for the 20th; the gate sees it within a second.
        bought = with_quantity(subscription, "pack", 2, clock.now())
        bought = with_quantity(bought, "exports", 1, clock.now())
        await store.put(with_quantity(bought, "pack", 0, datetime(2026, 11, 20, tzinfo=UTC)))
        clock.advance(timedelta(milliseconds=1001))
        seen.append(await outcome(gate, "/v1/export"))  # unlocked; `monthly` counts every feature's requests
        seen += [await outcome(gate) for _ in range(6)]  # 2 + 2 × 3 = 8 in all: 5 more, then refused
        clock.advance(timedelta(days=10))  # the 20th, 12:00: the pack is gone, the export add-on stays
        seen += [await outcome(gate), await outcome(gate, "/v1/export")]
        return seen

    assert asyncio.run(scenario()) == [
        "200 monthly 1/2",
        "200 monthly 0/2",
        "429",
        "403",  # the export feature is not in the plan
        "200 monthly 5/8",  # the same counter (2 used; the refused request did not count): limit 2 + 2 × 3
        "200 monthly 4/8",
        "200 monthly 3/8",
        "200 monthly 2/8",
        "200 monthly 1/8",
        "200 monthly 0/8",
        "429",
        "429",  # the 20th: the pack is gone, back to a limit of 2 with 8 used
        "429",  # the export feature is still granted (a 429, not a 403): its add-on is still held
    ]


def test_an_add_on_missing_from_the_live_catalog_makes_the_plan_unavailable() -> None:
    async def scenario() -> None:
        clock = ManualClock(datetime(2026, 11, 10, 12, tzinfo=UTC))
        store = MemorySubscriptionStore()
        subscription = Subscription.new("acme", "small", datetime(2026, 11, 1, tzinfo=UTC))
        await store.put(with_quantity(subscription, "gone", 1, clock.now()))
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
            SubscriptionResolver(store, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
        )
        with pytest.raises(PlanUnavailable, match="add-on 'gone'"):
            await gate.admit("acme", "GET", "/v1/items")

    asyncio.run(scenario())


def test_the_callers_usage_report_shows_the_quota_the_gateway_enforces() -> None:
    """GET /v1/usage (the callers' own report): `monthly` is the plan's 2 before the pack, 2 + 2 × 3 = 8
    while it is held, and 2 again after its removal — the limits the gate enforces."""
    from typing import Any

    from tollway.usage.caller_report import caller_report

    live = LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml"))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    held = with_quantity(Subscription.new("acme", "small", start), "pack", 2, datetime(2026, 11, 10, tzinfo=UTC))
    held = with_quantity(held, "pack", 0, datetime(2026, 11, 20, tzinfo=UTC))

    class Subscriptions:
        async def get(self, customer_id: str) -> Subscription:
            return held

    async def warehouse(query: Any) -> Any:
        return {}, None, None

    async def limit_on(day: int) -> int:
        now = datetime(2026, 11, day, 12, tzinfo=UTC)
        report = await caller_report(
            "acme", subscriptions=Subscriptions(), live=live, limiter=MemoryLimiter(), warehouse=warehouse, now=now
        )
        assert report["plan"] == "small"
        return int(report["quotas"][0]["limit"])

    assert [asyncio.run(limit_on(day)) for day in (5, 15, 25)] == [2, 8, 2]


def test_usage_budgets_are_on_the_quota_the_gateway_enforces() -> None:
    """A budget of a share of `monthly` (docs/notifications.md) is measured against 2 + 2 × 3 = 8 while
    two packs are held, the plan's 2 before."""
    from tollway.notifications.budgets import plan_terms

    compiled = compile_catalog_text(CATALOG, "catalog.yaml")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    held = with_quantity(Subscription.new("acme", "small", start), "pack", 2, datetime(2026, 11, 10, tzinfo=UTC))
    assert plan_terms(compiled, held, datetime(2026, 11, 5, tzinfo=UTC)).quotas == {"monthly": 2}
    assert plan_terms(compiled, held, datetime(2026, 11, 15, tzinfo=UTC)).quotas == {"monthly": 8}


TRIAL_CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: gate-addons-trial, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes: [{methods: [GET], path: /v1/items}]
plans:
  small:
    features: [items]
    addons: [pack]
    quotas:
      - {name: monthly, limit: 2}
    phases:
      - {id: trial, days: 14, free: true}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
  pack:
    addon: {max_quantity: 5}
    quotas:
      - {name: monthly, limit: 3}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: pack, model: flat, amount: "5.00"}
"""


def test_an_add_on_is_sold_and_enforced_during_a_trial_phase() -> None:
    """A subscriber in the trial of a plan that allows an add-on may buy it then (the phase plan
    `small:trial` allows what `small` allows), and the gate enforces the trial's quota plus the pack."""
    from tollway.subscriptions.addons import check_sale
    from tollway.subscriptions.phases import PhaseRequest, resolve_phases, with_phases

    compiled = compile_catalog_text(TRIAL_CATALOG, "catalog.yaml")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    new = Subscription.new("acme", "small", start)
    subscription = with_phases(new, resolve_phases([PhaseRequest("small:trial", days=14)], new, "small"))
    bought_at = datetime(2026, 11, 5, tzinfo=UTC)
    assert subscription.as_of(int(bought_at.timestamp() * 1000)).plan_id == "small:trial"
    check_sale(compiled.catalog.plans, subscription, "pack", 1, bought_at)  # allowed during the trial

    async def scenario() -> list[str]:
        clock = ManualClock(bought_at)
        store = MemorySubscriptionStore()
        await store.put(with_quantity(subscription, "pack", 1, bought_at))
        gate = EntitlementGate(
            LiveCatalog(compiled),
            SubscriptionResolver(store, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
        )
        return [await outcome(gate) for _ in range(6)]

    assert asyncio.run(scenario()) == [f"200 monthly {n}/5" for n in (4, 3, 2, 1, 0)] + ["429"]
