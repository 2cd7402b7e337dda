"""The per-charge pricing options in the catalog: every bad value reported at once with file:line,
the rounding mode resolved per plan, currency and catalog, the canonical form (digest) unchanged for a
catalog that leaves the options at their defaults, and the options that a prepaid plan cannot burn at
admission settling at invoice (or refused, when ``prepaid.charges`` lists the charge)."""

from decimal import Decimal
from pathlib import Path

import pytest

from tollway.plans.catalog import catalog_digest
from tollway.plans.errors import CatalogError
from tollway.plans.loader import compile_catalog_text, load_catalog_text
from tollway.plans.pricing import GraduatedCharge
from tollway.plans.realtime import explain
from tollway.plans.schema import Catalog

HEAD = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: options, version: "1"}
meters:
  requests: {unit: requests}
  storage: {unit: cost}
"""

BAD = (
    HEAD
    + """\
rounding: {mode: half_down, currencies: {USD: bankers, usd: half_up}}
plans:
  pro:
    prepaid: {unit: USD, charges: [storage, calls]}
    pricing:
      currency: USD
      interval: month
      rounding: up
      charges:
        - id: storage
          model: graduated
          meter: storage
          tiers:
            - {up_to: 0.5, unit_amount: "0"}
            - {up_to: 0.50, unit_amount: "0.10"}
            - {up_to: 0.25, unit_amount: "0.05"}
            - {up_to: null, unit_amount: "0.01"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.01", minimum_amount: "10", maximum_amount: "5"}
        - id: steps
          model: volume
          meter: requests
          tiers: [{up_to: -1.5, unit_amount: "1"}, {up_to: null, unit_amount: "1"}]
        - id: fine
          model: volume
          meter: requests
          tiers: [{up_to: "0.0000000001", unit_amount: "1"}, {up_to: null, unit_amount: "1"}]
        - {id: platform, model: flat, amount: "1.00", minimum_amount: "2.00"}
        - {id: flag, model: per_unit, meter: requests, unit_amount: "1", flat_fee_at_zero: true}
"""
)


def test_every_bad_option_is_reported_at_once_with_file_line_and_value() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(BAD, "plans.yaml")
    got = [(issue.line, issue.message, issue.value) for issue in caught.value.issues]
    expected = [
        (7, "rounding.mode: expected 'half_even' or 'half_up'", "half_down"),
        (7, "rounding.currencies.USD: expected 'half_even' or 'half_up'", "bankers"),
        (7, "rounding.currencies.usd: name expected an ISO 4217 currency code", "usd"),
        (
            10,
            "prepaid.charges[0]: charge 'storage' cannot burn in real time: tiers[0].up_to 0.5 is not a whole",
            "storage",
        ),
        (
            10,
            "prepaid.charges[1]: charge 'calls' cannot burn in real time: its minimum_amount or maximum_amount",
            "calls",
        ),
        (14, "plans.pro.pricing.rounding: expected 'half_even' or 'half_up'", "up"),
        (21, "tiers[1].up_to: tiers must ascend: up_to must be above the previous tier's 0.5", "0.50"),
        (22, "tiers[2].up_to: tiers must ascend: up_to must be above the previous tier's 0.50", "0.25"),
        (24, "charges[1].maximum_amount: maximum_amount must be at least minimum_amount (10)", "5"),
        (28, "charges[2].tiers[0].up_to: must be above 0", "-1.5"),
        (32, "charges[3].tiers[0].up_to: a tier bound has at most 9 decimal places", '"0.0000000001"'),
        (33, "charges[4].minimum_amount: unknown field 'minimum_amount'", "minimum_amount"),
        (34, "charges[5].flat_fee_at_zero: unknown field 'flat_fee_at_zero'", "flat_fee_at_zero"),
    ]
    assert len(got) == len(expected), "\n".join(str(issue) for issue in caught.value.issues)
    for (line, message, value), (want_line, want_message, want_value) in zip(got, expected, strict=True):
        assert (line, value) == (want_line, want_value), message
        assert want_message in message
    assert str(caught.value).startswith("plans.yaml:7:")


GOOD = (
    HEAD
    + """\
plans:
  pro:
    pricing:
      currency: USD
      interval: month
      charges:
        - id: storage
          model: graduated
          meter: storage
          tiers:
            - {up_to: 0.5, unit_amount: "0"}
            - {up_to: "2.25", unit_amount: "0.10"}
            - {up_to: 3, unit_amount: "0.10"}
            - {up_to: null, unit_amount: "0.05"}
  yen:
    pricing: {currency: JPY, interval: month}
  own:
    pricing: {currency: JPY, interval: month, rounding: half_even}
"""
)


def test_fractional_bounds_load_exactly_and_whole_ones_stay_integers() -> None:
    catalog = load_catalog_text(GOOD, "plans.yaml")
    pricing = catalog.plans["pro"].pricing
    assert pricing is not None
    charge = pricing.charges[0]
    assert isinstance(charge, GraduatedCharge)
    bounds = [tier.up_to for tier in charge.tiers]
    assert bounds == [Decimal("0.5"), Decimal("2.25"), 3, None]
    assert [type(b) for b in bounds[:3]] == [Decimal, Decimal, int]


def test_rounding_resolves_plan_then_currency_then_catalog() -> None:
    catalog = load_catalog_text(GOOD + "rounding: {mode: half_up, currencies: {JPY: half_even}}\n", "plans.yaml")
    modes = {plan_id: plan.pricing.rounding for plan_id, plan in catalog.plans.items() if plan.pricing}
    assert modes == {"pro": "half_up", "yen": "half_even", "own": "half_even"}
    only_currency = load_catalog_text(GOOD + "rounding: {currencies: {JPY: half_up}}\n", "plans.yaml")
    assert {p: plan.pricing.rounding for p, plan in only_currency.plans.items() if plan.pricing} == {
        "pro": None,
        "yen": "half_up",
        "own": "half_even",
    }
    assert catalog.plans["pro"].pricing is not None
    assert catalog.plans["pro"].pricing.effective_rounding == "half_up"


def test_options_left_at_their_defaults_keep_the_catalogs_digest() -> None:
    """Writing the defaults out (no minimum or maximum, ``flat_fee_at_zero: false``, an empty currency
    table) gives the catalog's digest without them: the canonical form drops unset options."""
    plain = (
        HEAD
        + """\
plans:
  pro:
    pricing:
      currency: USD
      interval: month
      charges:
        - id: calls
          model: volume
          meter: requests
          tiers: [{up_to: 10, unit_amount: "1", flat_amount: "2"}, {up_to: null, unit_amount: "0.5"}]
"""
    )
    explicit = plain.replace("model: volume\n", "model: volume\n          flat_fee_at_zero: false\n")
    assert explicit != plain
    digest = catalog_digest(load_catalog_text(plain, "a.yaml"))
    assert catalog_digest(load_catalog_text(explicit, "b.yaml")) == digest
    dumped = load_catalog_text(explicit, "b.yaml").model_dump(mode="json")
    charge = dumped["plans"]["pro"]["pricing"]["charges"][0]
    assert not {"flat_fee_at_zero", "minimum_amount", "maximum_amount"} & charge.keys()
    assert "rounding" not in dumped
    assert "rounding" not in dumped["plans"]["pro"]["pricing"]
    changed = plain.replace("model: volume\n", "model: volume\n          flat_fee_at_zero: true\n")
    assert catalog_digest(load_catalog_text(changed, "c.yaml")) != digest


PREPAID = (
    HEAD
    + """\
features:
  read:
    routes: [{methods: [GET], path: /v1/items}]
plans:
  payg:
    features: [read]
    prepaid: {unit: USD}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.001"}
        - {id: floor, model: per_unit, meter: requests, unit_amount: "0.001", minimum_amount: "5.00"}
        - {id: ceiling, model: allowance, meter: requests, included: 10, overage_unit_amount: "1", maximum_amount: "50"}
        - id: halves
          model: graduated
          meter: requests
          tiers: [{up_to: 0.5, unit_amount: "0"}, {up_to: null, unit_amount: "0.01"}]
        - id: based
          model: graduated
          meter: requests
          flat_fee_at_zero: true
          tiers: [{up_to: 100, unit_amount: "0", flat_amount: "1.00"}, {up_to: null, unit_amount: "0.01"}]
        - id: whole
          model: graduated
          meter: requests
          tiers: [{up_to: 100.0, unit_amount: "0"}, {up_to: null, unit_amount: "0.01"}]
"""
)


def test_options_known_only_at_the_periods_end_settle_at_invoice_for_a_prepaid_plan() -> None:
    """A fractional bound falls inside a whole request; a minimum, a maximum and a flat fee due at zero
    usage are known only when the period ends. By default such charges settle at invoice (``tollway plans
    validate`` says why); a whole bound written as a decimal (100.0) still burns."""
    compiled = compile_catalog_text(PREPAID, "plans.yaml")
    terms = compiled.money_terms("payg")
    assert terms is not None
    assert [charge.charge_id for charge in terms.burning] == ["calls", "whole"]
    text = explain(terms)
    assert any(line.startswith("      floor (per_unit): its minimum_amount or maximum_amount") for line in text)
    assert any(line.startswith("      ceiling (allowance): its minimum_amount or maximum_amount") for line in text)
    assert any("halves (graduated): tiers[0].up_to 0.5 is not a whole number" in line for line in text)
    assert any("based (graduated): flat_fee_at_zero bills the first tier's flat fee" in line for line in text)
    whole = next(charge for charge in terms.burning if charge.charge_id == "whole")
    assert whole.prototype.tiers is not None
    assert whole.prototype.tiers[0].up_to == 100


def test_listing_such_a_charge_in_prepaid_charges_is_refused_with_the_reason() -> None:
    listed = PREPAID.replace("prepaid: {unit: USD}", "prepaid: {unit: USD, charges: [calls, halves, based]}")
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(listed, "plans.yaml")
    messages = [str(issue) for issue in caught.value.issues]
    assert len(messages) == 2, messages
    assert messages[0].startswith("plans.yaml:13:")
    assert "charge 'halves' cannot burn in real time: tiers[0].up_to 0.5 is not a whole number" in messages[0]
    assert "charge 'based' cannot burn in real time: flat_fee_at_zero bills the first tier's flat fee" in messages[1]


def test_the_documented_rounding_example_loads_as_it_says() -> None:
    section = (Path(__file__).parents[3] / "docs" / "catalog-reference.md").read_text().split("### Rounding\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    others = (
        "  yen:\n    pricing: {currency: JPY, interval: month}\n  usd:\n    pricing: {currency: USD, interval: month}\n"
    )
    catalog = load_catalog_text(HEAD + example.replace("plans:\n", "plans:\n" + others), "plans.yaml")
    modes = {plan_id: plan.pricing.effective_rounding for plan_id, plan in catalog.plans.items() if plan.pricing}
    assert modes == {"yen": "half_even", "usd": "half_up", "pro": "half_even"}


def test_a_zero_maximum_is_kept_in_the_canonical_form() -> None:
    """``maximum_amount: "0"`` (a charge that costs nothing) is a change of meaning: it must change the
    digest and survive a round trip through ``model_dump`` (Decimal 0 compares equal to False)."""
    plain = (
        HEAD
        + """\
plans:
  pro:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "1"}
"""
    )
    zero = plain.replace('unit_amount: "1"}', 'unit_amount: "1", maximum_amount: "0"}')
    catalog = load_catalog_text(zero, "z.yaml")
    assert catalog_digest(catalog) != catalog_digest(load_catalog_text(plain, "p.yaml"))
    dumped = catalog.model_dump(mode="json", by_alias=True)
    assert dumped["plans"]["pro"]["pricing"]["charges"][0]["maximum_amount"] == "0"


def test_a_catalog_with_every_option_survives_a_json_round_trip() -> None:
    """The canonical JSON (what the digest hashes) validates back to the same catalog: fractional bounds
    as decimal strings, the options, the resolved rounding modes."""
    text = GOOD.replace(
        "model: graduated\n", 'model: graduated\n          flat_fee_at_zero: true\n          minimum_amount: "1"\n'
    )
    catalog = load_catalog_text(text + "rounding: {mode: half_up, currencies: {JPY: half_even}}\n", "plans.yaml")
    again = Catalog.model_validate(catalog.model_dump(mode="json", by_alias=True))
    assert again == catalog
    assert catalog_digest(again) == catalog_digest(catalog)
