"""A customer's budget list as sent (notifications.budgets.parse_budgets): any body is a valid list or a
4xx BudgetRefused, never another exception; valid lists round-trip through storage."""

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.notifications.budgets import Budget, BudgetRefused, PlanBudgetTerms, parse_budgets
from tollway.notifications.thresholds import MAX_ALERTS

TERMS = PlanBudgetTerms({"requests_month": 1000, "tokens_month": 7}, "USD", 2)
NO_SPEND = PlanBudgetTerms({"requests_month": 1000}, None)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["80", "0", "100", "100.01", "1.5", "2.00", "0.001", "1e3", "requests_month", "-5"]),
)
items = st.one_of(
    scalars,
    st.dictionaries(st.sampled_from(["id", "quota", "percent", "spend", "extra"]), scalars, max_size=4),
    st.fixed_dictionaries(
        {"id": st.text(max_size=70), "quota": st.sampled_from(["requests_month", "x"]), "percent": scalars}
    ),
    st.fixed_dictionaries({"id": st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), "spend": scalars}),
)
documents = st.one_of(scalars, st.fixed_dictionaries({"budgets": st.lists(items, max_size=MAX_ALERTS + 2)}))


def send(document: Any, terms: PlanBudgetTerms = TERMS) -> tuple[Budget, ...]:
    return parse_budgets(json.dumps(document).encode(), "application/json", terms)


@given(documents)
def test_any_document_is_budgets_or_a_client_error(document: Any) -> None:
    outcome: tuple[Budget, ...] | BudgetRefused
    try:
        outcome = send(document)
    except BudgetRefused as refused:
        outcome = refused
    if isinstance(outcome, BudgetRefused):
        assert 400 <= outcome.status < 500
        assert outcome.slug
        assert outcome.detail
        return
    budgets = outcome
    assert len(budgets) <= MAX_ALERTS
    assert len({b.id for b in budgets}) == len(budgets)
    for budget in budgets:
        assert Budget.from_dict(budget.as_dict()) == budget


@given(st.binary(max_size=200), st.sampled_from(["application/json", "application/json; charset=utf-8", "text/x"]))
def test_any_bytes_are_budgets_or_a_client_error(body: bytes, content_type: str) -> None:
    status = 200
    try:
        parse_budgets(body, content_type, TERMS)
    except BudgetRefused as refused:
        status = refused.status
    assert status == 200 or 400 <= status < 500


def test_valid_budgets() -> None:
    budgets = send(
        {
            "budgets": [
                {"id": "q", "quota": "requests_month", "percent": 80},
                {"id": "q.2", "quota": "tokens_month", "percent": "12.5"},
                {"id": "s-1", "spend": "2.00"},
                {"id": "s_2", "spend": 5},
            ]
        }
    )
    assert budgets == (
        Budget("q", "quota", policy="requests_month", percent=Decimal(80)),
        Budget("q.2", "quota", policy="tokens_month", percent=Decimal("12.5")),
        Budget("s-1", "spend", amount=Decimal("2.00"), unit="USD"),
        Budget("s_2", "spend", amount=Decimal(5), unit="USD"),
    )
    assert [b.threshold_label() for b in budgets] == ["80%", "12.5%", "2.00", "5"]
    assert send({"budgets": []}) == ()


@pytest.mark.parametrize(
    ("document", "terms", "status", "slug"),
    [
        ({"budgets": [{"id": "s", "spend": "1"}]}, NO_SPEND, 409, "no-spend-counter"),
        ({"budgets": [{"id": "q", "quota": "tokens_month", "percent": 50}]}, NO_SPEND, 422, "unknown-quota"),
        ({"budgets": [{"id": "q", "quota": "requests_month", "percent": True}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": "q", "quota": "requests_month", "percent": 80.555}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": "-q", "spend": "1"}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": "s", "spend": "1", "quota": "requests_month"}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": "s", "spend": "0"}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": "s", "spend": "1.005"}]}, TERMS, 422, "invalid-budgets"),
        ({"budgets": [{"id": f"s{i}", "spend": "1"} for i in range(11)]}, TERMS, 422, "too-many-budgets"),
        ({"budgets": {"id": "s"}}, TERMS, 422, "invalid-budgets"),
    ],
)
def test_refusals(document: Any, terms: PlanBudgetTerms, status: int, slug: str) -> None:
    with pytest.raises(BudgetRefused) as refused:
        send(document, terms)
    assert (refused.value.status, refused.value.slug) == (status, slug)


def test_non_json_constants_and_deep_nesting_are_refused_as_client_errors() -> None:
    for body in (b'{"budgets": [NaN]}', b"[" * 100_000, b"\xff"):
        with pytest.raises(BudgetRefused) as refused:
            parse_budgets(body, "application/json", TERMS)
        assert refused.value.status in (400, 413)
