"""The gate's memoised checks: a check is reused only within its billing period, for the subscription and
catalog objects it was built for; a check built again equals (and hashes as) the old one."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.clock import ManualClock
from tollway.entitlements.checks import Check
from tollway.entitlements.errors import LimitExceeded
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter, QuotaPolicy
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: gate-checks, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes:
      - {methods: [GET], path: /v1/items}
plans:
  small:
    features: [items]
    quotas:
      - {name: monthly, limit: 2}
"""


def test_a_check_built_again_is_equal_and_hashes_alike() -> None:
    key = ("digest", "small", "items", 1, None, (0, 10))
    policies = (QuotaPolicy("monthly", 2, 0, 10),)
    first, again = Check(key, policies, (1,)), Check(key, policies, (1,))
    assert first == again
    assert hash(first) == hash(again)
    assert first != Check(("digest", "small", "items", 1, None, (10, 20)), policies, (1,))
    assert {("acme", first): "lease"}[("acme", again)] == "lease"


@pytest.mark.parametrize("leases", [0, 100])
def test_a_new_period_gets_a_new_check_while_the_subscription_stays_cached(leases: int) -> None:
    """Paris's December starts at 23:00Z: 10 ms after the last November request the subscription is
    still the cached object, yet the quota is December's."""

    async def scenario() -> list[str]:
        clock = ManualClock(datetime(2026, 11, 30, 22, 59, 59, 980000, tzinfo=UTC))
        store = MemorySubscriptionStore()
        await store.put(Subscription.new("acme", "small", datetime(2026, 1, 1, tzinfo=UTC), timezone="Europe/Paris"))
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
            SubscriptionResolver(store, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
            max_lease_ms=leases,
        )
        outcomes = []
        for step_ms in (0, 1, 1, 18):
            clock.advance(timedelta(milliseconds=step_ms))
            try:
                admission = await gate.admit("acme", "GET", "/v1/items")
            except LimitExceeded:
                outcomes.append("429")
            else:
                assert admission.verdict is not None
                assert admission.check is not None
                state = admission.verdict.states[0]
                outcomes.append(f"200 r={state.remaining} period_end={admission.check.period_ms[1]}")
        return outcomes

    november_end = int(datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp() * 1000)
    december_end = int(datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp() * 1000)
    assert asyncio.run(scenario()) == [
        f"200 r=1 period_end={november_end}",
        f"200 r=0 period_end={november_end}",
        "429",
        f"200 r=1 period_end={december_end}",
    ]
