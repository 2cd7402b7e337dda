"""A customer's own spend cap: the PATCH body's rules (every bad input a CapRefused, nothing else), and the
gate enforcing the lower of the plan's cap and the customer's at exactly the request that would cross it."""

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.clock import ManualClock
from tollway.credits.spend_caps import (
    CapRefused,
    CustomerCap,
    CustomerCapResolver,
    CustomerCapStore,
    parse_cap_patch,
)
from tollway.entitlements.errors import EntitlementsUnavailable, PaymentRequired
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

JSON = "application/merge-patch+json"
PLAN_CAP = Decimal("10.00")


def patch(body: object, *, currency: str | None = "USD", cap: Decimal | None = PLAN_CAP) -> Decimal | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_cap_patch(raw, JSON, currency, cap)


def refusal(body: object, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(CapRefused) as caught:
        patch(body, **kwargs)
    return caught.value.status, caught.value.slug


def test_a_customer_sets_or_removes_their_own_cap() -> None:
    assert patch({"spend_cap": {"amount": "5.00"}}) == Decimal("5.00")
    assert patch({"spend_cap": {"amount": "10"}}) == Decimal(10), "the plan's cap itself is allowed"
    assert patch(b'{"spend_cap": {"amount": 2.5}}') == Decimal("2.5"), "a JSON number, read exactly"
    assert patch({"spend_cap": None}) is None
    assert parse_cap_patch(b'{"spend_cap": null}', "application/json; charset=utf-8", "USD", PLAN_CAP) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", (400, "invalid-body")),
        (b"\xff\xfe", (400, "invalid-body")),
        (b'{"spend_cap": {"amount": NaN}}', (400, "invalid-body")),
        ({"spend_cap": {"amount": "-1.00"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "0"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "0.00"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "5.001"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "1e1"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "٥.00"}}, (422, "invalid-spend-cap")),  # Arabic-Indic digits
        ({"spend_cap": {"amount": "５"}}, (422, "invalid-spend-cap")),  # a fullwidth digit
        ({"spend_cap": {"amount": " 5"}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": True}}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "10.01"}}, (422, "spend-cap-above-plan")),
        ({"spend_cap": {"amount": "5", "soft": True}}, (422, "invalid-spend-cap")),
        ({"spend_cap": "5.00"}, (422, "invalid-spend-cap")),
        ({"spend_cap": {"amount": "5"}, "plan": "big"}, (422, "invalid-spend-cap")),
        ([], (422, "invalid-spend-cap")),
    ],
)
def test_bad_input_is_refused_with_a_problem(body: object, expected: tuple[int, str]) -> None:
    assert refusal(body) == expected


def test_a_plan_without_a_cap_has_none_to_lower_and_yen_have_no_decimals() -> None:
    assert refusal({"spend_cap": {"amount": "5"}}, currency=None, cap=None) == (409, "no-spend-cap")
    assert refusal({"spend_cap": {"amount": "500.5"}}, currency="JPY", cap=Decimal(1000)) == (422, "invalid-spend-cap")
    assert patch({"spend_cap": {"amount": "500"}}, currency="JPY", cap=Decimal(1000)) == Decimal(500)
    with pytest.raises(CapRefused) as caught:
        parse_cap_patch(b'{"spend_cap": null}', "text/plain", "USD", PLAN_CAP)
    assert caught.value.status == 415
    with pytest.raises(CapRefused) as caught:
        parse_cap_patch(b" " * 5000, JSON, "USD", PLAN_CAP)
    assert caught.value.status == 413


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps({"spend_cap": {"amount": v}}).encode()),
        st.text(max_size=16).map(lambda t: json.dumps({"spend_cap": {"amount": t}}).encode()),
    )
)
def test_any_body_is_an_amount_none_or_a_problem(body: bytes) -> None:
    outcome: Decimal | CapRefused | None
    try:
        outcome = parse_cap_patch(body, JSON, "USD", PLAN_CAP)
    except CapRefused as refused:
        outcome = refused
    if isinstance(outcome, CapRefused):
        assert 400 <= outcome.status < 500
        assert outcome.detail
    elif outcome is not None:
        assert Decimal(0) < outcome <= PLAN_CAP
        assert outcome.as_tuple().exponent in (0, -1, -2)


CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: spend-caps, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes:
      - {methods: [GET], path: /v1/items}
plans:
  capped:
    features: [items]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.30"}
    spend_cap: {amount: "3.00"}
  soft:
    features: [items]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.30"}
    spend_cap: {amount: "3.00", soft: true}
"""


class FakeCaps:
    def __init__(self) -> None:
        self.caps: dict[str, CustomerCap] = {}
        self.lookups = 0

    async def get(self, customer_id: str) -> CustomerCap | None:
        self.lookups += 1
        return self.caps.get(customer_id)


def gate_with(caps: FakeCaps, clock: ManualClock, *, leases: int = 0) -> EntitlementGate:
    return EntitlementGate(
        LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
        SubscriptionResolver(STORE, SubscriptionCache(clock.monotonic)),
        MemoryLimiter(),
        clock,
        max_lease_ms=leases,
        customer_caps=CustomerCapResolver(cast(CustomerCapStore, caps), clock.monotonic, ttl_s=1.0),
    )


STORE = MemorySubscriptionStore()


async def outcomes(gate: EntitlementGate, customer: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            admission = await gate.admit(customer, "GET", "/v1/items")
        except PaymentRequired as refused:
            out.append(f"402 {refused.reason} cap={refused.money.cap}")
        else:
            assert admission.verdict is not None
            money = admission.verdict.money
            assert money is not None
            out.append("200 over" if money.over_cap else "200")
    return out


@pytest.mark.parametrize("leases", [0, 100])
def test_the_gate_refuses_at_the_request_that_would_cross_the_customers_own_cap(leases: int) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str], int]:
        clock = ManualClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
        for customer, plan in (("own", "capped"), ("plain", "capped"), ("soft", "soft")):
            await STORE.put(Subscription.new(customer, plan, datetime(2026, 1, 1, tzinfo=UTC)))
        caps = FakeCaps()
        caps.caps["own"] = CustomerCap(Decimal("1.00"), "USD")
        caps.caps["soft"] = CustomerCap(Decimal("0.60"), "USD")
        gate = gate_with(caps, clock, leases=leases)
        own = await outcomes(gate, "own", 5)
        plain = await outcomes(gate, "plain", 12)
        soft = await outcomes(gate, "soft", 3)
        return own, plain, soft, caps.lookups

    own, plain, soft, lookups = asyncio.run(scenario())
    # 3 × 0.30 = 0.90; the 4th would make 1.20, past the customer's 1.00 (the plan allows 3.00).
    assert own == ["200"] * 3 + ["402 spend-cap-reached cap=1000000"] * 2
    # Without their own cap: the plan's 3.00 (10 × 0.30), unchanged.
    assert plain == ["200"] * 10 + ["402 spend-cap-reached cap=3000000"] * 2
    # A customer's own cap is hard even under a soft plan cap.
    assert soft == ["200", "200", "402 spend-cap-reached cap=600000"]
    assert lookups == 3, "one lookup per customer within the TTL"


def test_a_changed_cap_applies_within_the_ttl_and_at_once_when_forgotten() -> None:
    async def scenario() -> list[str]:
        clock = ManualClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
        await STORE.put(Subscription.new("mover", "capped", datetime(2026, 1, 1, tzinfo=UTC)))
        caps = FakeCaps()
        gate = gate_with(caps, clock)
        seen = await outcomes(gate, "mover", 2)  # 0.60 spent
        caps.caps["mover"] = CustomerCap(Decimal("0.60"), "USD")
        seen += await outcomes(gate, "mover", 1)  # cached "no cap" for up to 1 s: admitted (0.90)
        clock.advance(1.0)
        seen += await outcomes(gate, "mover", 1)  # read again: 0.90 + 0.30 > 0.60
        caps.caps["mover"] = CustomerCap(Decimal("2.00"), "USD")
        gate.forget_customer_cap("mover")
        seen += await outcomes(gate, "mover", 1)  # at once: 1.20 <= 2.00
        caps.caps["mover"] = CustomerCap(Decimal("2.00"), "EUR")  # another currency: ignored
        gate.forget_customer_cap("mover")
        seen += await outcomes(gate, "mover", 1)
        del caps.caps["mover"]
        gate.forget_customer_cap("mover")
        seen += await outcomes(gate, "mover", 7)  # the plan's 3.00 again
        return seen

    assert (
        asyncio.run(scenario())
        == ["200"] * 3
        + ["402 spend-cap-reached cap=600000"]
        + ["200"] * 2
        + ["200"] * 5
        + ["402 spend-cap-reached cap=3000000"] * 2
    )


def test_a_busy_customers_cap_is_refreshed_in_the_background_and_never_older_than_the_ttl() -> None:
    async def scenario() -> list[object]:
        clock = ManualClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
        caps = FakeCaps()
        caps.caps["busy"] = CustomerCap(Decimal(1), "USD")
        resolver = CustomerCapResolver(cast(CustomerCapStore, caps), clock.monotonic, ttl_s=1.0)
        seen: list[object] = [resolver.cached("busy")]  # never read: must be awaited
        seen.append(await resolver.resolve("busy"))
        caps.caps["busy"] = CustomerCap(Decimal(2), "USD")
        clock.advance(0.4)
        seen.append(resolver.cached("busy"))  # young: held, no read
        clock.advance(0.2)
        seen.append(resolver.cached("busy"))  # past half the TTL: held, and read again in the background
        await asyncio.sleep(0)
        seen.append(resolver.cached("busy"))
        seen.append(caps.lookups)
        clock.advance(1.0)
        seen.append(resolver.cached("busy"))  # a whole TTL without a check: must be awaited again
        return seen

    one, two = CustomerCap(Decimal(1), "USD"), CustomerCap(Decimal(2), "USD")
    assert asyncio.run(scenario()) == [False, one, one, one, two, 2, False]


class FailingCaps:
    async def get(self, customer_id: str) -> CustomerCap | None:
        raise ConnectionError("Redis is away")


def test_a_cap_that_cannot_be_read_fails_closed() -> None:
    async def scenario() -> str:
        clock = ManualClock(datetime(2026, 12, 7, 12, tzinfo=UTC))
        await STORE.put(Subscription.new("away", "capped", datetime(2026, 1, 1, tzinfo=UTC)))
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
            SubscriptionResolver(STORE, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
            customer_caps=CustomerCapResolver(cast(CustomerCapStore, FailingCaps()), clock.monotonic),
        )
        try:
            await gate.admit("away", "GET", "/v1/items")
        except EntitlementsUnavailable as refused:
            return str(refused)
        return "admitted"

    assert asyncio.run(scenario()) == "the spend cap could not be read: Redis is away"
