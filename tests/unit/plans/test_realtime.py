"""Prepaid plans and spend caps compiled from the catalog: which charges a request burns, at what price in
micro-units of the balance unit, with which quantity, balance and cap (``CompiledCatalog.money_for``)."""

from decimal import Decimal
from pathlib import Path

import pytest

from tollway.credits.charges import RealTimeCharge, TierMicros
from tollway.credits.units import BalanceUnit
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import UnknownPlan
from tollway.plans.loader import compile_catalog_text
from tollway.plans.realtime import explain
from tollway.ratelimit.money import Money, SpendCap

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: money, version: "1"}
credit_units:
  credits: {value: "0.01", currency: USD, decimals: 2}
  thirds: {value: "0.03", currency: USD, decimals: 0}
meters:
  requests: {unit: requests}
  search-units: {unit: cost, features: [search]}
  egress: {unit: response_bytes}
features:
  read:
    routes: [{methods: [GET], path: /v1/items}]
  search:
    cost: 5
    routes: [{methods: [GET], path: /v1/search}, {methods: [POST], path: /v1/search/free, cost: 0}]
plans:
  payg:
    features: [read, search]
    prepaid: {unit: credits, overrun: "2.5"}
    spend_cap: {amount: "10.00"}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "49.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.0004"}
        - id: searches
          model: graduated
          meter: search-units
          tiers:
            - {up_to: 100, unit_amount: "0.01"}
            - {up_to: null, unit_amount: "0.005", flat_amount: "1.00"}
        - {id: egress, model: allowance, meter: egress, included: 1000, overage_unit_amount: "0.0001"}
        - {id: bulk, model: volume, meter: requests, tiers: [{up_to: null, unit_amount: "0.001"}]}
      minimum_commitment: "5.00"
      discounts:
        - {id: launch, percent: "20"}
  listed:
    features: [read, search]
    prepaid: {unit: USD, charges: [packs]}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: allowance, meter: requests, included: 0, overage_unit_amount: "0.0004"}
        - {id: packs, model: package, meter: search-units, package_size: 10, package_amount: "0.50", free_units: 20}
  capped:
    features: [read]
    spend_cap: {amount: "10.00", soft: true}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: allowance, meter: requests, included: 1000, overage_unit_amount: "0.001"}
  in-thirds:
    features: [read]
    prepaid: {unit: thirds}
    spend_cap: {amount: "10.00"}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.03"}
  free:
    features: [read]
"""
PERIOD = (1_800_000_000_000, 1_802_592_000_000)


@pytest.fixture(scope="module")
def catalog() -> CompiledCatalog:
    return compile_catalog_text(CATALOG, "money.yaml")


def test_a_prepaid_request_burns_its_real_time_charges_in_micro_credits(catalog: CompiledCatalog) -> None:
    money = catalog.money_for("payg", "search", PERIOD, 5)
    assert money == Money(
        (
            RealTimeCharge("calls", "per_unit", *PERIOD, unit=40_000),  # 0.0004 USD = 0.04 credits
            RealTimeCharge(
                "searches",
                "graduated",
                *PERIOD,
                tiers=(TierMicros(100, 1_000_000), TierMicros(None, 500_000, 100_000_000)),
            ),
        ),
        (1, 5),  # one request; the route's cost on a `cost` meter
        balance_period_start_ms=PERIOD[0],
        spend_cap=SpendCap(1_000_000_000, *PERIOD, hard=True),  # 10.00 USD = 1000 credits
    )
    assert money.charges[0].script_arg == "0 40000"
    assert money.charges[1].script_arg == "1 100:1000000:0,0:500000:100000000"


def test_charges_apply_only_to_their_meters_features_and_a_zero_quantity_burns_nothing(
    catalog: CompiledCatalog,
) -> None:
    read = catalog.money_for("payg", "read", PERIOD, 1)
    assert read is not None
    assert [c.name for c in read.charges] == ["calls"]  # search-units counts only `search`
    free_route = catalog.money_for("payg", "search", PERIOD, 0)
    assert free_route is not None
    assert [c.name for c in free_route.charges] == ["calls"]
    assert free_route.quantities == (1,)


def test_only_listed_charges_burn_and_allowance_compiles_to_tiers(catalog: CompiledCatalog) -> None:
    listed = catalog.money_for("listed", "search", PERIOD, 5)
    assert listed == Money(
        (RealTimeCharge("packs", "package", *PERIOD, package_size=10, package=500_000, free_units=20),),
        (5,),
        balance_period_start_ms=PERIOD[0],
    )
    capped = catalog.money_for("capped", "read", PERIOD, 1)
    assert capped == Money(
        (RealTimeCharge("calls", "graduated", *PERIOD, tiers=(TierMicros(1000, 0), TierMicros(None, 1000))),),
        (1,),
        spend_cap=SpendCap(10_000_000, *PERIOD, hard=False),  # postpaid: no balance, a soft cap in micro-USD
    )


def test_allowance_with_nothing_included_is_per_unit() -> None:
    text = CATALOG.replace("prepaid: {unit: USD, charges: [packs]}", "prepaid: {unit: USD}")
    money = compile_catalog_text(text, "m.yaml").money_for("listed", "read", PERIOD, 1)
    assert money is not None
    assert money.charges == (RealTimeCharge("calls", "per_unit", *PERIOD, unit=400),)


def test_a_cap_in_credits_is_rounded_down_to_a_micro_credit(catalog: CompiledCatalog) -> None:
    money = catalog.money_for("in-thirds", "read", PERIOD, 1)
    assert money is not None
    assert money.spend_cap is not None
    assert money.spend_cap.cap == 333_333_333  # 10.00 / 0.03 = 333.333333… thirds, never above the cap
    assert money.charges[0].unit == 1_000_000


def test_plans_without_money_have_none_and_answers_are_memoised(catalog: CompiledCatalog) -> None:
    assert catalog.money_for("free", "read", PERIOD, 1) is None
    assert catalog.money_terms("free") is None
    first = catalog.money_for("payg", "search", PERIOD, 5)
    assert catalog.money_for("payg", "search", PERIOD, 5) is first
    assert catalog.money_for("payg", "search", (PERIOD[1], PERIOD[1] + 1000), 5) is not first
    with pytest.raises(UnknownPlan):
        catalog.money_for("gold", "read", PERIOD, 1)
    with pytest.raises(UnknownPlan):
        catalog.balance_unit("gold")


def test_balance_units_and_terms(catalog: CompiledCatalog) -> None:
    assert catalog.balance_unit("payg") == BalanceUnit("credits", 2, "USD", Decimal("0.01"))
    assert catalog.balance_unit("listed") == BalanceUnit("USD", 2, "USD")
    assert catalog.balance_unit("capped") is None  # postpaid: a cap, no balance
    assert catalog.balance_unit("free") is None
    assert catalog.unit_named("credits") == catalog.balance_unit("payg")
    assert catalog.unit_named("JPY") == BalanceUnit("JPY", 0, "JPY")
    assert catalog.unit_named("credit") is None
    assert catalog.unit_named("XAU") is None
    terms = catalog.money_terms("payg")
    assert terms is not None
    assert (terms.prepaid, terms.overrun, terms.cap, terms.cap_soft) == (True, 2_500_000, 1_000_000_000, False)


def test_explanation_names_what_burns_and_what_settles_at_invoice(catalog: CompiledCatalog) -> None:
    terms = catalog.money_terms("payg")
    assert terms is not None
    assert explain(terms) == [
        "  plan payg: prepaid in credits (worth 0.01 USD each), overrun up to 2.5 credits; "
        "spend cap 10.00 USD per period (hard) = 1000 credits",
        "    burns in real time:",
        "      calls (per_unit): requests, 1 per request",
        "      searches (graduated): search-units, the route's cost per request, only for search",
        "    settles at invoice:",
        "      platform (flat): a flat fee is billed once per period on the invoice, not per request",
        "      egress (allowance): its meter 'egress' (response_bytes) is known only after the response, "
        "so it cannot burn at admission without a reserve (prepaid.reserve: {egress: <quantity>})",
        "      bulk (volume): a volume charge's unit price depends on the period's final quantity, "
        "so it settles at invoice",
        "      minimum commitment 5.00 USD: known at period end",
        "      discount launch (20% off invoice): applied on the invoice",
    ]
    listed = catalog.money_terms("listed")
    assert listed is not None
    assert "      calls (allowance): not in prepaid.charges: billed postpaid" in explain(listed)


RESERVED = (
    CATALOG.replace(
        "  egress: {unit: response_bytes}\n",
        "  egress: {unit: response_bytes}\n"
        "  tokens: {unit: response_json, field: usage.total_tokens, features: [search]}\n",
    )
    .replace(
        'prepaid: {unit: credits, overrun: "2.5"}',
        'prepaid: {unit: credits, overrun: "2.5", reserve: {tokens: 4000}}',
    )
    .replace(
        "        - {id: bulk,",
        '        - {id: llm, model: per_unit, meter: tokens, unit_amount: "0.00001"}\n        - {id: bulk,',
    )
)


def test_a_charge_over_a_reserved_meter_burns_its_reserve_at_admission() -> None:
    """``prepaid.reserve`` makes a charge over a meter known only after the response burn in real time:
    the request's quantity is the reserve, marked as reserved, with the plan's overrun allowance."""
    catalog = compile_catalog_text(RESERVED, "m.yaml")
    money = catalog.money_for("payg", "search", PERIOD, 5)
    assert money is not None
    assert [c.name for c in money.charges] == ["calls", "searches", "llm"]
    assert money.quantities == (1, 5, 4000)
    assert money.reserved == (False, False, True)
    assert money.reserves
    assert money.overrun == 2_500_000
    assert money.charges[2].unit == 1_000  # 0.00001 USD = 0.001 credits
    read = catalog.money_for("payg", "read", PERIOD, 1)  # the tokens meter counts only `search`
    assert read is not None
    assert not read.reserves
    assert read.reserved == ()
    terms = catalog.money_terms("payg")
    assert terms is not None
    lines = explain(terms)
    assert (
        "      llm (per_unit): tokens, reserves 4000 per request, settled with the actual quantity after the "
        "response, only for search"
    ) in lines
    # egress has no reserve: it still settles at invoice
    assert any(line.startswith("      egress (allowance): its meter 'egress'") for line in lines)
    with pytest.raises(ValueError, match="never leased"):
        money.scaled(2)
    assert money.for_row("3f9c0e7a1b2d4c5e-1a").row_id == "3f9c0e7a1b2d4c5e-1a"


POSTPAID = """\
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
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.0004"}
"""


def test_catalogs_without_money_keep_their_digest() -> None:
    """The new keys are left out of the canonical form when unset, so no existing digest changes (the
    pinned digest is the one the code before prepaid plans gave); with them, they are in it."""
    assert compile_catalog_text(POSTPAID, "t.yaml").digest == (
        "sha256:123d46003277f75f4e01a67e7e00949c5e7ec68b8bf6b89e3145a164b8f6c117"
    )
    capped = POSTPAID.replace("    pricing:", '    spend_cap: {amount: "10.00"}\n    pricing:')
    dumped = compile_catalog_text(capped, "t.yaml").catalog.model_dump(mode="json")
    assert dumped["plans"]["pro"]["spend_cap"] == {"amount": "10.00", "soft": False}
    assert "prepaid" not in dumped["plans"]["pro"]
    assert "credit_units" not in dumped
    money = compile_catalog_text(CATALOG, "m.yaml").catalog.model_dump(mode="json")
    assert money["credit_units"]["credits"] == {"value": "0.01", "currency": "USD", "decimals": 2, "description": None}


DOCS = Path(__file__).parents[3] / "docs" / "catalog-reference.md"
DOC_HEADER = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: acme, version: "1"}
meters:
  requests: {unit: requests}
  search-units: {unit: cost, features: [search]}
features:
  items-read:
    routes: [{methods: [GET], path: /v1/items}]
  search:
    cost: 5
    routes: [{methods: [GET], path: /v1/search}]
"""


def test_the_documented_example_says_what_validate_prints() -> None:
    section = DOCS.read_text().split("## Prepaid plans and spend caps", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    compiled = compile_catalog_text(DOC_HEADER + example, "plans.yaml")
    terms = compiled.money_terms("payg")
    assert terms is not None
    assert explain(terms) == shown[1:]
    money = compiled.money_for("payg", "items-read", PERIOD, 1)
    assert money is not None
    assert money.charges[0].unit == 40_000  # "0.04 credits per request"
