from decimal import Decimal
from pathlib import Path

import pytest

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.loader import load_catalog, load_catalog_text, load_compiled_catalog
from tollway.plans.pricing import FlatCharge, GraduatedCharge, PerUnitCharge
from tollway.plans.yaml_source import MAX_ALIAS_NODES

PLANS = Path(__file__).parents[3] / "plans"

MINIMAL = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: t, version: "1"}
meters:
  requests: {unit: requests}
features:
  read:
    routes: [{methods: [GET], path: /v1/items}]
plans:
  pro:
    features: [read]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: 0.0004}
"""


def _issues(text: str, filename: str = "c.yaml") -> list[CatalogIssue]:
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, filename)
    return caught.value.issues


@pytest.mark.parametrize("name", ["catalog.yaml", "configmap.yaml"])
def test_example_catalogs_load(name: str) -> None:
    compiled = load_compiled_catalog(PLANS / name)
    assert compiled.name == "acme-data-api"
    assert set(compiled.catalog.plans) == {
        "free",
        "pro",
        "payg",
        "enterprise",
        "team",
        "scale",
        "startup",
        "startup:trial",
        "calls-pack",
    }
    assert compiled.digest.startswith("sha256:")
    assert len(compiled.digest) == 7 + 64


def test_configmap_and_plain_catalog_stay_in_sync() -> None:
    plain = load_compiled_catalog(PLANS / "catalog.yaml")
    wrapped = load_compiled_catalog(PLANS / "configmap.yaml")
    assert plain.digest == wrapped.digest


def test_example_catalog_uses_the_advertised_features() -> None:
    catalog = load_catalog(PLANS / "catalog.yaml")
    pro, enterprise = catalog.plans["pro"], catalog.plans["enterprise"]
    assert any(limit.shadow for limit in pro.limits)
    assert any(limit.enforcement == "soft" for limit in enterprise.limits)
    models = {c.model for plan in catalog.plans.values() if plan.pricing for c in plan.pricing.charges}
    assert models == {"flat", "per_unit", "graduated", "volume", "package", "allowance"}
    assert pro.pricing is not None
    platform = pro.pricing.charges[0]
    assert isinstance(platform, FlatCharge)
    assert platform.amount == Decimal("49.00")


def test_unquoted_decimal_money_is_taken_exactly_as_written() -> None:
    catalog = load_catalog_text(MINIMAL, "c.yaml")
    pricing = catalog.plans["pro"].pricing
    assert pricing is not None
    charge = pricing.charges[0]
    assert isinstance(charge, PerUnitCharge)
    assert charge.unit_amount == Decimal("0.0004")
    assert str(charge.unit_amount) == "0.0004"  # from the source text, not float 0.0004 → Decimal


def test_python_floats_are_refused_for_money() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="binary float"):
        FlatCharge.model_validate({"id": "x", "model": "flat", "amount": 49.0})


def test_tiers_keep_inclusive_up_to_and_null_last() -> None:
    catalog = load_catalog(PLANS / "catalog.yaml")
    pricing = catalog.plans["pro"].pricing
    assert pricing is not None
    calls = pricing.charges[1]
    assert isinstance(calls, GraduatedCharge)
    assert [t.up_to for t in calls.tiers] == [1_000_000, 10_000_000, None]


def test_digest_ignores_formatting_comments_and_key_order() -> None:
    reordered = MINIMAL.replace('metadata: {name: t, version: "1"}', '# a comment\nmetadata: {version: "1", name: t}')
    assert (
        CompiledCatalog.build(load_catalog_text(MINIMAL, "a")).digest
        == CompiledCatalog.build(load_catalog_text(reordered, "b")).digest
    )
    changed = MINIMAL.replace("0.0004", "0.0005")
    assert (
        CompiledCatalog.build(load_catalog_text(MINIMAL, "a")).digest
        != CompiledCatalog.build(load_catalog_text(changed, "b")).digest
    )


def test_empty_file() -> None:
    assert [str(i) for i in _issues("")] == ["c.yaml:1:1: the catalog is empty"]


def test_top_level_must_be_a_mapping() -> None:
    [issue] = _issues("- a\n- b\n")
    assert (issue.line, issue.column) == (1, 1)
    assert "expected a mapping" in issue.message


def test_duplicate_nested_keys_are_reported_and_validation_goes_on() -> None:
    text = MINIMAL.replace("  requests: {unit: requests}", "  requests: {unit: requests, unit: cost}")
    text = text.replace("features: [read]", "features: [read]\n    outage_policy: sometimes")
    issues = _issues(text)
    assert [(i.line, i.message.split(":")[0]) for i in issues] == [
        (5, "meters.requests.unit"),
        (12, "plans.pro.outage_policy"),
    ]
    assert "duplicate key" in issues[0].message


def test_merge_keys_are_refused() -> None:
    text = MINIMAL + "  other:\n    <<: {features: [read]}\n"
    [issue] = _issues(text)
    assert "merge keys" in issue.message
    assert issue.line == 18


def test_a_number_where_text_is_expected_says_to_quote_it() -> None:
    [issue] = _issues(MINIMAL.replace('version: "1"', "version: 1.10"))
    assert "quote it" in issue.message
    assert issue.value == "1.10"


def test_multiple_documents_are_a_syntax_error() -> None:
    [issue] = _issues(MINIMAL + "---\nfoo: 1\n")
    assert issue.message == "YAML syntax error: a catalog is one YAML document; found the start of another"
    assert issue.line == 17


CONFIGMAP_HEAD = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plans}\ndata:\n"


def _indent(text: str, by: int) -> str:
    return "".join(" " * by + line if line.strip() else line for line in text.splitlines(keepends=True))


def test_configmap_syntax_error_points_into_the_configmap_file() -> None:
    broken = MINIMAL.replace("features: [read]", "features: [read")
    text = CONFIGMAP_HEAD + "  catalog.yaml: |\n" + _indent(broken, 4)
    [issue] = _issues(text, "cm.yaml")
    assert issue.message.startswith("YAML syntax error")
    assert issue.line == 5 + 12  # line 12 of the catalog, after 5 lines of ConfigMap
    assert issue.value == '"pricing:"'


def test_configmap_with_explicit_indentation_indicator() -> None:
    text = CONFIGMAP_HEAD + "  catalog.yaml: |2\n" + _indent(MINIMAL.replace("month", "fortnight"), 4)
    [issue] = _issues(text)
    line = text.splitlines()[issue.line - 1]
    assert "fortnight" in line
    assert issue.column == line.index("fortnight") + 1


def test_configmap_with_another_scalar_style_points_at_the_data_key() -> None:
    import json

    text = CONFIGMAP_HEAD + "  catalog.yaml: " + json.dumps(MINIMAL.replace("month", "fortnight")) + "\n"
    [issue] = _issues(text)
    assert (issue.line, issue.column) == (5, 3)
    assert "[at line 14, column 17 of data.catalog.yaml]" in issue.message


def test_configmap_picks_the_single_yaml_key() -> None:
    text = CONFIGMAP_HEAD + "  README: hello\n  acme.yml: |\n" + _indent(MINIMAL, 4)
    assert load_catalog_text(text, "cm.yaml").metadata.name == "t"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("  a.yaml: x\n  b.yaml: y\n", "exactly one *.yaml"),
        ("  README: hello\n", "exactly one *.yaml"),
        ("  catalog.yaml: [1, 2]\n", "must be a string"),
        ('  catalog.yaml: ""\n', "is empty"),
    ],
)
def test_configmap_without_a_usable_catalog(data: str, message: str) -> None:
    [issue] = _issues(CONFIGMAP_HEAD + data)
    assert message in issue.message


def test_recursive_aliases_and_alias_bombs_are_refused() -> None:
    [issue] = _issues(MINIMAL + "  loop: &a {features: *a}\n")
    assert "alias refers to a node that contains it" in issue.message
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
    )
    [issue] = _issues(bomb)
    assert f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes" in issue.message
    assert issue.line == 2  # at an alias (b: [*a, ...]), the innermost being expanded
