"""Invoices of prepaid and spend-capped plans (``billing.prepaid``): the real-time charges' amounts equal
what the limiter burned, credits applied pay them from the balance, a hard spend cap bounds them, and the
balance section adds up from the ledger's entries and the burns."""

import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.billing.charges import price_charge
from tollway.billing.money import format_amount
from tollway.billing.prepaid import (
    CREDITS_LINE,
    SPEND_CAP_LINE,
    Move,
    PeriodBalance,
    period_balance,
    settle,
)
from tollway.billing.rating import InvoiceDraft, rate
from tollway.billing.render import to_html
from tollway.credits.units import BalanceUnit, from_micros
from tollway.plans.loader import load_catalog_text
from tollway.plans.realtime import PlanMoney, compile_plan_money
from tollway.plans.schema import Catalog

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: prepaid-invoices, version: "1"}
credit_units:
  credits: {value: "0.01", currency: USD, decimals: 0}
meters:
  requests: {unit: requests}
  search-units: {unit: cost, features: [search]}
  egress: {unit: response_bytes}
features:
  read:
    routes: [{methods: [GET], path: /v1/items}]
  search:
    cost: 5
    routes: [{methods: [GET], path: /v1/search}]
plans:
  prepaid:
    features: [read, search]
    prepaid: {unit: credits}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.25"}
        - id: searches
          model: graduated
          meter: search-units
          tiers:
            - {up_to: 40, unit_amount: "0.10"}
            - {up_to: null, unit_amount: "0.05", flat_amount: "0.50"}
        - {id: bundles, model: package, meter: requests, package_size: 7, package_amount: "0.33", free_units: 3}
        - {id: extra, model: allowance, meter: requests, included: 10, overage_unit_amount: "0.07"}
        - id: bulk
          model: volume
          meter: requests
          tiers:
            - {up_to: 10, unit_amount: "0.02"}
            - {up_to: null, unit_amount: "0.01"}
        - {id: egress, model: per_unit, meter: egress, unit_amount: "0.001"}
  prepaid-usd:
    features: [read]
    prepaid: {unit: USD, charges: [calls]}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.0001"}
        - {id: more, model: per_unit, meter: requests, unit_amount: "0.001"}
  capped:
    features: [read]
    spend_cap: {amount: "10.00"}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "5.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.30"}
"""
PERIOD = (0, 1)


def catalog() -> Catalog:
    return load_catalog_text(CATALOG, "prepaid.yaml")


def money_of(plan_id: str) -> PlanMoney:
    cat = catalog()
    money = compile_plan_money(plan_id, cat.plans[plan_id], cat)
    assert money is not None
    return money


def burn(money: PlanMoney, requests: list[tuple[str, int]]) -> tuple[int, dict[str, Decimal]]:
    """What the limiter burns for ``requests`` (feature, route cost), one at a time, in micro-units of the
    plan's unit: each request pays ``total(q + n) - total(q)`` of each charge it adds to; and the meters'
    quantities at the end (as the usage rows sum them)."""
    running: dict[str, int] = {}
    burned = 0
    meters: dict[str, Decimal] = {}
    for feature, cost in requests:
        for charge in money.burning:
            n = charge.quantity(feature, cost)
            if n:
                before = running.get(charge.charge_id, 0)
                burned += charge.over(PERIOD).price(before, n)
                running[charge.charge_id] = before + n
        meters["requests"] = meters.get("requests", Decimal(0)) + 1
        if feature == "search":
            meters["search-units"] = meters.get("search-units", Decimal(0)) + cost
    return burned, meters


def rated(plan_id: str, quantities: dict[str, Decimal]) -> InvoiceDraft:
    pricing = catalog().plans[plan_id].pricing
    assert pricing is not None
    return rate(plan_id, pricing, quantities)


REQUESTS = st.lists(st.tuples(st.sampled_from(["read", "search"]), st.integers(1, 9)), max_size=120)


@settings(max_examples=60, deadline=None)
@given(REQUESTS)
def test_the_burned_prices_sum_to_the_real_time_charges_before_rounding(requests: list[tuple[str, int]]) -> None:
    money = money_of("prepaid")
    assert {c.charge_id for c in money.burning} == {"calls", "searches", "bundles", "extra"}
    burned, quantities = burn(money, requests)
    pricing = catalog().plans["prepaid"].pricing
    assert pricing is not None
    charges = {c.id: c for c in pricing.charges}
    exact = sum(
        (price_charge(charges[c.charge_id], quantities.get(c.meter, Decimal(0))).amount for c in money.burning),
        Decimal(0),
    )
    assert from_micros(burned) * money.unit.value == exact
    # credits applied pay exactly the real-time lines: only the settled-at-invoice charges are due
    draft = settle(rated("prepaid", quantities), pricing, money, burned)
    by_id = {line.charge_id: line for line in draft.lines}
    assert by_id[CREDITS_LINE].amount == -sum(by_id[c].amount for c in ("calls", "searches", "bundles", "extra"))
    assert draft.total == sum(by_id[c].amount for c in ("platform", "bulk", "egress"))
    assert draft.total == sum(line.amount for line in draft.lines)


def test_credits_applied_in_a_credit_unit() -> None:
    # 50 reads and 10 searches of cost 5 (50 search units: 40 x 0.10 + 0.50 + 10 x 0.05 = 5.00)
    money = money_of("prepaid")
    burned, quantities = burn(money, [("read", 1)] * 50 + [("search", 5)] * 10)
    quantities["egress"] = Decimal(1234)
    pricing = catalog().plans["prepaid"].pricing
    assert pricing is not None
    draft = settle(rated("prepaid", quantities), pricing, money, burned)
    amounts = {line.charge_id: str(line.amount) for line in draft.lines}
    # calls 60 x 0.25 = 15.00; bundles ceil((60-3)/7) = 9 x 0.33 = 2.97; extra 50 x 0.07 = 3.50
    assert amounts == {
        "platform": "10.00",
        "calls": "15.00",
        "searches": "5.00",
        "bundles": "2.97",
        "extra": "3.50",
        "bulk": "0.60",
        "egress": "1.23",
        CREDITS_LINE: "-26.47",
    }
    assert from_micros(burned) == Decimal(2647)  # credits: 26.47 USD at 0.01 each
    credits = draft.lines[-1]
    assert (credits.kind, credits.quantity) == ("credits", Decimal(2647))
    assert str(draft.total) == "11.83"  # platform + bulk + egress: due as usual


def test_a_part_burned_short_leaves_the_rest_due() -> None:
    # 100 requests at 0.0001 USD; only 60 were burned (40 admitted under fail_open, price 0)
    money = money_of("prepaid-usd")
    pricing = catalog().plans["prepaid-usd"].pricing
    assert pricing is not None
    draft = settle(rated("prepaid-usd", {"requests": Decimal(100)}), pricing, money, 6_000)
    amounts = {line.charge_id: str(line.amount) for line in draft.lines}
    # calls 0.01; burned 0.006 rounds to 0.01 (never more than the charges); `more` is not prepaid
    assert amounts == {"calls": "0.01", "more": "0.10", CREDITS_LINE: "-0.01"}
    short = settle(rated("prepaid-usd", {"requests": Decimal(1000)}), pricing, money, 6_000)
    assert {line.charge_id: str(line.amount) for line in short.lines}[CREDITS_LINE] == "-0.01"
    assert str(short.total) == "1.09"  # 0.10 + 1.00 - 0.01


def test_a_hard_spend_cap_bounds_the_real_time_charges() -> None:
    money = money_of("capped")
    pricing = catalog().plans["capped"].pricing
    assert pricing is not None
    # what the gate admits: 33 x 0.30 = 9.90 (the 34th would make 10.20)
    within = settle(rated("capped", {"requests": Decimal(33)}), pricing, money)
    assert [line.charge_id for line in within.lines] == ["platform", "calls"]
    assert str(within.total) == "14.90"
    # requests admitted without the cap's check (fail_open): never more than the cap for them
    over = settle(rated("capped", {"requests": Decimal(50)}), pricing, money)
    amounts = {line.charge_id: str(line.amount) for line in over.lines}
    assert amounts == {"platform": "5.00", "calls": "15.00", SPEND_CAP_LINE: "-5.00"}
    assert str(over.total) == "15.00"
    soft = replace(money, cap_soft=True)
    assert str(settle(rated("capped", {"requests": Decimal(50)}), pricing, soft).total) == "20.00"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_the_real_time_charges_never_exceed_the_cap(requests: int) -> None:
    money = money_of("capped")
    pricing = catalog().plans["capped"].pricing
    assert pricing is not None
    draft = settle(rated("capped", {"requests": Decimal(requests)}), pricing, money)
    realtime = sum(line.amount for line in draft.lines if line.charge_id != "platform")
    assert realtime <= Decimal("10.00")
    assert realtime == min(Decimal(requests) * Decimal("0.30"), Decimal("10.00"))


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


CREDITS = BalanceUnit("credits", 0, "USD", Decimal("0.01"))
START, END = ms("2026-10-01 00:00:00"), ms("2026-11-01 00:00:00")
MOVES = [
    Move(ms("2026-09-01 00:00:00"), "grant", "welcome", Decimal(5000), "credits"),
    Move(ms("2026-09-10 00:00:00"), "grant", "old", Decimal(1000), "credits"),
    Move(ms("2026-09-20 00:00:00"), "void", "old", Decimal(-400), "credits"),
    Move(ms("2026-10-01 00:00:00"), "rollover", "welcome", Decimal(-1500), "credits"),
    Move(ms("2026-10-05 00:00:00"), "grant", "topup-42", Decimal(2500), "credits", "invoice 42"),
    Move(ms("2026-10-20 00:00:00"), "expiry", "topup-42", Decimal(-100), "credits"),
    Move(ms("2026-10-25 00:00:00"), "burn", "welcome", Decimal(-999), "credits"),  # burns come from usage
    Move(ms("2026-10-26 00:00:00"), "grant", "other-unit", Decimal(7), "USD"),  # another unit: left out
    Move(ms("2026-11-01 00:00:00"), "grant", "next", Decimal(300), "credits"),  # next period
]


def test_the_balance_section_adds_up() -> None:
    # before: 5000 + 1000 - 400 - 1200 burned = 4400; in October: -1500 + 2500 - 100 - 2647 burned
    balance = period_balance(CREDITS, MOVES, 1_200_000_000, 2_647_000_000, START, END)
    assert balance.start == Decimal(4400)
    assert [(line.kind, line.grant_id, str(line.amount)) for line in balance.lines] == [
        ("rolled_over", "welcome", "-1500"),
        ("top_up", "topup-42", "2500"),
        ("expired", "topup-42", "-100"),
        ("burned", "", "-2647"),
    ]
    assert balance.end == Decimal(2653)
    document = balance.as_dict()
    assert (document["start"], document["end"], document["value"]) == ("4400", "2653", "0.01")
    rows = {row["kind"]: row for row in document["lines"]}
    assert rows["top_up"]["amount_currency"] == "25.00"
    assert rows["top_up"]["description"] == "top-up: grant topup-42 (invoice 42)"
    assert rows["balance_end"]["amount_currency"] == "26.53"
    assert rows["top_up"]["at"] == "2026-10-05 00:00:00.000000"


def test_the_balance_section_is_rendered_escaped() -> None:
    hostile = [Move(START + 1, "grant", "g1", Decimal(10), "credits", "<script>x</script>")]
    balance: PeriodBalance = period_balance(CREDITS, hostile, 0, 0, START, END)
    document: dict[str, Any] = {
        "invoice_id": "in_x",
        "status": "draft",
        "customer_id": "acme",
        "plan": "prepaid",
        "currency": "USD",
        "period": {"month": "2026-10", "local_start": "a", "local_end": "b", "timezone": "UTC"},
        "lines": [],
        "total": "0.00",
        "balance": balance.as_dict(),
    }
    page = to_html(document)
    assert "<h2>Prepaid balance (1 credits = 0.01 USD)</h2>" in page
    assert "&lt;script&gt;" in page
    assert "<script>" not in page
    assert '<td class="num">10</td><td class="num">0.10</td>' in page


DOC = Path(__file__).parents[3] / "docs" / "billing.md"
DOC_HEADER = 'apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: doc, version: "1"}\n'


def doc_tables(section: str) -> dict[str, list[list[str]]]:
    """The section's tables by the title of their first column (header and separator dropped)."""
    tables: dict[str, list[list[str]]] = {}
    for block in re.split(r"\n\s*\n", section):
        lines = [line for line in block.strip().splitlines() if line.startswith("|")]
        if len(lines) > 2:
            rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
            tables[rows[0][0]] = rows[2:]
    return tables


def test_the_documented_prepaid_example() -> None:
    section = DOC.read_text().split("## Prepaid plans\n", 1)[1].split("\n## ", 1)[0]
    marker = re.search(r"<!-- prepaid-example: (.+?) -->", section)
    assert marker is not None
    usage = dict(item.split("=") for item in marker.group(1).split())
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    cat = load_catalog_text(DOC_HEADER + example, "billing.md")
    money = compile_plan_money("starter", cat.plans["starter"], cat)
    assert money is not None
    pricing = cat.plans["starter"].pricing
    assert pricing is not None
    burned, _ = burn(money, [("api", 1)] * int(usage["requests"]))
    quantities = {meter: Decimal(quantity) for meter, quantity in usage.items()}
    draft = settle(rate("starter", pricing, quantities), pricing, money, burned)
    tables = doc_tables(section)
    shown = [(line.charge_id, format_amount(line.amount, "USD")) for line in draft.lines]
    assert [*shown, ("total", format_amount(draft.total, "USD"))] == [tuple(row) for row in tables["line"]]
    moves = [
        Move(ms(f"{at} 00:00:00"), kind, grant, Decimal(amount), "credits") for at, kind, grant, amount in tables["at"]
    ]
    balance = period_balance(money.unit, moves, 0, burned, START, END).as_dict()
    rows = [[row["kind"], row["amount"], row["amount_currency"]] for row in balance["lines"]]
    assert rows == tables["row"]
