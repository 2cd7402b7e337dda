"""Scheduled plan changes (``Subscription.as_of``) and migrations between plan versions (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.migration import NEXT_PERIOD, plan_migration, target_version
from tollway.subscriptions.model import Subscription

START = datetime(2026, 9, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 20, 12, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 1, tzinfo=UTC)


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_a_change_scheduled_after_now_is_not_in_force_yet() -> None:
    subscription = Subscription.new("bob", "pro", START).changed_to("pro@2", NOVEMBER)
    assert subscription.plan_id == "pro@2"  # the stored chain ends with the scheduled change
    before = subscription.as_of(ms(NOW))
    assert (before.plan_id, before.changes) == ("pro", ())
    assert subscription.as_of(ms(NOW) + 1) is before  # memoised until the change
    assert subscription.as_of(ms(NOVEMBER) - 1) is before
    assert subscription.as_of(ms(NOVEMBER)) is subscription
    assert subscription.scheduled(NOW) == subscription.changes
    assert subscription.scheduled(NOVEMBER) == ()
    # Billing prices each side of it with its own plan.
    terms = subscription.terms(datetime(2026, 10, 15, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC))
    assert [(t.plan_id, t.end) for t in terms] == [("pro", NOVEMBER), ("pro@2", datetime(2026, 11, 15, tzinfo=UTC))]


def test_a_subscription_without_a_scheduled_change_is_itself_at_any_time() -> None:
    plain = Subscription.new("alice", "pro", START)
    changed = plain.changed_to("pro@2", datetime(2026, 10, 1, tzinfo=UTC))
    for subscription in (plain, changed):
        assert subscription.as_of(ms(NOW)) is subscription
    # Between two changes, the first one is in force.
    twice = changed.changed_to("pro@3", NOVEMBER)
    middle = twice.as_of(ms(NOW))
    assert (middle.plan_id, len(middle.changes)) == ("pro@2", 1)
    assert twice.as_of(ms(datetime(2026, 9, 15, tzinfo=UTC))).plan_id == "pro"


def test_a_scheduled_change_round_trips_through_the_store_fields() -> None:
    subscription = Subscription.new("bob", "pro", START).changed_to("pro@2", NOVEMBER)
    back = Subscription.from_fields(subscription.to_fields())
    assert back == subscription
    assert back.as_of(ms(NOW)).plan_id == "pro"


CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: m, version: "1"}
plans:
  free: {}
  pro:
    versions:
      1: {usage_headers: false}
      2: {usage_headers: true}
"""


def test_the_target_must_be_a_version_the_catalog_has() -> None:
    plans = load_catalog_text(CATALOG, "c.yaml").plans
    assert target_version(plans, "pro") == "pro@2"
    assert target_version(plans, "pro@1") == "pro@1"
    for wrong, message in (
        ("pro@3", "no such plan version (plan 'pro' has versions 1, 2)"),
        ("free@2", "no such plan version (plan 'free' has no versions besides itself (version 1))"),
        ("team", "no such plan version (the catalog has no plan 'team')"),
    ):
        with pytest.raises(
            ValueError, match=r"cannot migrate to '" + wrong + "': " + message.replace("(", r"\(").replace(")", r"\)")
        ):
            target_version(plans, wrong)


def test_a_migration_from_the_next_period_of_each_customer() -> None:
    paris = Subscription.new("paris", "pro", START, timezone="Europe/Paris")
    anniversary = Subscription.new("anniv", "pro@1", datetime(2026, 9, 15, 9, tzinfo=UTC), alignment="anniversary")
    already = Subscription.new("carol", "pro@2", START)
    migrations, unchanged = plan_migration([paris, anniversary, already], "pro@2", NEXT_PERIOD, NOW)
    assert unchanged == ["carol"]
    assert [(m.customer_id, m.at, m.after.plan_id) for m in migrations] == [
        ("paris", datetime(2026, 10, 31, 23, tzinfo=UTC), "pro@2"),  # midnight, 1 November, in Paris
        ("anniv", datetime(2026, 11, 15, 9, tzinfo=UTC), "pro@2"),
    ]
    assert migrations[0].as_dict(NOW) == {
        "customer_id": "paris",
        "from": "pro",
        "to": "pro@2",
        "effective_at": "2026-10-31T23:00:00Z",
        "scheduled": True,
        "cancelled": False,
    }
    [now] = plan_migration([paris], "pro@2", "now", NOW)[0]
    assert now.at == NOW
    assert now.after.as_of(ms(NOW)).plan_id == "pro@2"


def test_a_migration_that_cannot_apply_to_every_subscriber_is_refused() -> None:
    fine = Subscription.new("alice", "pro", START)
    for other, effective, message in (
        (Subscription.new("zed", "free", START), NEXT_PERIOD, "customer 'zed' is on plan 'free': a migration moves"),
        (fine.changed_to("pro@2", NOVEMBER), NEXT_PERIOD, "already has a plan change scheduled at 2026-11-01T00"),
        (fine, "2026-10-19", "takes effect now or later"),
        (fine, (NOW - timedelta(seconds=1)).isoformat(), "takes effect now or later"),
        (fine, "tomorrow", "is not 'now' or an ISO 8601"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            plan_migration([fine, other], "pro@2", effective, NOW)


def test_a_migration_to_a_version_priced_per_another_interval_is_refused() -> None:
    """A version priced per quarter cannot take a monthly subscriber: its amounts are per quarter."""
    monthly = Subscription.new("alice", "pro", START)
    with pytest.raises(ValueError, match="customer 'alice': plan 'pro@2' is priced per quarter: a subscription"):
        plan_migration([monthly], "pro@2", NEXT_PERIOD, NOW, "quarter")
    [moved], _ = plan_migration([monthly], "pro@2", NEXT_PERIOD, NOW, "month")
    assert moved.after.plan_id == "pro@2"


def test_the_callers_usage_report_shows_the_version_in_force_not_the_scheduled_one() -> None:
    import asyncio
    from typing import Any

    from tollway.entitlements.live_catalog import LiveCatalog
    from tollway.plans.catalog import CompiledCatalog
    from tollway.ratelimit.model import MemoryLimiter
    from tollway.usage.caller_report import caller_report

    text = CATALOG.replace("1: {usage_headers: false}", "1: {quotas: [{name: monthly, limit: 3}]}").replace(
        "2: {usage_headers: true}", "2: {quotas: [{name: monthly, limit: 5}]}"
    )
    live = LiveCatalog(CompiledCatalog.build(load_catalog_text(text, "c.yaml")))
    bob = Subscription.new("bob", "pro", START).changed_to("pro@2", NOVEMBER)

    class Subscriptions:
        async def get(self, customer_id: str) -> Subscription:
            return bob

    async def warehouse(query: Any) -> Any:
        return {}, None, None

    async def report(now: datetime) -> dict[str, Any]:
        return await caller_report(
            "bob", subscriptions=Subscriptions(), live=live, limiter=MemoryLimiter(), warehouse=warehouse, now=now
        )

    october = asyncio.run(report(NOW))
    assert (october["plan"], october["quotas"][0]["limit"]) == ("pro", 3)
    november = asyncio.run(report(NOVEMBER + timedelta(days=1)))
    assert (november["plan"], november["quotas"][0]["limit"]) == ("pro@2", 5)


def test_a_migration_back_to_the_version_held_cancels_the_scheduled_one() -> None:
    scheduled = Subscription.new("bob", "pro", START).changed_to("pro@2", NOVEMBER)
    [cancel], unchanged = plan_migration([scheduled], "pro@1", NEXT_PERIOD, NOW)
    assert unchanged == []
    assert (cancel.cancelled, cancel.at, cancel.after.plan_id, cancel.after.changes) == (True, NOVEMBER, "pro", ())
    assert cancel.as_dict(NOW) == {
        "customer_id": "bob",
        "from": "pro",
        "to": "pro",
        "effective_at": "2026-11-01T00:00:00Z",
        "scheduled": False,
        "cancelled": True,
    }
