"""Plan versions in the catalog: compilation into ordinary plans (``pro@2``), published digests refused when
edited in place (file:line) unless marked as a correction, ``tollway plans publish``, and pinning."""

import argparse
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.cli import plans as plans_cli
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, UnknownPlan
from tollway.plans.loader import load_catalog_text
from tollway.plans.publish import publish
from tollway.plans.versions import MAX_VERSION, expand, pin, same_version, split_plan_id, version_digest
from tollway.settings import Settings

HEADER = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: versions, version: "1"}
meters:
  requests: {unit: requests}
features:
  items:
    routes:
      - {methods: [GET], prefix: /v1/items}
"""

VERSIONED = (
    HEADER
    + """\
plans:
  free:
    features: [items]
  pro:
    display_name: Pro
    versions:
      1:
        features: [items]
        limits: [{name: burst, limit: 3, per: minute}]
        pricing:
          currency: USD
          interval: month
          charges:
            - {id: platform, model: flat, amount: "10.00"}
      2:
        features: [items]
        limits: [{name: burst, limit: 5, per: minute}]
        pricing:
          currency: USD
          interval: month
          charges:
            - {id: platform, model: flat, amount: "12.00"}
"""
)


def issues(text: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, "c.yaml")
    return [str(issue) for issue in caught.value.issues]


def published(text: str) -> str:
    stamped, stamps = publish(text, "c.yaml")
    assert stamps
    assert all(stamp.line for stamp in stamps)
    return stamped


# --- compilation ---------------------------------------------------------------------------------------


def test_each_version_is_an_ordinary_plan_and_the_bare_id_is_version_1() -> None:
    compiled = CompiledCatalog.build(load_catalog_text(VERSIONED, "c.yaml"))
    assert list(compiled.plans) == ["free", "pro", "pro@1", "pro@2"]
    assert compiled.plans["pro"] is compiled.plans["pro@1"]
    assert [limit.limit for limit in compiled.limits_for("pro", "items")] == [3]
    assert [limit.limit for limit in compiled.limits_for("pro@2", "items")] == [5]
    assert compiled.plans["pro@2"].display_name == "Pro"
    assert compiled.plans["pro@2"].pricing is not None


def test_a_catalog_without_versions_is_loaded_as_it_was() -> None:
    text = HEADER + "plans:\n  free:\n    features: [items]\n"
    catalog = load_catalog_text(text, "c.yaml")
    assert expand(catalog) is catalog
    assert list(catalog.plans) == ["free"]
    assert "versions" not in catalog.model_dump(by_alias=True)["plans"]["free"]


def test_a_plan_with_versions_keeps_its_body_in_them() -> None:
    text = VERSIONED.replace("    display_name: Pro\n", "    display_name: Pro\n    features: [items]\n")
    [found] = issues(text)
    assert found.startswith("c.yaml:15:5: plans.pro.features: a plan with `versions` keeps `features` in each")


def test_a_versions_problem_points_at_the_version() -> None:
    text = VERSIONED.replace(
        "        features: [items]\n        limits: [{name: burst, limit: 5",
        "        features: [itemz]\n        limits: [{name: burst, limit: 5",
    )
    [found] = issues(text)
    assert found == (
        "c.yaml:25:20: plans.pro.versions[2].features[0]: unknown feature 'itemz'; did you mean 'items'? (got: itemz)"
    )
    bad_number = VERSIONED.replace("      2:\n", "      0:\n")
    assert any("plans.pro.versions[0]" in issue and "must be at least 1" in issue for issue in issues(bad_number))
    too_big = VERSIONED.replace("      2:\n", "      1000001:\n")
    assert any("must be at most 1000000" in issue for issue in issues(too_big))


# --- published versions are immutable ------------------------------------------------------------------


def stamp_line(text: str, version: int) -> int:
    """The 1-based line of version ``version``'s ``published`` stamp."""
    lines = text.splitlines()
    start = lines.index(f"      {version}:")
    return start + 2  # publish puts the stamp first in the version's mapping


def test_an_edit_in_place_of_a_published_version_is_refused_with_file_and_line() -> None:
    text = published(VERSIONED)
    edited = text.replace('amount: "12.00"', 'amount: "11.00"')
    [found] = issues(edited)
    line = stamp_line(edited, 2)
    assert edited.splitlines()[line - 1].strip().startswith("published: sha256:")
    assert found.startswith(f"c.yaml:{line}:20: plans.pro.versions[2].published: pro@2 is published and its content")
    assert "never edited in place" in found
    assert "correction" in found


def test_a_correction_may_edit_a_published_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = published(VERSIONED).replace('amount: "12.00"', 'amount: "11.00"').splitlines(keepends=True)
    at = stamp_line("".join(lines), 2)
    lines.insert(at, '        correction: "the launch price was 11.00, mistyped as 12.00"\n')
    catalog = load_catalog_text("".join(lines), "c.yaml")
    assert catalog.plans["pro@2"].correction == "the launch price was 11.00, mistyped as 12.00"
    # publish leaves a corrected version's stamp as it was published; validate shows its digest now
    stamped, stamps = publish("".join(lines), "c.yaml")
    assert (stamped, stamps) == ("".join(lines), [])
    path = tmp_path / "c.yaml"
    path.write_text(stamped)
    parser = argparse.ArgumentParser(prog="tollway")
    plans_cli.register(parser.add_subparsers(dest="command", required=True))
    assert plans_cli.run(parser.parse_args(["plans", "validate", str(path)]), Settings()) == 0
    digest = version_digest(catalog.plans["pro@2"])
    assert (
        f"  pro@2 corrected in place (the launch price was 11.00, mistyped as 12.00): it now digests to {digest}"
        in (capsys.readouterr().out.splitlines())
    )


def test_the_digest_is_what_a_version_prices_and_enforces() -> None:
    catalog = load_catalog_text(VERSIONED, "c.yaml")
    one, two = catalog.plans["pro@1"], catalog.plans["pro@2"]
    assert version_digest(one) != version_digest(two)
    # Names, descriptions, the stamp itself and defaults written out do not change it.
    cosmetic = VERSIONED.replace("    display_name: Pro\n", "    display_name: Pro (2026)\n    description: x\n")
    explicit = VERSIONED.replace(
        "        features: [items]\n        limits: [{name: burst, limit: 3, per: minute}]\n",
        "        features: [items]\n        outage_policy: fail_closed\n        usage_headers: false\n"
        "        limits: [{name: burst, limit: 3, per: minute, enforcement: hard, shadow: false}]\n",
    )
    for text in (cosmetic, explicit):
        assert version_digest(load_catalog_text(text, "c.yaml").plans["pro@1"]) == version_digest(one)
    # Moving an unversioned plan's body under versions: {1: …} keeps its digest.
    body = re.search(r"      1:\n(.*?)      2:\n", VERSIONED, re.S)
    assert body is not None
    flat = HEADER + "plans:\n  pro:\n" + "".join(line[4:] for line in body.group(1).splitlines(keepends=True))
    assert version_digest(load_catalog_text(flat, "c.yaml").plans["pro"]) == version_digest(one)


def test_a_published_stamp_must_be_a_digest() -> None:
    text = VERSIONED.replace("      1:\n", "      1:\n        published: yesterday\n")
    [found] = issues(text)
    assert "plans.pro.versions[1].published" in found
    assert "sha256: and 64 hex digits" in found


# --- tollway plans publish -----------------------------------------------------------------------------


def test_publish_stamps_each_unpublished_version_in_the_text() -> None:
    stamped, stamps = publish(VERSIONED, "c.yaml")
    assert [(s.plan_id, s.where) for s in stamps] == [
        ("free", "plans.free"),
        ("pro@1", "plans.pro.versions[1]"),
        ("pro@2", "plans.pro.versions[2]"),
    ]
    lines = stamped.splitlines()
    for stamp in stamps:
        assert lines[stamp.line - 1].strip() == f"published: {stamp.digest}"
    assert [line for line in lines if "published" not in line] == VERSIONED.splitlines()
    catalog = load_catalog_text(stamped, "c.yaml")
    assert catalog.plans["pro@2"].published == version_digest(catalog.plans["pro@2"])
    assert publish(stamped, "c.yaml") == (stamped, [])  # nothing left to publish


def test_publish_cannot_stamp_a_flow_mapping_and_says_what_to_add() -> None:
    text = HEADER + "plans:\n  free: {features: [items]}\n"
    stamped, [stamp] = publish(text, "c.yaml")
    assert stamped == text
    assert stamp.line == 0
    assert f"add `published: {stamp.digest}` to plans.free by hand" in stamp.reason


def test_publish_stamps_inside_a_configmap_block() -> None:
    inner = "".join(f"    {line}\n" if line else "\n" for line in VERSIONED.splitlines())
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plans}\ndata:\n  catalog.yaml: |\n" + inner
    stamped, stamps = publish(text, "cm.yaml")
    assert len(stamps) == 3
    assert load_catalog_text(stamped, "cm.yaml").plans["pro@1"].published == stamps[1].digest


def test_publish_refuses_a_catalog_with_an_edited_published_version_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(published(VERSIONED).replace('amount: "10.00"', 'amount: "9.00"'))
    before = path.read_bytes()
    parser = argparse.ArgumentParser(prog="tollway")
    plans_cli.register(parser.add_subparsers(dest="command", required=True))
    assert plans_cli.run(parser.parse_args(["plans", "publish", str(path)]), Settings()) == 1
    assert path.read_bytes() == before
    assert "plans.pro.versions[1].published: pro@1 is published" in capsys.readouterr().err
    assert plans_cli.run(parser.parse_args(["plans", "validate", str(path)]), Settings()) == 1
    err = capsys.readouterr().err
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: plans\.pro\.versions\[1\]\.published: ", err), err


def test_the_publish_command_writes_the_stamps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VERSIONED)
    parser = argparse.ArgumentParser(prog="tollway")
    plans_cli.register(parser.add_subparsers(dest="command", required=True))
    assert plans_cli.run(parser.parse_args(["plans", "publish", str(path)]), Settings()) == 0
    out = capsys.readouterr().out
    assert f"{path}:" in out
    assert "published pro@2 (plans.pro.versions[2]) as sha256:" in out
    assert path.read_text().count("published: sha256:") == 3
    assert plans_cli.run(parser.parse_args(["plans", "validate", str(path)]), Settings()) == 0
    assert "2 plans (pro versions 1, 2)" in capsys.readouterr().out


# --- plan ids --------------------------------------------------------------------------------------------

base_ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


@given(base_ids, st.integers(min_value=1, max_value=MAX_VERSION))
def test_a_versioned_id_splits_back_into_plan_and_version(base: str, version: int) -> None:
    assert split_plan_id(f"{base}@{version}") == (base, version)
    assert split_plan_id(base) == (base, None)
    assert same_version(base, f"{base}@1")
    assert same_version(f"{base}@{version}", f"{base}@{version}")


@given(base_ids, st.text(max_size=8))
def test_a_version_is_a_whole_number_from_1_without_leading_zeros(base: str, suffix: str) -> None:
    canonical = suffix.isascii() and suffix.isdigit() and not suffix.startswith("0") and int(suffix) <= MAX_VERSION
    if canonical:
        assert split_plan_id(f"{base}@{suffix}") == (base, int(suffix))
    else:
        with pytest.raises(ValueError, match="must be a whole number from 1"):
            split_plan_id(f"{base}@{suffix}")


def test_pin_a_new_subscription_to_the_latest_version_and_keep_a_held_one() -> None:
    plans = load_catalog_text(VERSIONED, "c.yaml").plans
    assert pin(plans, "pro") == "pro@2"
    assert pin(plans, "pro@1") == "pro@1"
    assert pin(plans, "free") == "free"
    assert pin(plans, "pro", held="pro") == "pro"  # stored before versions: version 1, kept
    assert pin(plans, "pro", held="pro@1") == "pro@1"
    assert pin(plans, "pro", held="free") == "pro@2"
    assert pin(plans, "pro@2", held="pro@1") == "pro@2"  # an explicit version is a change
    for missing in ("pro@3", "team", "free@2"):
        with pytest.raises(UnknownPlan):
            pin(plans, missing)


def test_the_catalog_references_example_is_valid_and_its_stamp_true() -> None:
    section = (Path(__file__).parents[3] / "docs" / "catalog-reference.md").read_text().split("## Plan versions", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    catalog = load_catalog_text(HEADER + example, "catalog-reference.md")
    one = catalog.plans["pro@1"]
    assert one.published == version_digest(one)
    assert catalog.plans["pro@2"].published is None
