"""Phases (issue 16, item 2): the catalog's ``phases`` compiled into phase plans, a subscription's phases
resolved into scheduled plan changes (lengths in local days or billing periods; overlaps, gaps and bad
lengths refused), a plan change ending the phase in force, stored records unchanged, and the gate
enforcing a prepaid plan's trial without any money check."""

import asyncio
import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.clock import ManualClock
from tollway.entitlements.errors import PaymentRequired
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.plans.catalog import catalog_digest
from tollway.plans.errors import CatalogError
from tollway.plans.loader import compile_catalog_text, load_catalog_text
from tollway.plans.versions import version_digest
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import PlanChange, Subscription
from tollway.subscriptions.phases import (
    PhaseRequest,
    ResolvedPhase,
    change_plan,
    phase_length,
    phases_of,
    resolve_phases,
    with_phases,
)
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: phases, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes:
      - {methods: [GET], path: /v1/items}
plans:
  payg:
    features: [items]
    limits: [{name: per-second, limit: 100, per: second}]
    quotas: [{name: monthly, limit: 1000, meter: requests}]
    prepaid: {unit: USD}
    spend_cap: {amount: "50.00"}
    phases:
      - {id: trial, days: 14, free: true}
    pricing:
      currency: USD
      interval: month
      minimum_commitment: "5.00"
      charges:
        - {id: platform, model: flat, amount: "9.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.10"}
      coupons: [{id: welcome, amount: "3.00"}]
  pro:
    versions:
      1:
        features: [items]
        pricing: {currency: USD, interval: month, charges: [{id: platform, model: flat, amount: "10.00"}]}
      2:
        features: [items]
        phases:
          - {id: trial, days: 7, free: true}
          - {id: intro, periods: 2, percent_off: "25"}
        pricing: {currency: USD, interval: month, charges: [{id: platform, model: flat, amount: "12.00"}]}
"""


def test_the_catalog_compiles_each_phase_into_a_plan_with_the_same_entitlements() -> None:
    catalog = load_catalog_text(CATALOG, "catalog.yaml")
    assert sorted(catalog.plans) == ["payg", "payg:trial", "pro", "pro@1", "pro@2", "pro@2:intro", "pro@2:trial"]
    payg, trial = catalog.plans["payg"], catalog.plans["payg:trial"]
    assert (trial.features, trial.limits, trial.quotas) == (payg.features, payg.limits, payg.quotas)
    # A trial: the currency and interval, nothing to charge, no balance to burn, no cap.
    assert trial.pricing is not None
    assert (trial.pricing.currency, trial.pricing.interval, trial.pricing.charges) == ("USD", "month", [])
    assert (trial.pricing.minimum_commitment, trial.pricing.coupons, trial.pricing.discounts) == (None, [], [])
    assert (trial.prepaid, trial.spend_cap) == (None, None)
    # A ramp: the version's pricing with one more invoice discount.
    intro = catalog.plans["pro@2:intro"].pricing
    assert intro is not None
    assert [(d.id, d.percent, d.applies_to) for d in intro.discounts] == [("phase-intro", Decimal(25), "invoice")]
    assert intro.charges == catalog.plans["pro@2"].pricing.charges  # type: ignore[union-attr]
    compiled = compile_catalog_text(CATALOG, "catalog.yaml")
    assert compiled.money_terms("payg") is not None
    assert compiled.money_terms("payg:trial") is None
    assert compiled.plan_grants("payg:trial", "items")


def test_phases_are_part_of_a_published_version_and_a_catalog_without_them_digests_as_before() -> None:
    catalog = load_catalog_text(CATALOG, "catalog.yaml")
    without = load_catalog_text(CATALOG.replace("    phases:\n      - {id: trial, days: 14, free: true}\n", ""), "x")
    assert "payg:trial" not in without.plans
    assert version_digest(catalog.plans["payg"]) != version_digest(without.plans["payg"])
    plain = catalog.plans["pro@1"].model_dump(mode="json", by_alias=True)
    assert "phases" not in plain  # unset: left out of every dump, so older catalogs digest as they did
    assert catalog_digest(without) != catalog_digest(catalog)


@pytest.mark.parametrize(
    ("phases", "where", "message"),
    [
        ("[{id: trial, days: 0, free: true}]", "plans.payg.phases[0].days", "must be at least 1"),
        ("[{id: trial, days: 3661, free: true}]", "plans.payg.phases[0].days", "at most 3660"),
        ("[{id: trial, free: true}]", "plans.payg.phases[0]", "exactly one of `days` or `periods`"),
        ("[{id: trial, days: 3, periods: 1, free: true}]", "plans.payg.phases[0]", "exactly one of `days`"),
        ("[{id: trial, days: 3}]", "plans.payg.phases[0]", "exactly one of `free: true` or `percent_off`"),
        ("[{id: ramp, days: 3, percent_off: '100'}]", "plans.payg.phases[0].percent_off", "below 100"),
        ("[{id: Trial, days: 3, free: true}]", "plans.payg.phases[0].id", "must be an identifier"),
        ("[]", "plans.payg.phases", "must not be empty"),
        ("[{id: t, days: 3, free: true}, {id: t, days: 4, free: true}]", "plans.payg.phases[1].id", "listed twice"),
        ("[{id: ramp, days: 3, percent_off: '10'}]", "plans.payg.phases[0].percent_off", "prepaid plan cannot"),
    ],
)
def test_bad_catalog_phases_are_reported_with_file_and_line(phases: str, where: str, message: str) -> None:
    text = CATALOG.replace("    phases:\n      - {id: trial, days: 14, free: true}\n", f"    phases: {phases}\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, "catalog.yaml")
    [issue] = caught.value.issues
    assert (issue.file, issue.line) == ("catalog.yaml", 17)
    assert issue.message.startswith(where + ":"), issue.message
    assert message in issue.message


def test_a_plan_with_phases_needs_pricing() -> None:
    text = CATALOG.replace(
        "  pro:\n", "  free:\n    features: [items]\n    phases: [{id: trial, days: 3, free: true}]\n  pro:\n"
    )
    with pytest.raises(CatalogError, match=r"catalog.yaml:\d+:\d+: plans.free.phases: phases price the plan"):
        load_catalog_text(text, "catalog.yaml")


START = datetime(2026, 10, 20, 7, 30, tzinfo=UTC)  # 09:30 in Paris (CEST)


def paris(plan: str = "pro@2", interval: str = "month") -> Subscription:
    return Subscription.new("acme", plan, START, timezone="Europe/Paris", interval=interval)  # type: ignore[arg-type]


def test_days_are_local_days_and_periods_are_anniversaries_from_the_phase_start() -> None:
    subscription = paris()
    trial, intro = resolve_phases(
        [PhaseRequest("pro@2:trial", days=14), PhaseRequest("pro@2:intro", periods=2)], subscription, "pro@2"
    )
    # Summer time ends on 25 October: 14 local days later is still 09:30 in Paris, 08:30 UTC.
    assert (trial.start, trial.end) == (START, datetime(2026, 11, 3, 8, 30, tzinfo=UTC))
    assert intro.end == datetime(2027, 1, 3, 8, 30, tzinfo=UTC)  # two months from 3 November, 09:30 local
    # From 31 January, one period ends on the last day of February (an anniversary).
    january = Subscription.new("acme", "pro@2", datetime(2027, 1, 31, tzinfo=UTC))
    [phase] = resolve_phases([PhaseRequest("pro@2:intro", periods=1)], january, "pro@2")
    assert phase.end == datetime(2027, 2, 28, tzinfo=UTC)


def test_a_subscription_with_phases_is_a_chain_of_scheduled_phase_ends() -> None:
    subscription = paris()
    phases = resolve_phases(
        [PhaseRequest("pro@2:trial", days=14), PhaseRequest("pro@2:intro", periods=2)], subscription, "pro@2"
    )
    phased = with_phases(subscription, phases)
    assert phased.first_plan_id == "pro@2:trial"
    assert phased.plan_id == "pro@2"
    assert [(c.previous_plan_id, c.plan_id, c.phase) for c in phased.changes] == [
        ("pro@2:trial", "pro@2:intro", True),
        ("pro@2:intro", "pro@2", True),
    ]
    assert phases_of(phased) == phases
    in_trial = int(datetime(2026, 10, 25, tzinfo=UTC).timestamp() * 1000)
    assert phased.as_of(in_trial).plan_id == "pro@2:trial"
    assert [t.plan_id for t in phased.terms(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))] == [
        "pro@2:trial",
        "pro@2:intro",
    ]
    # Stored and read back; a record without phases is stored exactly as before.
    assert Subscription.from_fields(phased.to_fields()) == phased
    assert '"phase":true' in phased.to_fields()["plan_changes"]
    plain = subscription.changed_to("pro@1", datetime(2026, 10, 21, tzinfo=UTC))
    assert plain.to_fields()["plan_changes"] == '[{"at":"2026-10-21T00:00:00Z","from":"pro@2","to":"pro@1"}]'
    with pytest.raises(ValueError, match="phase flag"):
        PlanChange(START, "a", "b", "yes")  # type: ignore[arg-type]


def test_overlaps_gaps_and_bad_lengths_are_refused_naming_the_phase() -> None:
    subscription = paris()
    at = datetime(2026, 10, 27, tzinfo=UTC)
    cases = [
        ([PhaseRequest("t", end=at), PhaseRequest("i", start=at.replace(day=26), days=3)],
         "phase 2 (i for 3 day(s)) overlaps the phase before it: it starts at 2026-10-26T00:00:00Z, before "
         "phase 1 ends (2026-10-27T00:00:00Z)"),
        ([PhaseRequest("t", end=at), PhaseRequest("i", start=at.replace(day=28), days=3)], "leaves a gap"),
        ([PhaseRequest("t", start=datetime(2026, 10, 19, tzinfo=UTC), days=3)], "before the subscription's start"),
        ([PhaseRequest("t", end=START)], "not after it starts"),
        ([PhaseRequest("t", days=3, periods=1)], "give exactly one of days, periods or an end"),
        ([PhaseRequest("t", days=3), PhaseRequest("t", days=3)], "phase 2 (t for 3 day(s)) is on the same plan"),
        ([PhaseRequest("pro@2", days=3)], "is on 'pro@2', the plan the subscription moves to"),
        ([PhaseRequest(f"p{n}", days=1) for n in range(13)], "at most 12 phases"),
    ]  # fmt: skip
    for requests, message in cases:
        with pytest.raises(ValueError) as caught:
            resolve_phases(requests, subscription, "pro@2")
        assert message in str(caught.value), (requests, caught.value)
    for text, message in (("0d", "from 1 to 3660"), ("3661periods", "from 1 to 3660"), ("2w", r"days \(14d\)")):
        with pytest.raises(ValueError, match=message):
            phase_length("--phase", "t", text)
    assert phase_length("--phase", "t", "3periods") == PhaseRequest("t", periods=3)
    assert phase_length("--phase", "t", "14days") == PhaseRequest("t", days=14)


@settings(deadline=None)  # a shared machine: no timing in a correctness property
@given(st.lists(st.one_of(st.integers(1, 40).map(lambda d: ("d", d)), st.integers(1, 4).map(lambda p: ("p", p))),
                min_size=1, max_size=6))  # fmt: skip
def test_any_lengths_resolve_to_consecutive_phases_from_the_start(lengths: list[tuple[str, int]]) -> None:
    subscription = paris()
    requests = [
        PhaseRequest(f"p{n}", days=count if kind == "d" else None, periods=count if kind == "p" else None)
        for n, (kind, count) in enumerate(lengths)
    ]
    phases = resolve_phases(requests, subscription, "pro@2")
    assert phases[0].start == subscription.started_at
    assert all(a.end == b.start for a, b in itertools.pairwise(phases))
    assert all(p.start < p.end for p in phases)
    phased = with_phases(subscription, phases)
    assert phases_of(phased) == phases


def test_a_plan_change_during_a_phase_ends_it_then_and_drops_the_phases_to_come() -> None:
    subscription = paris()
    phased = with_phases(
        subscription,
        (
            ResolvedPhase("pro@2:trial", START, datetime(2026, 11, 3, 8, 30, tzinfo=UTC)),
            ResolvedPhase("pro@2:intro", datetime(2026, 11, 3, 8, 30, tzinfo=UTC), datetime(2027, 1, 3, tzinfo=UTC)),
        ),
    )
    upgrade = datetime(2026, 10, 24, 13, 15, tzinfo=UTC)
    team = change_plan(phased, "team", upgrade)
    assert [c.as_dict() for c in team.changes] == [{"at": "2026-10-24T13:15:00Z", "from": "pro@2:trial", "to": "team"}]
    # During the ramp: the trial's end stays (it is history), the ramp ends at the change.
    later = change_plan(phased, "team", datetime(2026, 12, 1, tzinfo=UTC))
    assert [(c.plan_id, c.phase) for c in later.changes] == [("pro@2:intro", True), ("team", False)]
    # The plan the phases lead to: the trial converts early, the ramp never begins.
    converted = change_plan(phased, "pro@2", upgrade)
    assert [c.as_dict() for c in converted.changes] == [
        {"at": "2026-10-24T13:15:00Z", "from": "pro@2:trial", "to": "pro@2"}
    ]
    with pytest.raises(ValueError, match="with no phase after 2026-10-25T00:00:00Z to end"):
        change_plan(converted, "pro@2", datetime(2026, 10, 25, tzinfo=UTC))
    # Back to the plan in force is no change.
    with pytest.raises(ValueError, match="the plan held at"):
        change_plan(phased, "pro@2:trial", upgrade)
    # A scheduled change that is not a phase end (a migration) is not dropped: refused as before.
    migrated = subscription.changed_to("pro@1", datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="must come after the previous plan change"):
        change_plan(migrated, "team", upgrade)
    with pytest.raises(ValueError, match="when a subscription starts"):
        with_phases(migrated, phases_of(phased))


def test_the_gate_enforces_a_prepaid_plans_trial_without_touching_money_then_the_plan() -> None:
    async def scenario() -> list[str]:
        clock = ManualClock(datetime(2026, 12, 3, 12, tzinfo=UTC))
        store = MemorySubscriptionStore()
        trial = Subscription.new("acme", "payg", datetime(2026, 12, 1, tzinfo=UTC))
        phases = resolve_phases([PhaseRequest("payg:trial", days=14)], trial, "payg")
        await store.put(with_phases(trial, phases))
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml")),
            SubscriptionResolver(store, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
        )
        seen = []
        for day in (3, 14, 15):
            clock.set(datetime(2026, 12, day, 12, tzinfo=UTC))
            try:
                admission = await gate.admit("acme", "GET", "/v1/items")
            except PaymentRequired as refused:
                seen.append(f"{day}: 402 {refused.reason}")
            else:
                money = None if admission.verdict is None else admission.verdict.money
                seen.append(f"{day}: 200 {admission.plan_id} money={money}")
        return seen

    # No balance at all: the trial admits (quota and limits checked, no money); from 15 December the
    # prepaid plan needs a balance.
    assert asyncio.run(scenario()) == [
        "3: 200 payg:trial money=None",
        "14: 200 payg:trial money=None",
        "15: 402 insufficient-credits",
    ]


def test_a_versioned_plans_phases_are_pinned_to_the_version_sold(tmp_path: Path) -> None:
    """The faces' catalog checks: a new subscriber of ``pro`` gets ``pro@2`` and its phases; a phase
    named with the bare id is pinned too; one the catalog lacks is refused naming it."""
    from tollway.subscriptions.requests import catalog_phases, pinned_plan

    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    assert pinned_plan(path, "pro", None) == "pro@2"
    assert catalog_phases(path, "pro@2", None, "month") == (
        None,
        [PhaseRequest("pro@2:trial", days=7), PhaseRequest("pro@2:intro", periods=2)],
    )
    asked, _ = catalog_phases(path, "pro@2", [PhaseRequest("pro:intro", days=3)], "month")
    assert asked == [PhaseRequest("pro@2:intro", days=3)]
    with pytest.raises(ValueError, match=r"phase 1: plan 'pro:nope' is not in the catalog"):
        catalog_phases(path, "pro@2", [PhaseRequest("pro:nope", days=3)], "month")
    with pytest.raises(ValueError, match="priced per month, the subscription's plan per year"):
        catalog_phases(path, "pro@2", [PhaseRequest("pro@2:trial", days=3)], "year")


def test_the_catalog_reference_example_loads() -> None:
    """docs/catalog-reference.md, "Phases": the example compiles to the plans it says."""
    section = (Path(__file__).parents[3] / "docs" / "catalog-reference.md").read_text().split("## Phases", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    header = CATALOG.split("plans:\n", 1)[0].replace("path: /v1/items", "prefix: /v1/items")
    catalog = load_catalog_text(header + example, "catalog-reference.md")
    assert sorted(catalog.plans) == ["pro", "pro:intro", "pro:trial"]
    intro = catalog.plans["pro:intro"].pricing
    assert intro is not None
    assert intro.discounts[-1].percent == Decimal(50)
    assert catalog.plans["pro:trial"].pricing.charges == []  # type: ignore[union-attr]


def test_a_customer_in_a_phase_is_not_a_subscriber_of_the_version_to_migrate() -> None:
    """``migrate --from pro@2`` compares the plan in force with the version: a phase plan is only itself
    (before: ``pro@2:trial`` was parsed as a version and the command failed for everyone)."""
    from tollway.plans.versions import pin, same_version
    from tollway.subscriptions.migration import plan_migration

    assert not same_version("pro@2:trial", "pro@2")
    assert same_version("pro@2:trial", "pro@2:trial")
    assert same_version("pro", "pro@1")
    plans = load_catalog_text(CATALOG, "catalog.yaml").plans
    assert pin(plans, "pro", held="pro@2:trial") == "pro@2"
    phased = with_phases(paris(), resolve_phases([PhaseRequest("pro@2:trial", days=14)], paris(), "pro@2"))
    with pytest.raises(ValueError, match="already has a plan change scheduled"):
        plan_migration([phased], "pro@1", "next-period", START)
