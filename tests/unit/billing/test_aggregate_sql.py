"""The billable-quantity SQL, built without a database: each meter's rule, the period, the parameters."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tollway.billing.aggregate import (
    base_parameters,
    customers_query,
    format_instant,
    meter_expression,
    meter_query,
    period_query,
    status_condition,
)
from tollway.plans.schema import Billable
from tollway.warehouse.errors import InvalidDatabaseName


def test_status_classes_and_exact_statuses() -> None:
    rule = Billable(exclude_statuses=["5xx", "429"])
    assert status_condition(rule) == "NOT (intDiv(status, 100) = 5 OR status = 429)"


def test_default_rule_excludes_server_errors_only() -> None:
    assert status_condition(Billable()) == "NOT (intDiv(status, 100) = 5)"


def test_no_exclusion_counts_every_status() -> None:
    assert status_condition(Billable(exclude_statuses=[])) == "1"


def test_status_zero_is_never_excluded() -> None:
    # 0 (response never reported) matches no pattern: a class is 1xx..5xx, an exact status 100..599.
    condition = status_condition(Billable(exclude_statuses=["1xx", "2xx", "3xx", "4xx", "5xx"]))
    assert "intDiv(status, 100) = 0" not in condition
    assert "status = 0" not in condition


def test_refusals_never_count() -> None:
    expression = meter_expression("meter", Billable())
    assert expression.startswith("sumIf(meters[{meter:String}], outcome = 'admitted' AND ")


def test_one_meter_query_reads_final_and_filters_only_on_the_key() -> None:
    sql = meter_query(Billable(exclude_statuses=["429"]))
    assert "FROM {db:Identifier}.usage FINAL" in sql
    where = sql.split("WHERE", 1)[1]
    assert "outcome" not in where
    assert "status" not in where
    assert "customer_id = {customer:String}" in where
    assert "ts >= {start:DateTime64(6, 'UTC')} AND ts < {end:DateTime64(6, 'UTC')}" in where
    assert "sumIf(meters[{meter:String}], outcome = 'admitted' AND NOT (status = 429))" in sql


def test_period_query_has_a_column_per_meter_with_the_same_expression() -> None:
    rules = [("egress", Billable()), ("requests", Billable(exclude_statuses=["5xx", "429"]))]
    sql, parameters = period_query(rules)
    assert parameters == {"meter_0": "egress", "meter_1": "requests"}
    assert f"toString({meter_expression('meter_0', rules[0][1])}) AS q0" in sql
    assert f"toString({meter_expression('meter_1', rules[1][1])}) AS q1" in sql
    assert sql.count("FROM {db:Identifier}.usage FINAL") == 1


def test_parameters_are_utc_text_with_microseconds() -> None:
    auckland = timezone(timedelta(hours=13))
    start = datetime(2026, 10, 1, tzinfo=auckland)
    end = datetime(2026, 11, 1, tzinfo=auckland)
    assert base_parameters("tollway", "acme", start, end) == {
        "db": "tollway",
        "customer": "acme",
        "start": "2026-09-30 11:00:00.000000",
        "end": "2026-10-31 11:00:00.000000",
    }


def test_naive_instants_and_bad_database_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        format_instant(datetime(2026, 10, 1))
    with pytest.raises(InvalidDatabaseName, match="invalid database name"):
        base_parameters("x; DROP", "acme", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def test_many_customers_query_groups_by_customer_with_the_same_expressions() -> None:
    rules = [("requests", Billable(exclude_statuses=["5xx", "429"]))]
    sql, parameters = customers_query(rules)
    assert parameters == {"meter_0": "requests"}
    assert sql.startswith(f"SELECT customer_id, toString({meter_expression('meter_0', rules[0][1])}) AS q0")
    assert "customer_id IN {customers:Array(String)}" in sql
    assert sql.endswith("GROUP BY customer_id")
