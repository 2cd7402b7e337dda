"""Add-ons in the catalog: which plans allow which, the problems reported at file:line, and the combined
plan the gateway enforces (quotas add × quantity, features union, strictest rate limit unless the
add-on replaces it), built once per combined id by the compiled catalog."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.plans.catalog import catalog_digest
from tollway.plans.combined_ids import combined_plan_id, split_combined_id
from tollway.plans.errors import CatalogError, UnknownPlan
from tollway.plans.loader import compile_catalog_text, load_catalog_text

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: addons, version: "1"}
meters:
  requests: {unit: requests}
features:
  search:
    routes: [{methods: [GET], path: /v1/search}]
  export:
    routes: [{methods: [GET], path: /v1/export}]
plans:
  pro:
    features: [search]
    addons: [calls_pack, exports, burst, throttle]
    limits:
      - {name: per_second, limit: 10, per: second}
    quotas:
      - {name: monthly, limit: 1000}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "49.00"}
  calls_pack:
    addon: {max_quantity: 10}
    quotas:
      - {name: monthly, limit: 500}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: pack, model: flat, amount: "20.00"}
  exports:
    addon: {}
    features: [export]
    quotas:
      - {name: exports_monthly, limit: 50, features: [export]}
  burst:
    addon: {limits: replace}
    limits:
      - {name: per_second, limit: 100, per: second}
  throttle:
    addon: {}
    limits:
      - {name: per_second, limit: 3, per: second}
      - {name: per_day, limit: 5000, per: day}
"""


def test_quotas_add_times_the_quantity_on_the_same_policy_name() -> None:
    catalog = compile_catalog_text(CATALOG, "addons.yaml")
    # 1000 + 3 × 500 = 2500, under the base plan's policy name `monthly` (the same counter).
    [monthly] = catalog.quotas_for("pro+calls_pack*3", "search")
    assert (monthly.name, monthly.limit) == ("monthly", 2500)
    assert [q.limit for q in catalog.quotas_for("pro", "search")] == [1000]  # the base plan is untouched


def test_features_union_and_an_add_on_quota_of_its_own() -> None:
    catalog = compile_catalog_text(CATALOG, "addons.yaml")
    assert not catalog.plan_grants("pro", "export")
    assert catalog.plan_grants("pro+exports", "export")
    assert catalog.plan_grants("pro+exports", "search")
    assert [(q.name, q.limit) for q in catalog.quotas_for("pro+exports", "export")] == [
        ("monthly", 1000),
        ("exports_monthly", 50),
    ]
    assert [q.name for q in catalog.quotas_for("pro+exports", "search")] == ["monthly"]


def test_the_strictest_rate_limit_wins_unless_the_add_on_replaces_it() -> None:
    catalog = compile_catalog_text(CATALOG, "addons.yaml")
    limits = {limit.name: limit.limit for limit in catalog.limits_for("pro+throttle", "search")}
    assert limits == {"per_second": 3, "per_day": 5000}  # min(10, 3); a new limit is added
    assert {x.name: x.limit for x in catalog.limits_for("pro+burst", "search")} == {"per_second": 100}
    # Together: the replacement holds for per_second, the strictest for the rest.
    both = {x.name: x.limit for x in catalog.limits_for("pro+burst+throttle", "search")}
    assert both == {"per_second": 100, "per_day": 5000}


def test_a_combined_plan_is_built_once_and_keeps_the_base_plans_terms() -> None:
    catalog = compile_catalog_text(CATALOG, "addons.yaml")
    first = catalog.plan("pro+calls_pack*2")
    assert catalog.plan("pro+calls_pack*2") is first
    assert first.pricing == catalog.plan("pro").pricing
    assert catalog.money_terms("pro+calls_pack*2") is catalog.money_terms("pro")
    assert "pro+calls_pack*2" not in catalog.plans  # not a plan of the catalog: listings are unchanged
    with pytest.raises(UnknownPlan):
        catalog.plan("pro+missing")
    with pytest.raises(UnknownPlan):
        catalog.plan("pro+pro")  # a plan, not an add-on


def test_a_catalog_without_add_ons_digests_as_before() -> None:
    text = CATALOG.split("  calls_pack:")[0].replace("    addons: [calls_pack, exports, burst, throttle]\n", "")
    plain = load_catalog_text(text, "plain.yaml")
    assert "addon" not in plain.model_dump(mode="json")["plans"]["pro"]
    assert catalog_digest(plain) == catalog_digest(load_catalog_text(text + "\n", "again.yaml"))


BAD = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: bad-addons, version: "1"}
meters:
  requests: {unit: requests}
plans:
  pro:
    addons: [seats, nothing, basic, seats, euros]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "49.00"}
  basic: {}
  seats:
    addon: {max_quantity: 0}
    addons: [seats]
    pricing:
      currency: USD
      interval: month
      minimum_commitment: "5.00"
      charges:
        - {id: seat, model: per_unit, meter: requests, unit_amount: "1.00"}
  euros:
    addon: {}
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: fee, model: flat, amount: "1.00"}
"""


def test_add_on_problems_are_reported_at_file_and_line() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog_text(BAD, "bad.yaml")
    text = str(info.value)
    assert "bad.yaml:16:27: plans.seats.addon.max_quantity: must be at least 1" in text  # structural: first, alone
    fixed = BAD.replace("max_quantity: 0", "max_quantity: 5")
    with pytest.raises(CatalogError) as info:
        load_catalog_text(fixed, "bad.yaml")
    issues = [f"{issue.line}: {issue.message}" for issue in info.value.issues]
    assert issues == [
        "8: plans.pro.addons[1]: add-on 'nothing' is not in the catalog (add-ons: euros, seats)",
        "8: plans.pro.addons[2]: add-on 'basic' is a plan without `addon:` terms (add-ons: euros, seats)",
        "8: plans.pro.addons[3]: add-on 'seats' is listed twice",
        "8: plans.pro.addons[4]: add-on 'euros' is priced in EUR per month, plan 'pro' in USD per month: an add-on "
        "bills on its plan's invoice and periods",
        "17: plans.seats.addons: an add-on cannot itself list add-ons",
        "21: plans.seats.pricing.minimum_commitment: an add-on has no minimum_commitment (the base plan's applies)",
        "23: plans.seats.pricing.charges[0]: an add-on is priced by flat fees only (times its quantity); usage is "
        "priced by the base plan",
    ]


def test_the_catalog_references_add_on_example_is_valid() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[3] / "docs" / "catalog-reference.md").read_text()
    example = page.split("## Add-ons\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    header = (
        'apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: reference, version: "1"}\n'
        "features:\n  search: {routes: [{methods: [GET], path: /s}]}\n"
        "  export: {routes: [{methods: [GET], path: /e}]}\n"
    )
    catalog = compile_catalog_text(header + example, "catalog-reference.md")
    assert catalog.plans["seats"].addon is not None
    assert catalog.plans["seats"].addon.max_quantity == 50
    assert [q.limit for q in catalog.quotas_for("pro+calls_pack", "search")] == [1500]
    assert [x.limit for x in catalog.limits_for("pro+burst", "search")] == [100]
    assert catalog.plan_grants("pro+exports+seats*7", "export")


IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@given(
    base=IDENT,
    held=st.lists(st.tuples(IDENT, st.integers(min_value=1, max_value=10**6)), max_size=5),
)
def test_a_combined_id_is_one_per_combination_and_reads_back(base: str, held: list[tuple[str, int]]) -> None:
    combined = combined_plan_id(base, held)
    totals: dict[str, int] = {}
    for name, quantity in held:
        totals[name] = totals.get(name, 0) + quantity
    assert combined_plan_id(base, list(reversed(held))) == combined  # order does not matter
    if not held:
        assert combined == base
        return
    assert split_combined_id(combined) == (base, tuple(sorted(totals.items())))


@settings(deadline=None, max_examples=25)
@given(
    packs=st.lists(st.integers(min_value=1, max_value=10), min_size=0, max_size=2),
    limits=st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=2),
)
def test_quotas_add_and_the_strictest_limit_wins_for_any_quantities(packs: list[int], limits: list[int]) -> None:
    catalog = compile_catalog_text(CATALOG.replace("limit: 3, per: second", f"limit: {limits[0]}, per: second"), "x")
    held = [("calls_pack", packs[0])] if packs else []
    held += [("throttle", 1)]
    combined = combined_plan_id("pro", held)
    [monthly] = catalog.quotas_for(combined, "search")
    assert monthly.limit == 1000 + 500 * sum(packs[:1])
    per_second = next(x for x in catalog.limits_for(combined, "search") if x.name == "per_second")
    assert per_second.limit == min(10, limits[0])


@pytest.mark.parametrize("text", ["pro", "pro+", "+a", "pro+a*", "pro+a*x", "pro+*2"])
def test_a_malformed_combined_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a combined plan id"):
        split_combined_id(text)
