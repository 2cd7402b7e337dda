"""``overdue:`` on a plan (``plans.overdue``): what an overdue customer gets at the gateway, validated with
file:line like every catalog field; a catalog without it keeps its digest."""

import re
from pathlib import Path

import pytest

from tollway.plans.errors import CatalogError
from tollway.plans.loader import compile_catalog_text, load_compiled_catalog
from tollway.plans.overdue import overdue_answer
from tollway.plans.versions import version_digest

ROOT = Path(__file__).parents[3]

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: overdue, version: "1"}
features:
  api:
    routes:
      - {methods: [GET], prefix: /v1/}
plans:
  free:
    features: [api]
    quotas:
      - {name: monthly, limit: 3}
  pro:
    features: [api]
    overdue: {plan: free}
    phases:
      - {id: trial, days: 14, free: true}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
  team:
    overdue: {refuse: true}
    versions:
      1:
        features: [api]
      2:
        features: [api]
"""


def test_a_catalog_without_overdue_keeps_its_digest() -> None:
    # The digest the code before overdue policies gave the shipped example catalog.
    assert load_compiled_catalog(ROOT / "plans" / "catalog.yaml").digest == (
        "sha256:65710107c1ce441743542d961c20b8c67b31fafb0aa27de320959d8409ecb160"
    )
    dumped = compile_catalog_text(CATALOG, "c.yaml").catalog.model_dump(mode="json")
    assert "overdue" not in dumped["plans"]["free"]
    assert dumped["plans"]["pro"]["overdue"] == {"plan": "free"}
    assert dumped["plans"]["team"]["overdue"] == {"refuse": True}


def test_every_version_and_phase_of_a_plan_has_its_overdue_policy_which_no_version_digest_includes() -> None:
    plans = compile_catalog_text(CATALOG, "c.yaml").plans
    assert overdue_answer(plans["pro"]) == "free"
    assert overdue_answer(plans["pro:trial"]) == "free"
    assert overdue_answer(plans["team@1"]) is overdue_answer(plans["team@2"]) is overdue_answer(plans["team"]) is True
    assert overdue_answer(plans["free"]) is None
    without = compile_catalog_text(CATALOG.replace("    overdue: {refuse: true}\n", ""), "c.yaml").plans
    assert version_digest(plans["team@2"]) == version_digest(without["team@2"])


@pytest.mark.parametrize(
    ("policy", "line", "message"),
    [
        ("{plan: fre}", 15, "plans.pro.overdue.plan: overdue plan 'fre' is not in the catalog"),
        ("{plan: pro}", 15, "a plan cannot be its own overdue plan ('pro')"),
        ("{plan: team@3}", 15, "overdue plan 'team@3' is not in the catalog"),
        ("{plan: team}", 15, "overdue plan 'team' declares an overdue policy of its own"),
        ("{plan: free, refuse: true}", 15, "overdue needs exactly one of `plan: <plan id>` or `refuse: true`"),
        ("{}", 15, "overdue needs exactly one of"),
        ("{refuse: false}", 15, "refuse"),
        ("{plan: Free!}", 15, "expected a plan id of this catalog"),
        ("{plan: free, after: 3d}", 15, "after"),
    ],
)
def test_a_bad_overdue_policy_is_refused_at_its_line(policy: str, line: int, message: str) -> None:
    text = CATALOG.replace("overdue: {plan: free}", f"overdue: {policy}")
    with pytest.raises(CatalogError) as caught:
        compile_catalog_text(text, "c.yaml")
    shown = str(caught.value)
    assert re.search(rf"^c\.yaml:{line}:\d+: ", shown, re.M), shown
    assert message in shown


def test_an_overdue_plan_may_be_a_version_but_not_an_addon() -> None:
    versioned = CATALOG.replace("overdue: {plan: free}", "overdue: {plan: team@2}").replace(
        "    overdue: {refuse: true}\n", ""
    )
    assert overdue_answer(compile_catalog_text(versioned, "c.yaml").plans["pro"]) == "team@2"
    addon = CATALOG.replace("  free:\n", "  free:\n    addon: {}\n")
    with pytest.raises(CatalogError, match="overdue plan 'free' is an add-on"):
        compile_catalog_text(addon, "c.yaml")


def test_the_documented_example_loads_with_its_policies() -> None:
    docs = (ROOT / "docs" / "catalog-reference.md").read_text()
    example = docs.split("<!-- overdue-example -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    header = (
        'apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: acme, version: "1"}\n'
        "features:\n  items-read:\n    routes: [{methods: [GET], path: /v1/items}]\n"
        "  search:\n    routes: [{methods: [GET], path: /v1/search}]\n"
    )
    plans = compile_catalog_text(header + example, "plans.yaml").plans
    assert [overdue_answer(plans[p]) for p in ("free", "pro", "enterprise")] == [None, "free", True]
