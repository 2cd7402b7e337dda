"""The per-charge pricing options (issue 16 item 5) priced through a catalog file and ``rating.rate``:
rounding mode, a tier's flat fee at zero usage, per-charge minimum and maximum spend, fractional tier
bounds. Each peer test reproduces the peer's own published numbers; its docstring names the repository,
the path (and the stored commit read) and says where the peer's semantics differ from Tollway's."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from textwrap import dedent, indent

import pytest

from tollway.billing.charges import PeriodContext
from tollway.billing.money import format_amount
from tollway.billing.proration import period_fraction
from tollway.billing.rating import InvoiceDraft, rate
from tollway.periods import BillingPeriod
from tollway.plans.loader import load_catalog_text
from tollway.plans.pricing import Pricing

D = Decimal

HEAD = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: options, version: "1"}
meters:
  units: {unit: requests}
  requests: {unit: requests}
"""


def plan(pricing_yaml: str, catalog_yaml: str = "") -> Pricing:
    """The pricing of plan ``p`` of a catalog file whose plan's pricing is ``pricing_yaml``."""
    text = HEAD + dedent(catalog_yaml) + "plans:\n  p:\n    pricing:\n" + indent(dedent(pricing_yaml), "      ")
    pricing = load_catalog_text(text, "options.yaml").plans["p"].pricing
    assert pricing is not None
    return pricing


def billed(pricing: Pricing, period: PeriodContext | None = None, **usage: str) -> InvoiceDraft:
    return rate("p", pricing, {meter: D(q) for meter, q in usage.items()}, period or PeriodContext())


def total(pricing: Pricing, quantity: str, period: PeriodContext | None = None) -> str:
    draft = billed(pricing, period, units=quantity)
    return format_amount(draft.total, draft.currency)


def lines(draft: InvoiceDraft) -> list[str]:
    return [
        f"{line.discount_id or line.charge_id} {format_amount(line.amount, draft.currency)}" for line in draft.lines
    ]


def one_per_unit(currency: str, rounding: str | None = None, catalog_yaml: str = "") -> Pricing:
    """A plan charging 1 per unit: the line is the quantity, so a quantity is the amount to round."""
    mode = f"rounding: {rounding}\n" if rounding else ""
    return plan(
        f"currency: {currency}\ninterval: month\n{mode}"
        "charges:\n  - {id: amount, model: per_unit, meter: units, unit_amount: '1'}\n",
        catalog_yaml,
    )


# --- rounding mode -----------------------------------------------------------------------------------

FLEXPRICE_ROUNDING = [
    # TestLineItemRounding_FixedCharges
    ("USD", "10.278798", "10.28"),
    ("USD", "10.271", "10.27"),
    ("USD", "10.275", "10.28"),
    ("JPY", "1023.45", "1023"),
    ("JPY", "1023.5", "1024"),
    ("EUR", "99.996", "100.00"),
    ("GBP", "0.004", "0.00"),
    ("GBP", "0.005", "0.01"),
    ("USD", "999999.999", "1000000.00"),
    ("USD", "0.00", "0.00"),
    # TestLineItemRounding_EdgeCases
    ("USD", "10.125", "10.13"),
    ("USD", "0.0001", "0.00"),
    ("USD", "99999999.999", "100000000.00"),
    ("JPY", "0.9", "1"),
    ("JPY", "100.5", "101"),
]


@pytest.mark.parametrize(("currency", "amount", "rounded"), FLEXPRICE_ROUNDING)
def test_half_up_reproduces_flexprice_line_rounding(currency: str, amount: str, rounded: str) -> None:
    """Flexprice rounds every line half up (``types.RoundToCurrencyPrecision``): repository
    subratsahilgupta/flexprice (a fork of flexprice/flexprice), ``internal/service/billing_rounding_test.go``
    at 9c1edc371ad959d593c492ec9ee73393585ab58a, TestLineItemRounding_FixedCharges and
    TestLineItemRounding_EdgeCases. Here the catalog says ``rounding: {mode: half_up}`` and each amount is
    a per-unit line of 1 per unit. Flexprice's ``Negative_Amount`` case (-10.50) has no counterpart: a
    charge line is never negative (discount lines are, see the OpenMeter test)."""
    pricing = one_per_unit(currency, catalog_yaml="rounding: {mode: half_up}\n")
    assert pricing.rounding == "half_up"
    assert total(pricing, amount) == rounded


def test_half_up_reproduces_flexprice_subtotals() -> None:
    """Subtotals are sums of lines rounded at source: subratsahilgupta/flexprice (fork of
    flexprice/flexprice) ``internal/service/billing_rounding_test.go`` (9c1edc37),
    TestLineItemRounding_SubtotalEqualsSum (JPY 100.4 + 200.5 + 300.6 → 100 + 201 + 301 = 602; USD
    0.011…0.015 → 0.06) and TestLineItemRounding_RealWorldScenario (fixed 10.333, 20.666, 30.999 and usage
    150 × 0.101, 75 × 0.333 → 62.00 + 40.13 = 102.13)."""
    yen = plan(
        """\
        currency: JPY
        interval: month
        rounding: half_up
        charges:
          - {id: a, model: flat, amount: "100.4"}
          - {id: b, model: flat, amount: "200.5"}
          - {id: c, model: flat, amount: "300.6"}
        """
    )
    assert lines(billed(yen)) == ["a 100", "b 201", "c 301"]
    assert billed(yen).total == D(602)
    cents = plan(
        "currency: USD\ninterval: month\nrounding: half_up\ncharges:\n"
        + "".join(f"  - {{id: c{i}, model: flat, amount: '0.01{i}'}}\n" for i in range(1, 6))
    )
    assert format_amount(billed(cents).total, "USD") == "0.06"
    mixed = plan(
        """\
        currency: USD
        interval: month
        rounding: half_up
        charges:
          - {id: f1, model: flat, amount: "10.333"}
          - {id: f2, model: flat, amount: "20.666"}
          - {id: f3, model: flat, amount: "30.999"}
          - {id: u1, model: per_unit, meter: units, unit_amount: "0.101"}
          - {id: u2, model: per_unit, meter: requests, unit_amount: "0.333"}
        """
    )
    draft = billed(mixed, units="150", requests="75")
    assert lines(draft) == ["f1 10.33", "f2 20.67", "f3 31.00", "u1 15.15", "u2 24.98"]
    assert format_amount(draft.total, "USD") == "102.13"


OPENMETER_ROUNDING = [
    # TestRoundingBehavior (precision 2 → USD, precision 0 → JPY)
    ("USD", "1.224", "1.22"),
    ("USD", "1.225", "1.23"),
    ("USD", "1.226", "1.23"),
    ("JPY", "2.4", "2"),
    ("JPY", "2.5", "3"),
    # TestRoundToPrecision
    ("USD", "1.23456789", "1.23"),
    ("USD", "1.23556789", "1.24"),
    ("JPY", "1.23456789", "1"),
    ("JPY", "1.9556789", "2"),
]


@pytest.mark.parametrize(("currency", "amount", "rounded"), OPENMETER_ROUNDING)
def test_half_up_reproduces_openmeter_currency_rounding(currency: str, amount: str, rounded: str) -> None:
    """OpenMeter rounds to the currency's precision half away from zero: openmeterio/openmeter
    ``pkg/currencyx/currency_test.go`` (34e9b10c6816454302c79f609ce1ce20cc84f7a7), TestRoundingBehavior
    and TestRoundToPrecision. OpenMeter's custom currency of precision 2 is USD here, precision 0 is JPY.
    The mode is set per currency (``rounding.currencies``) to show that form too."""
    pricing = one_per_unit(currency, catalog_yaml=f"rounding: {{currencies: {{{currency}: half_up}}}}\n")
    assert total(pricing, amount) == rounded


@pytest.mark.parametrize(("amount", "line"), [("1.224", "-1.22"), ("1.225", "-1.23")])
def test_half_up_rounds_a_negative_tie_away_from_zero_like_openmeter(amount: str, line: str) -> None:
    """OpenMeter's negative cases (``pkg/currencyx/currency_test.go``, TestRoundingBehavior: -1.224 → -1.22,
    -1.225 → -1.23). Tollway's only negative lines are discounts, which round the amount they take off:
    a fixed discount of 1.225 on a 10.00 fee is the line -1.23 under half up."""
    pricing = plan(
        f"""\
        currency: USD
        interval: month
        rounding: half_up
        charges:
          - {{id: platform, model: flat, amount: "10.00"}}
        discounts:
          - {{id: promo, amount: "{amount}", applies_to: invoice}}
        """
    )
    assert lines(billed(pricing))[-1] == f"promo {line}"


def test_half_even_stays_the_default_and_differs_from_the_peers_only_at_ties() -> None:
    """Without a rounding option the peers' ties round to even (0.005 → 0.00, 10.125 → 10.12, ¥100.5 →
    ¥100, ¥200.5 → ¥200) and every non-tie case rounds as theirs (Flexprice's 10.278798 → 10.28)."""
    usd, gbp, jpy = one_per_unit("USD"), one_per_unit("GBP"), one_per_unit("JPY")
    assert usd.rounding is None
    assert [total(gbp, "0.005"), total(usd, "10.125"), total(jpy, "100.5"), total(jpy, "200.5")] == [
        "0.00",
        "10.12",
        "100",
        "200",
    ]
    assert [total(usd, "10.278798"), total(usd, "10.275"), total(jpy, "1023.5")] == ["10.28", "10.28", "1024"]


def test_a_plans_rounding_wins_over_its_currencys_which_wins_over_the_catalogs() -> None:
    catalog = "rounding: {mode: half_up, currencies: {JPY: half_even}}\n"
    assert total(one_per_unit("USD", catalog_yaml=catalog), "0.125") == "0.13"
    assert total(one_per_unit("JPY", catalog_yaml=catalog), "0.5") == "0"
    assert total(one_per_unit("JPY", "half_up", catalog), "0.5") == "1"
    assert total(one_per_unit("USD", "half_even", catalog), "0.125") == "0.12"


# --- a tier's flat fee at zero usage -----------------------------------------------------------------

LAGO_GRADUATED = """\
currency: USD
interval: month
charges:
  - id: units
    model: graduated
    meter: units
    tiers:
      - {up_to: 10, unit_amount: "0.10", flat_amount: "0.02"}
      - {up_to: null, unit_amount: "0.05", flat_amount: "0.03"}
"""


@pytest.mark.parametrize(
    ("quantity", "cents"), [("0", "0.00"), ("1", "0.12"), ("10", "1.02"), ("11", "1.10"), ("12", "1.15")]
)
def test_default_zero_usage_reproduces_lago_graduated(quantity: str, cents: str) -> None:
    """Lago's graduated model: getlago/lago-api ``spec/services/charges/charge_models/graduated_service_spec.rb``
    (14c9e1d8f9567239321be224ae671ae388e46d92): ranges 0–10 at 10¢ + 2¢ flat, 11+ at 5¢ + 3¢ flat; "does
    not apply the flat amount for 0" (0), 1 → 12, 10 → 102, 11 → 110, 12 → 115 cents. That is Tollway's
    default (``flat_fee_at_zero: false``). The issue notes Lago charges the flat fee at zero since July
    2026; the stored spec read here predates that, so the newer behaviour is Tollway's ``true``."""
    assert total(plan(LAGO_GRADUATED), quantity) == cents
    written = LAGO_GRADUATED.replace("    meter: units\n", "    meter: units\n    flat_fee_at_zero: false\n")
    assert total(plan(written), quantity) == cents  # the default, written out
    charged = plan(written.replace("flat_fee_at_zero: false", "flat_fee_at_zero: true"))
    assert total(charged, quantity) == ("0.02" if quantity == "0" else cents)  # only 0 changes: tier 1's 2¢


LAGO_VOLUME = """\
currency: USD
interval: month
charges:
  - id: units
    model: volume
    meter: units
    tiers:
      - {up_to: 100, unit_amount: "2", flat_amount: "10"}
      - {up_to: 200, unit_amount: "1", flat_amount: "0"}
      - {up_to: null, unit_amount: "0.5", flat_amount: "50"}
"""


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [("0", "0.00"), ("1", "12.00"), ("100", "210.00"), ("101", "101.00"), ("200", "200.00"), ("300", "200.00")],
)
def test_default_zero_usage_reproduces_lago_volume(quantity: str, amount: str) -> None:
    """Lago's volume model: getlago/lago-api ``spec/services/charges/charge_models/volume_service_spec.rb``
    (130b2749f3b80e131795a5b35c40e12574e84fa1): "when aggregation is 0 … does not apply the flat amount"
    (0), 1 → 12, 100 → 210, 101 → 101, 200 → 200, 300 → 200. Its prorated case (198.6 → 149.3) uses
    Lago's own proration of recurring metrics, which Tollway does not have; it is left out."""
    assert total(plan(LAGO_VOLUME), quantity) == amount
    written = LAGO_VOLUME.replace("    meter: units\n", "    meter: units\n    flat_fee_at_zero: false\n")
    assert total(plan(written), quantity) == amount  # the default, written out
    charged = plan(written.replace("flat_fee_at_zero: false", "flat_fee_at_zero: true"))
    assert total(charged, quantity) == ("10.00" if quantity == "0" else amount)  # only 0 changes


OPENMETER_GRADUATED = """\
currency: USD
interval: month
charges:
  - id: units
    model: graduated
    meter: units
    flat_fee_at_zero: true
    tiers:
      - {up_to: 5, unit_amount: "0", flat_amount: "100"}
      - {up_to: 10, unit_amount: "0", flat_amount: "50"}
      - {up_to: 15, unit_amount: "10"}
      - {up_to: null, unit_amount: "5"}
"""


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "100.00"),
        ("3", "100.00"),
        ("5", "100.00"),
        ("5.001", "150.00"),
        ("7", "150.00"),
        ("12", "170.00"),
        ("22", "235.00"),
    ],
)
def test_flat_fee_at_zero_reproduces_openmeter_graduated(quantity: str, amount: str) -> None:
    """OpenMeter bills the first tier's flat price at zero usage ("If there's no usage in the first tier we
    need to bill the flat fee regardless"): openmeterio/openmeter
    ``openmeter/billing/service/lineservice/pricegraduatedtiered_test.go``
    (182a332b70d88f7898f6fc3e5ca263007229cdb2), TestTieredPriceCalculator: 0 → 100, 3 → 100, 5 → 100,
    5.001 → 150, 7 → 150, 12 → 170, 22 → 235. In Tollway that is ``flat_fee_at_zero: true``."""
    assert total(plan(OPENMETER_GRADUATED), quantity) == amount


OPENMETER_VOLUME = """\
currency: USD
interval: month
charges:
  - id: units
    model: volume
    meter: units
    flat_fee_at_zero: true
    tiers:
      - {up_to: 5, unit_amount: "0", flat_amount: "100"}
      - {up_to: 10, unit_amount: "0", flat_amount: "150"}
      - {up_to: 15, unit_amount: "10"}
      - {up_to: null, unit_amount: "5"}
"""


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "100.00"),
        ("3", "100.00"),
        ("5", "100.00"),
        ("14", "140.00"),
        ("15", "150.00"),
        ("16", "80.00"),
        ("100", "500.00"),
    ],
)
def test_flat_fee_at_zero_reproduces_openmeter_volume(quantity: str, amount: str) -> None:
    """openmeterio/openmeter ``openmeter/billing/service/lineservice/pricevolumetiered_test.go``
    (24f440332269d2e7c6cb2cfc5d085b8245772c0e), TestTieredVolumeCalculation: "tiered volume, last price, no
    usage" bills the flat price for tier 1 (100); 3 and 5 → 100; 14 → 14 × 10; 15 → 15 × 10; 16 → 16 × 5;
    100 → 100 × 5."""
    assert total(plan(OPENMETER_VOLUME), quantity) == amount


def test_flat_fee_at_zero_shows_the_fee_as_its_own_step_and_changes_nothing_without_a_flat_fee() -> None:
    """OpenMeter's "tiered volume, ubp first tier, no usage" (a single tier of 5 per unit, no flat price):
    nothing at zero usage, the option notwithstanding (same file as above)."""
    line = billed(plan(OPENMETER_GRADUATED), units="0").lines[0]
    assert line.breakdown == ("tier 1 (1–5) flat fee, due at zero usage: 1 × 100 = 100",)
    unit_only = plan(
        "currency: USD\ninterval: month\ncharges:\n  - {id: units, model: volume, meter: units, "
        "flat_fee_at_zero: true, tiers: [{up_to: null, unit_amount: '5'}]}\n"
    )
    assert total(unit_only, "0") == "0.00"
    assert billed(plan(OPENMETER_VOLUME.replace("flat_fee_at_zero: true", "flat_fee_at_zero: false"))).total == 0


# --- minimum and maximum spend per charge ------------------------------------------------------------


def with_limits(base: str, **limits: str) -> Pricing:
    extra = "".join(f'    {name}: "{value}"\n' for name, value in limits.items())
    return plan(base.replace("    meter: units\n", "    meter: units\n" + extra, 1))


@pytest.mark.parametrize(
    ("quantity", "limits", "lines_expected", "amount"),
    [
        (
            "0",
            {"minimum_amount": "150"},
            ["tier 1 (1–5) flat fee, due at zero usage: 1 × 100 = 100", "minimum amount 150: true-up: 1 × 50 = 50"],
            "150.00",
        ),
        ("100", {"minimum_amount": "100"}, ["tier 4 (16+), all units: 100 × 5 = 500"], "500.00"),
        (
            "5",
            {"minimum_amount": "150"},
            [
                "tier 1 (1–5), all units: 5 × 0 = 0",
                "tier 1 (1–5) flat fee: 1 × 100 = 100",
                "minimum amount 150: true-up: 1 × 50 = 50",
            ],
            "150.00",
        ),
        (
            "5",
            {"minimum_amount": "100"},
            ["tier 1 (1–5), all units: 5 × 0 = 0", "tier 1 (1–5) flat fee: 1 × 100 = 100"],
            "100.00",
        ),
        (
            "5",
            {"maximum_amount": "100"},
            ["tier 1 (1–5), all units: 5 × 0 = 0", "tier 1 (1–5) flat fee: 1 × 100 = 100"],
            "100.00",
        ),
        (
            "7",
            {"maximum_amount": "125"},
            [
                "tier 2 (6–10), all units: 7 × 0 = 0",
                "tier 2 (6–10) flat fee: 1 × 150 = 150",
                "maximum amount 125: cap: 1 × -25 = -25",
            ],
            "125.00",
        ),
    ],
)
def test_minimum_and_maximum_reproduce_openmeter_volume(
    quantity: str, limits: dict[str, str], lines_expected: list[str], amount: str
) -> None:
    """OpenMeter's commitments on a volume price: openmeterio/openmeter
    ``openmeter/billing/service/lineservice/pricevolumetiered_test.go`` (24f44033): "no usage, min spend"
    150 → flat 100 + minimum spend 50; "usage over, min spend" (100 units, min 100) → no minimum line;
    "usage less than min spend" (5 units, min 150) → 100 + 50; "usage less equals min spend" → 100;
    "usage eq max spend" (max 100) → 100; "max spend is not at tier boundary" (7 units, max 125) → 150 less
    a maximum-spend discount of 25. OpenMeter shows the minimum as a separate commitment line and the
    maximum as a line discount; Tollway shows each as a step of the charge's own line."""
    line = billed(with_limits(OPENMETER_VOLUME, **limits), units=quantity).lines[0]
    assert list(line.breakdown) == lines_expected
    assert format_amount(line.amount, "USD") == amount


OPENMETER_GRADUATED_COMMITMENTS = OPENMETER_GRADUATED.replace(
    '      - {up_to: 15, unit_amount: "10"}\n      - {up_to: null, unit_amount: "5"}',
    '      - {up_to: 15, unit_amount: "5"}\n      - {up_to: null, unit_amount: "1"}',
)


def test_minimum_and_maximum_reproduce_openmeter_graduated() -> None:
    """openmeterio/openmeter ``openmeter/billing/service/lineservice/pricegraduatedtiered_test.go``
    (182a332b), TestTieredGraduatedCalculation: "last line, no usage, minimum price set" (min 1000, the
    tier-1 flat fee of 100 already billed) → a minimum-spend line of 900, so the period costs 1000; "maximum
    spend set mid tier 2/3" (max 170, 22 units = 100 + 50 + 5 × 5 + 7 × 1 = 182) → maximum-spend discounts
    of 5 and 7, so the period costs 170. OpenMeter splits a period into lines and bills each split; Tollway
    rates the whole period at once, so the same totals come from one line."""
    minimum = billed(with_limits(OPENMETER_GRADUATED_COMMITMENTS, minimum_amount="1000"), units="0").lines[0]
    assert minimum.breakdown[-1] == "minimum amount 1000: true-up: 1 × 900 = 900"
    assert minimum.amount == D("1000.00")
    maximum = billed(with_limits(OPENMETER_GRADUATED_COMMITMENTS, maximum_amount="170"), units="22").lines[0]
    assert maximum.breakdown[-1] == "maximum amount 170: cap: 1 × -12 = -12"
    assert maximum.amount == D("170.00")


@pytest.mark.parametrize(
    ("units", "steps", "amount"),
    [
        (
            "1000",
            ["units, per unit: 1000 × 1.00 = 1000.00", "maximum amount 50.00: cap: 1 × -950.00 = -950.00"],
            "50.00",
        ),
        ("1", ["units, per unit: 1 × 1.00 = 1.00"], "1.00"),
    ],
)
def test_maximum_reproduces_polars_metered_price_cap(units: str, steps: list[str], amount: str) -> None:
    """Polar's spend cap on a metered unit price (``cap_amount``, the most a billing period's usage of the
    price costs): polarsource/polar ``server/tests/models/test_product_price.py``
    (01e41dfc1a05e04521fc2c2d0bc360dfc9993f0c), test_get_amount_and_label: $1.00 a unit with a $50.00 cap,
    1000 units → $50.00 ("(1,000 consumed units) × $1.00 — Capped at $50.00"; 1000 × 1.00 = 1000.00, less
    a cap of 950.00), and 1 unit → $1.00 (below the cap, no cap shown). Polar keeps amounts in cents
    (unit_amount 100, cap 5000, expected 5000 and 100); Tollway's catalog writes them in dollars. Polar
    labels the capped amount; Tollway shows the usage price and the cap as two steps of the line."""
    pricing = plan(
        "currency: USD\ninterval: month\ncharges:\n"
        "  - {id: calls, model: per_unit, meter: units, unit_amount: '1.00', maximum_amount: '50.00'}\n"
    )
    line = billed(pricing, units=units).lines[0]
    assert list(line.breakdown) == steps
    assert format_amount(line.amount, "USD") == amount


def test_minimum_is_prorated_like_lagos_min_amount_cents() -> None:
    """Lago's charge minimum (``min_amount_cents``) with no usage, 17 days of a 31-day period: getlago/lago-api
    ``spec/services/fees/charge_service_spec.rb`` (01eeda9d8bf794f3a6fd5ee7aeccc23150689fff), "with true-up
    fee": fees of 0 and 548 cents, "548 is 1000 prorated for 17 days" (precise 548.3870967741935 cents).
    Tollway prorates a charge's minimum (and maximum) by the period fraction, as it prorates the plan's
    minimum commitment; its fraction has 12 places (0.548387096774), so the exact true-up is
    5.48387096774 EUR, where Lago's float carries 548.3870967741935 cents; both bill 5.48."""
    march = BillingPeriod(datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC))
    fraction = period_fraction(march, datetime(2023, 3, 15, tzinfo=UTC), march.end)
    pricing = plan(
        "currency: EUR\ninterval: month\ncharges:\n"
        "  - {id: calls, model: per_unit, meter: units, unit_amount: '0.01', minimum_amount: '10.00'}\n"
    )
    line = billed(pricing, PeriodContext(fraction), units="0").lines[0]
    assert format_amount(line.amount, "EUR") == "5.48"
    assert line.breakdown[-1] == (
        "minimum amount 10.00, 0.548387096774 of the period: true-up: 1 × 5.48387096774000 = 5.48387096774000"
    )


@pytest.mark.parametrize(("units", "amount"), [("2", "10.00"), ("5", "10.00"), ("8", "16.00")])
def test_minimum_reproduces_flexprices_commitment_true_up(units: str, amount: str) -> None:
    """Flexprice's per-line-item amount commitment with true-up: flexprice/flexprice
    ``internal/service/billing_commitment_test.go`` (00987911dcc98ca18f8d0c3826ddedbd0fe0845e),
    TestApplyWindowCommitment_TimeBuckets_NoBucketsConfigured: $2 per unit, a $10 commitment, 2 units ($4)
    → trued up to $10. Flexprice applies it per window (one Tollway period here) and bills usage above the
    commitment at an overage factor (8 units → $10 + $6 × 2 = $22); Tollway has no overage factor, so 8
    units cost 8 × 2.00 = 16.00."""
    pricing = plan(
        "currency: USD\ninterval: month\ncharges:\n"
        "  - {id: calls, model: per_unit, meter: units, unit_amount: '2.00', minimum_amount: '10.00'}\n"
    )
    assert total(pricing, units) == amount


def test_charge_minimum_comes_before_discounts_and_the_plans_minimum_commitment() -> None:
    """Order: the charge is clamped, its discounts apply to the clamped line, then the plan's minimum
    commitment tops the subtotal up."""
    pricing = plan(
        """\
        currency: USD
        interval: month
        charges:
          - {id: calls, model: per_unit, meter: units, unit_amount: "0.01", minimum_amount: "20", maximum_amount: "50"}
        minimum_commitment: "100.00"
        discounts:
          - {id: half, percent: "50", applies_to: calls}
        """
    )
    assert lines(billed(pricing, units="100")) == ["calls 20.00", "half -10.00", "minimum_commitment 90.00"]
    assert lines(billed(pricing, units="9000")) == ["calls 50.00", "half -25.00", "minimum_commitment 75.00"]


# --- fractional tier bounds --------------------------------------------------------------------------

OPENMETER_GRADUATED_IN_THOUSANDS = """\
currency: USD
interval: month
charges:
  - id: units
    model: graduated
    meter: units
    flat_fee_at_zero: true
    tiers:
      - {up_to: 0.005, unit_amount: "0", flat_amount: "100"}
      - {up_to: 0.010, unit_amount: "0", flat_amount: "50"}
      - {up_to: 0.015, unit_amount: "10000"}
      - {up_to: null, unit_amount: "5000"}
"""


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [
        ("0", "100.00"),
        ("0.003", "100.00"),
        ("0.005", "100.00"),
        ("0.005001", "150.00"),
        ("0.007", "150.00"),
        ("0.012", "170.00"),
        ("0.022", "235.00"),
    ],
)
def test_fractional_bounds_reproduce_openmeter_graduated_in_a_larger_unit(quantity: str, amount: str) -> None:
    """OpenMeter's tier bounds are decimals (``UpToAmount``): openmeterio/openmeter
    ``openmeter/billing/service/lineservice/pricegraduatedtiered_test.go`` (182a332b),
    TestTieredPriceCalculator, the same numbers (0 → 100 … 22 → 235, 5.001 → 150) with the meter counted
    in thousands: every bound becomes fractional (5 → 0.005) and every unit price 1000 times larger, and
    the totals must not move."""
    assert total(plan(OPENMETER_GRADUATED_IN_THOUSANDS), quantity) == amount


@pytest.mark.parametrize(
    ("quantity", "amount"), [("0", "0.00"), ("0.001", "0.12"), ("0.01", "1.02"), ("0.011", "1.10"), ("0.012", "1.15")]
)
def test_fractional_bounds_reproduce_lago_graduated_in_a_larger_unit(quantity: str, amount: str) -> None:
    """getlago/lago-api ``spec/services/charges/charge_models/graduated_service_spec.rb`` (14c9e1d8): 0 → 0,
    1 → 12¢, 10 → 102¢, 11 → 110¢, 12 → 115¢, with the meter in thousands (bound 10 → 0.01, 10¢ a unit →
    100.00 a thousand). Lago's own ranges are whole numbers (``from_value``/``to_value``)."""
    pricing = plan(
        """\
        currency: USD
        interval: month
        charges:
          - id: units
            model: graduated
            meter: units
            tiers:
              - {up_to: 0.01, unit_amount: "100", flat_amount: "0.02"}
              - {up_to: null, unit_amount: "50", flat_amount: "0.03"}
        """
    )
    assert total(pricing, quantity) == amount


@pytest.mark.parametrize(
    ("quantity", "amount"),
    [("0.001", "12.00"), ("0.1", "210.00"), ("0.101", "101.00"), ("0.2", "200.00"), ("0.3", "200.00")],
)
def test_fractional_bounds_reproduce_lago_volume_in_a_larger_unit(quantity: str, amount: str) -> None:
    """getlago/lago-api ``spec/services/charges/charge_models/volume_service_spec.rb`` (130b2749): 1 → 12,
    100 → 210, 101 → 101, 200 → 200, 300 → 200, with the meter in thousands (bounds 0.1 and 0.2)."""
    pricing = plan(
        """\
        currency: USD
        interval: month
        charges:
          - id: units
            model: volume
            meter: units
            tiers:
              - {up_to: 0.1, unit_amount: "2000", flat_amount: "10"}
              - {up_to: 0.2, unit_amount: "1000", flat_amount: "0"}
              - {up_to: null, unit_amount: "500", flat_amount: "50"}
        """
    )
    assert total(pricing, quantity) == amount


def test_fractional_bounds_label_the_bands_they_cover() -> None:
    pricing = plan(
        """\
        currency: USD
        interval: month
        charges:
          - id: storage
            model: graduated
            meter: units
            tiers:
              - {up_to: 0.5, unit_amount: "0"}
              - {up_to: "2", unit_amount: "0.10"}
              - {up_to: null, unit_amount: "0.05"}
        """
    )
    line = billed(pricing, units="3.25").lines[0]
    assert line.breakdown == (
        "tier 1 (up to 0.5): 0.5 × 0 = 0.0",
        "tier 2 (above 0.5 to 2): 1.5 × 0.10 = 0.150",
        "tier 3 (above 2): 1.25 × 0.05 = 0.0625",
    )
    assert format_amount(line.amount, "USD") == "0.21"
