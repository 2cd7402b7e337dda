"""Fixed-amount coupons carried across invoices (``billing.coupons``): the peers' published numbers, the
carried balance over random sequences of invoices, and the catalog's checks of coupons and progressive
billing thresholds (every problem with file:line, nothing loaded)."""

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.coupons import COUPON_KIND, CouponUse, apply_coupons, used_before
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog_text
from tollway.plans.pricing import Coupon


def coupon(amount: str, *, periods: int | None = None, id: str = "welcome") -> Coupon:
    return Coupon(id=id, amount=Decimal(amount), periods=periods)


def finalized(invoice: str, use: CouponUse, *, customer: str = "acme", currency: str = "EUR") -> dict[str, Any]:
    """A finalized invoice document holding ``use``'s coupon line (what ``Invoice.as_dict`` writes)."""
    return {
        "invoice_id": invoice,
        "customer_id": customer,
        "status": "finalized",
        "currency": currency,
        "lines": [use.as_line()],
    }


def one(coupons: list[Coupon], due: str, used: dict[str, Decimal] | None = None, index: int = 0) -> Decimal:
    uses = apply_coupons(coupons, Decimal(due), index, "EUR", used or {})
    return sum((use.applied for use in uses), Decimal(0))


def test_lago_amount_service_spec() -> None:
    """getlago/lago-api ``spec/services/applied_coupons/amount_service_spec.rb``: an applied coupon of 12
    cents on a base of 300 cents takes 12; on 0 takes 0; on 6 takes 6 (limited to the invoice amount);
    partly used already (a credit of 6) it takes the remaining 6. Here in EUR: 0.12 off 3.00, 0.00, 0.06."""
    welcome = [coupon("0.12")]
    assert one(welcome, "3.00") == Decimal("0.12")
    assert one(welcome, "0.00") == Decimal("0.00")
    assert one(welcome, "0.06") == Decimal("0.06")
    assert one(welcome, "3.00", {"welcome": Decimal("0.06")}) == Decimal("0.06")


def test_lago_applied_coupon_service_spec_carries_the_rest_to_the_next_invoice() -> None:
    """getlago/lago-api ``spec/services/credits/applied_coupon_service_spec.rb``: a coupon of 12 cents on an
    invoice of 123 cents credits 12 (and is used up); on an invoice of 10 cents credits 10 and stays
    active; partly used (a credit of 10 already) it credits the remaining 2 and is used up.
    ``spec/models/applied_coupon_spec.rb``: 50 cents with a credit of 10 has 40 remaining. Here as
    finalized invoice documents, whose coupon lines are the only record of what was used."""
    welcome = [coupon("0.12")]
    (whole,) = apply_coupons(welcome, Decimal("1.23"), 0, "EUR", {})
    assert (whole.applied, whole.balance_after) == (Decimal("0.12"), Decimal("0.00"))
    (first,) = apply_coupons(welcome, Decimal("0.10"), 0, "EUR", {})
    assert (first.applied, first.balance_after) == (Decimal("0.10"), Decimal("0.02"))
    history = [finalized("in_1", first)]
    used = used_before(history, "acme", "in_2", "EUR")
    assert used == {"welcome": Decimal("0.10")}
    (second,) = apply_coupons(welcome, Decimal("1.23"), 1, "EUR", used)
    assert (second.applied, second.balance_after) == (Decimal("0.02"), Decimal("0.00"))
    history.append(finalized("in_2", second))
    assert apply_coupons(welcome, Decimal("1.23"), 2, "EUR", used_before(history, "acme", "in_3", "EUR")) == ()
    # applied_coupon_spec: 0.50 with 0.10 used leaves 0.40
    (model,) = apply_coupons([coupon("0.50")], Decimal("0"), 0, "EUR", {"welcome": Decimal("0.10")})
    assert model.balance_before == Decimal("0.40")


def test_the_invoice_itself_a_draft_or_another_customer_never_counts_as_used() -> None:
    (use,) = apply_coupons([coupon("10.00")], Decimal("4.00"), 0, "EUR", {})
    mine = finalized("in_1", use)
    assert used_before([mine], "acme", "in_1", "EUR") == {}  # its own finalized write: re-running it
    assert used_before([{**mine, "status": "draft"}], "acme", "in_2", "EUR") == {}
    assert used_before([mine], "other", "in_2", "EUR") == {}
    assert used_before([mine], "acme", "in_2", "USD") == {}
    assert used_before([mine], "acme", "in_2", "EUR") == {"welcome": Decimal("4.00")}


def test_a_coupon_with_periods_expires_with_its_balance() -> None:
    assert one([coupon("100.00", periods=2)], "30.00", index=1) == Decimal("30.00")
    assert one([coupon("100.00", periods=2)], "30.00", index=2) == Decimal("0")


def test_coupons_apply_in_order_each_to_what_the_earlier_left() -> None:
    uses = apply_coupons([coupon("5.00", id="a"), coupon("20.00", id="b")], Decimal("12.00"), 0, "EUR", {})
    assert [(u.coupon_id, u.due, u.applied) for u in uses] == [
        ("a", Decimal("12.00"), Decimal("5.00")),
        ("b", Decimal("7.00"), Decimal("7.00")),
    ]
    # a negative amount due (a credit) takes nothing, and the line says so
    (use,) = apply_coupons([coupon("5.00")], Decimal("-3.00"), 0, "EUR", {})
    assert use.applied == 0
    assert use.as_line()["amount"] == "0.00"
    assert use.as_line()["kind"] == COUPON_KIND


cents = st.integers(min_value=-5_000, max_value=50_000).map(lambda c: Decimal(c).scaleb(-2))


@given(st.integers(min_value=1, max_value=100_000).map(lambda c: Decimal(c).scaleb(-2)), st.lists(cents, max_size=12))
def test_the_carried_balance_is_exact_over_any_sequence_of_invoices(amount: Decimal, dues: list[Decimal]) -> None:
    """Each invoice takes min(what is left, its amount due); over the sequence the coupon gives exactly
    min(amount, what the invoices owed), and re-reading the history never uses it twice."""
    welcome = [Coupon(id="welcome", amount=amount)]
    history: list[dict[str, Any]] = []
    owed = Decimal(0)
    for number, due in enumerate(dues):
        invoice = f"in_{number}"
        used = used_before(history, "acme", invoice, "EUR")
        uses = apply_coupons(welcome, due, number, "EUR", used)
        given_so_far = sum(used.values(), Decimal(0))
        if given_so_far >= amount:
            assert uses == ()
            continue
        (use,) = uses
        assert use.applied == min(amount - given_so_far, max(due, Decimal(0)))
        assert use.balance_after >= 0
        history.append(finalized(invoice, use))
        # re-building the invoice just finalized (a second --finalize) sees the same balance it saw
        assert apply_coupons(welcome, due, number, "EUR", used_before(history, "acme", invoice, "EUR")) == uses
        owed += max(due, Decimal(0))
    total = sum(used_before(history, "acme", "none", "EUR").values(), Decimal(0))
    assert total == min(amount, owed)


CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: t, version: "1"}
meters:
  requests: {unit: requests}
plans:
  pro:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.01"}
      discounts:
        - {id: launch, percent: "10"}
      coupons:
COUPONS
PROGRESSIVE
"""


def load(coupons: str = '        - {id: welcome, amount: "100.00"}', progressive: str = "") -> Any:
    return load_catalog_text(CATALOG.replace("COUPONS", coupons).replace("PROGRESSIVE", progressive), "c.yaml")


def test_a_catalog_with_coupons_and_a_threshold_loads() -> None:
    catalog = load(
        '        - {id: welcome, amount: "100.00", currency: USD, periods: 12}',
        '      progressive_billing: {threshold: "50.00", currency: USD}',
    )
    pricing = catalog.plans["pro"].pricing
    assert pricing is not None
    assert pricing.progressive_billing is not None
    assert (pricing.coupons[0].amount, pricing.coupons[0].periods) == (Decimal("100.00"), 12)
    assert pricing.progressive_billing.threshold == Decimal("50.00")


W = '        - {id: w, amount: "5.00"}'
BAD = [
    ('        - {id: w, amount: "0"}', "", ["16:27 coupons[0].amount: a coupon's amount must be above 0"]),
    ('        - {id: w, amount: "-5.00"}', "", ["16:27 coupons[0].amount: money must be a plain decimal"]),
    (
        W.replace("}", ", currency: EUR}"),
        "",
        ["16:45 coupons[0].currency: the coupon is in EUR but the plan bills in USD"],
    ),
    (W.replace("5.00", "5.005"), "", ["16:27 coupons[0].amount: an amount billed in USD has at most 2 decimal places"]),
    (W.replace("w,", "launch,"), "", ["16:16 coupons[0].id: a discount of this plan has this id"]),
    (W + "\n" + W, "", ["17:16 coupons[1].id: coupon id used twice"]),
    (
        "        []",
        '      progressive_billing: {threshold: "0"}',
        ["17:40 progressive_billing.threshold: the progressive"],
    ),
    (
        "        []",
        '      progressive_billing: {threshold: "-1"}',
        ["17:40 progressive_billing.threshold: money must be"],
    ),
    (
        "        []",
        '      progressive_billing: {threshold: "10.00", currency: JPY}',
        ["17:59 progressive_billing.currency: the threshold is in JPY but the plan bills in USD"],
    ),
    (
        '        - {id: w, amount: "0"}',
        '      progressive_billing: {threshold: "0.001"}',
        [
            "16:27 coupons[0].amount: a coupon's amount must be above 0",
            "17:40 progressive_billing.threshold: an amount billed in USD has at most 2 decimal places",
        ],
    ),
]


@pytest.mark.parametrize(("coupons", "progressive", "expected"), BAD)
def test_bad_coupons_and_thresholds_are_refused_with_file_and_line(
    coupons: str, progressive: str, expected: list[str]
) -> None:
    with pytest.raises(CatalogError) as caught:
        load(coupons, progressive)
    found = [str(issue) for issue in caught.value.issues]
    assert len(found) == len(expected), found
    for text, want in zip(found, expected, strict=True):
        where, what = want.split(" ", 1)
        assert text.startswith(f"c.yaml:{where}: plans.pro.pricing.{what}"), (text, want)
