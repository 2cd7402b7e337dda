"""The gate and overdue customers: the overdue flag travels with the cached subscription (no I/O), and the
plan's overdue policy decides — its overdue plan in force instead, a 402 refusal, or (no policy) the plan."""

import asyncio
import json
from datetime import UTC, datetime

import pytest

from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.clock import ManualClock
from tollway.entitlements.errors import LimitExceeded, PaymentOverdue
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.problems import Refusals
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: gate-overdue, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes:
      - {methods: [GET], path: /v1/items}
  reports:
    routes:
      - {methods: [GET], path: /v1/reports}
plans:
  free:
    features: [items]
    quotas:
      - {name: monthly, limit: 1}
  pro:
    features: [items, reports]
    overdue: {plan: free}
    quotas:
      - {name: monthly, limit: 100}
  strict:
    features: [items]
    overdue: {refuse: true}
  lenient:
    features: [items]
"""
START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def gate_for(*subscriptions: Subscription) -> EntitlementGate:
    clock = ManualClock(NOW)
    store = MemorySubscriptionStore()
    for subscription in subscriptions:
        store.records[subscription.customer_id] = subscription
    return EntitlementGate(
        LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
        SubscriptionResolver(store, SubscriptionCache(clock.monotonic)),
        MemoryLimiter(),
        clock,
    )


def subscription(customer: str, plan: str, overdue: tuple[str, ...] = ()) -> Subscription:
    base = Subscription.new(customer, plan, START, overrides={"monthly": 50})
    fields = base.to_fields()
    if overdue:
        fields["overdue"] = json.dumps(list(overdue))
    return Subscription.from_fields(fields)


def test_the_overdue_flag_is_read_with_the_record_and_never_written_by_it() -> None:
    found = subscription("acme", "pro", ("inv-2", "inv-1"))
    assert found.overdue == ("inv-1", "inv-2")
    assert found.needs_view
    assert "overdue" not in found.to_fields()  # only billing.payment_status writes the field
    assert not subscription("acme", "pro").needs_view
    with pytest.raises(ValueError, match="overdue is not a JSON list"):
        Subscription.from_fields({**found.to_fields(), "overdue": '{"inv-1": 1}'})


def test_an_overdue_customer_gets_the_overdue_plans_answers_without_overrides() -> None:
    async def scenario() -> None:
        gate = gate_for(subscription("acme", "pro", ("inv-1",)), subscription("paying", "pro"))
        first = await gate.admit("acme", "GET", "/v1/items")
        assert first.plan_id == "free"
        with pytest.raises(LimitExceeded):  # free's monthly quota of 1, not the customer's override of 50
            await gate.admit("acme", "GET", "/v1/items")
        with pytest.raises(Exception, match="does not include the 'reports' feature"):
            gate.admit_now("acme", "GET", "/v1/reports")
        assert (await gate.admit("paying", "GET", "/v1/reports")).plan_id == "pro"
        cached = gate.subscriptions.cached("acme")
        assert isinstance(cached, Subscription)
        assert cached.while_overdue("free") is cached.while_overdue("free")  # one view, memoised

    asyncio.run(scenario())


def test_a_plan_that_refuses_overdue_customers_raises_payment_overdue_and_one_without_a_policy_admits() -> None:
    async def scenario() -> None:
        gate = gate_for(subscription("acme", "strict", ("inv-1",)), subscription("bob", "lenient", ("inv-9",)))
        with pytest.raises(PaymentOverdue) as caught:
            await gate.admit("acme", "GET", "/v1/items")
        assert caught.value.reason == "payment-overdue"
        with pytest.raises(PaymentOverdue):
            gate.admit_now("acme", "GET", "/v1/items")
        assert (await gate.admit("bob", "GET", "/v1/items")).plan_id == "lenient"

    asyncio.run(scenario())


def test_payment_overdue_is_a_402_problem() -> None:
    deny = Refusals().payment_overdue("An invoice is overdue.", "req-1")
    assert deny.status == 402
    body = json.loads(deny.body)
    assert body["type"] == "https://tollway.dev/problems/payment-overdue"
    assert (body["title"], body["status"], body["instance"]) == ("Payment overdue", 402, "req-1")


def test_the_callers_usage_page_shows_what_the_gateway_enforces_while_overdue() -> None:
    """``GET /tollway/v1/usage`` of an overdue customer: the quotas the gate enforces (the overdue plan's,
    without the customer's overrides), and an ``overdue`` member saying so; a refusing plan's customer still
    sees the page (it is how they learn why), with ``access: refused``. Not overdue: no such member."""
    from typing import Any

    from tollway.usage.caller_report import caller_report

    live = LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml"))
    records = {
        "paid": subscription("paid", "pro"),
        "late": subscription("late", "pro", overdue=("in_1",)),
        "barred": subscription("barred", "strict", overdue=("in_1", "in_2")),
        "loose": subscription("loose", "lenient", overdue=("in_1",)),
    }

    class Subscriptions:
        async def get(self, customer_id: str) -> Subscription:
            return records[customer_id]

    async def warehouse(query: Any) -> Any:
        return {}, None, None

    def report(customer: str) -> dict[str, Any]:
        return asyncio.run(
            caller_report(
                customer,
                subscriptions=Subscriptions(),
                live=live,
                limiter=MemoryLimiter(),
                warehouse=warehouse,
                now=NOW,
            )
        )

    paid = report("paid")
    assert "overdue" not in paid
    assert [(q["name"], q["limit"]) for q in paid["quotas"]] == [("monthly", 50)]  # the customer's override
    late = report("late")
    assert late["plan"] == "pro", "the plan held"
    assert late["overdue"] == {"invoices": 1, "access": "plan", "plan": "free"}
    assert [(q["name"], q["limit"]) for q in late["quotas"]] == [("monthly", 1)], "free's quota, as the gate"
    assert report("barred")["overdue"] == {"invoices": 2, "access": "refused", "plan": None}
    assert report("loose")["overdue"] == {"invoices": 1, "access": "unchanged", "plan": None}
