"""A subscription's add-ons: stored beside the plan (a record without them loads as before), bought,
re-sized and removed in spans, and the id the gateway enforces at each instant."""

from datetime import UTC, datetime

import pytest

from tests.unit.plans.test_addons import CATALOG
from tollway.plans.loader import load_catalog_text
from tollway.subscriptions.addons import check_sale, with_quantity
from tollway.subscriptions.model import AddOn, Subscription

START = datetime(2026, 11, 1, tzinfo=UTC)
BOUGHT = datetime(2026, 11, 10, tzinfo=UTC)
RESIZED = datetime(2026, 11, 15, tzinfo=UTC)
REMOVED = datetime(2026, 11, 20, tzinfo=UTC)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_a_record_written_before_add_ons_loads_unchanged() -> None:
    subscription = Subscription.new("acme", "pro", START)
    fields = subscription.to_fields()
    del fields["addons"]  # as every record stored before add-ons
    loaded = Subscription.from_fields(fields)
    assert loaded == subscription
    assert loaded.addons == ()
    assert loaded.entitled_plan(ms(BOUGHT)) == "pro"


def test_buy_resize_and_remove_make_spans_that_round_trip() -> None:
    subscription = Subscription.new("acme", "pro", START)
    bought = with_quantity(subscription, "calls_pack", 2, BOUGHT)
    resized = with_quantity(bought, "calls_pack", 3, RESIZED)
    removed = with_quantity(resized, "calls_pack", 0, REMOVED)
    assert removed.addons == (
        AddOn("calls_pack", 2, BOUGHT, RESIZED),
        AddOn("calls_pack", 3, RESIZED, REMOVED),
    )
    assert Subscription.from_fields(removed.to_fields()) == removed
    assert with_quantity(resized, "calls_pack", 3, REMOVED) is resized  # nothing changes
    # The id the gateway enforces at each instant.
    assert [removed.entitled_plan(ms(at)) for at in (START, BOUGHT, RESIZED, REMOVED)] == [
        "pro",
        "pro+calls_pack*2",
        "pro+calls_pack*3",
        "pro",
    ]


def test_add_on_changes_out_of_order_are_refused() -> None:
    subscription = with_quantity(Subscription.new("acme", "pro", START), "calls_pack", 2, RESIZED)
    with pytest.raises(ValueError, match="changes at 2026-11-15T00:00:00Z, after 2026-11-10T00:00:00Z"):
        with_quantity(subscription, "calls_pack", 1, BOUGHT)
    with pytest.raises(ValueError, match="before the subscription's start"):
        with_quantity(subscription, "exports", 1, datetime(2026, 10, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="does not hold add-on 'exports'"):
        with_quantity(subscription, "exports", 0, REMOVED)
    with pytest.raises(ValueError, match="held twice"):
        Subscription.new("acme", "pro", START).__class__(
            **{**_fields(subscription), "addons": (AddOn("x", 1, BOUGHT), AddOn("x", 1, RESIZED))}
        )
    with pytest.raises(ValueError, match="quantity of add-on 'x' must be from 1"):
        AddOn("x", 0, BOUGHT)
    with pytest.raises(ValueError, match="must end after it starts"):
        AddOn("x", 1, BOUGHT, BOUGHT)


def test_an_add_on_the_plan_does_not_allow_is_refused() -> None:
    plans = load_catalog_text(CATALOG + "  solo:\n    features: [search]\n", "addons.yaml").plans
    solo = Subscription.new("acme", "solo", START)
    with pytest.raises(ValueError, match=r"plan 'solo' does not allow add-on 'calls_pack' \(it allows: none\)"):
        check_sale(plans, solo, "calls_pack", 1, BOUGHT)
    pro = Subscription.new("acme", "pro", START)
    with pytest.raises(ValueError, match="add-on 'solo' is a plan, not an add-on"):
        check_sale(plans, pro, "solo", 1, BOUGHT)
    with pytest.raises(ValueError, match="add-on 'nope' is not in the catalog"):
        check_sale(plans, pro, "nope", 1, BOUGHT)
    with pytest.raises(ValueError, match="sold in quantities from 1 to 10, not 11"):
        check_sale(plans, pro, "calls_pack", 11, BOUGHT)
    with pytest.raises(ValueError, match="from 1 to 1, not 2"):
        check_sale(plans, pro, "exports", 2, BOUGHT)
    check_sale(plans, pro, "calls_pack", 10, BOUGHT)
    check_sale(plans, pro, "exports", 0, BOUGHT)  # a removal is always allowed


def _fields(subscription: Subscription) -> dict[str, object]:
    names = ("customer_id", "plan_id", "started_at", "timezone", "alignment", "anchor", "interval", "overrides")
    return {name: getattr(subscription, name) for name in names}
