"""``alerts:`` on rate limits, quotas and prepaid balances: parsed, refused with file:line:column, and
compiled into each policy's levels with the customer's effective limit."""

from decimal import Decimal

import pytest

from tollway.entitlements.rules import rules_for
from tollway.notifications.thresholds import Alert
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.loader import load_catalog_text
from tollway.ratelimit import QuotaPolicy, WindowPolicy
from tollway.ratelimit.policies import Alerting

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: t, version: "1"}
credit_units:
  credits: {value: "0.01", currency: USD, decimals: 2}
meters:
  requests: {unit: requests}
features:
  read:
    routes: [{methods: [GET], path: /v1/items}]
plans:
  pro:
    features: [read]
    limits:
      - {name: burst, limit: 10, per: second, alerts: ALERTS_LIMIT}
      - {name: quiet, limit: 10, per: minute}
    quotas:
      - {name: monthly, limit: 1000, alerts: ALERTS_QUOTA}
  prepaid:
    features: [read]
    prepaid: {unit: credits, alerts: BALANCE}
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.01"}
"""


def _text(limit: str = "[50]", quota: str = '[50, "80%", {units: 990}]', balance: str = '["10", "1"]') -> str:
    return CATALOG.replace("ALERTS_LIMIT", limit).replace("ALERTS_QUOTA", quota).replace("BALANCE", balance)


def _issues(text: str) -> list[CatalogIssue]:
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, "c.yaml")
    return caught.value.issues


def test_alerts_parse_as_percents_and_units() -> None:
    catalog = load_catalog_text(_text(quota='[50, "12.5%", 33.3, {units: 990}, 100]'), "c.yaml")
    quota = catalog.plans["pro"].quotas[0]
    assert quota.alerts == [
        Alert(percent=Decimal(50)),
        Alert(percent=Decimal("12.5")),
        Alert(percent=Decimal("33.3")),
        Alert(units=990),
        Alert(percent=Decimal(100)),
    ]
    prepaid = catalog.plans["prepaid"].prepaid
    assert prepaid is not None
    assert prepaid.alerts == [Decimal("10"), Decimal("1")]


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ("[0]", "above 0 and at most 100"),
        ("[101]", "above 0 and at most 100"),
        ("[-5]", "above 0 and at most 100"),
        ('["0%"]', "above 0 and at most 100"),
        ('["101%"]', "above 0 and at most 100"),
        ('["80"]', '"80" is neither'),
        ('["eighty"]', "is neither"),
        ("[true]", "or {units: N}"),
        ("[[80]]", "or {units: N}"),
        ("[{units: 0}]", "whole number of at least 1"),
        ("[{units: 1.5}]", "whole number of at least 1"),
        ('[{units: "9"}]', "whole number of at least 1"),
        ("[{units: 9, percent: 5}]", "no other key"),
        ("[{percent: 5}]", "no other key"),
        ("[]", "must not be empty"),
        ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]", "at most 10 alerts"),
        ('[80, "80%"]', "listed twice"),
        ("80", "list"),
    ],
)
def test_bad_alerts_name_file_line_and_column(alerts: str, message: str) -> None:
    [issue] = _issues(_text(quota=alerts))
    assert issue.file == "c.yaml"
    assert issue.line == 18
    assert issue.column > 1
    assert issue.message.startswith("plans.pro.quotas[0].alerts")
    assert message in issue.message


def test_every_bad_alert_is_reported_at_once() -> None:
    issues = _issues(_text(limit='[0, "x"]', quota="[{units: 0}, 50]", balance='["0.5", "0.001"]'))
    where = [(i.line, i.message.split(":")[0]) for i in issues]
    assert where == [
        (15, "plans.pro.limits[0].alerts[0]"),
        (15, "plans.pro.limits[0].alerts[1]"),
        (18, "plans.pro.quotas[0].alerts[0]"),
        (21, "plans.prepaid.prepaid.alerts[1]"),
    ]
    assert "credits, which has 2 decimal places" in issues[3].message


@pytest.mark.parametrize(
    ("balance", "message"),
    [
        ("[10]", None),
        ('["1", "1"]', "listed twice"),
        ("[]", "empty"),
        ('["0"]', "above 0"),
        ("[1.5]", None),
        ('["1.005"]', "2 decimal places"),
    ],
)
def test_balance_alerts(balance: str, message: str | None) -> None:
    if message is None:
        load_catalog_text(_text(balance=balance), "c.yaml")
        return
    [issue] = _issues(_text(balance=balance))
    assert issue.message.startswith("plans.prepaid.prepaid.alerts")
    assert message in issue.message


def test_catalogs_without_alerts_keep_their_digest() -> None:
    plain = CATALOG.replace(", alerts: ALERTS_LIMIT", "").replace(", alerts: ALERTS_QUOTA", "")
    plain = plain.replace(", alerts: BALANCE", "")
    compiled = CompiledCatalog.build(load_catalog_text(plain, "c.yaml"))
    dumped = compiled.catalog.model_dump(mode="json", by_alias=True)
    assert "alerts" not in dumped["plans"]["pro"]["quotas"][0]
    assert "alerts" not in dumped["plans"]["pro"]["limits"][0]
    assert "alerts" not in dumped["plans"]["prepaid"]["prepaid"]
    with_alerts = CompiledCatalog.build(load_catalog_text(_text(), "c.yaml"))
    assert with_alerts.digest != compiled.digest


def test_policies_carry_levels_with_the_effective_limit() -> None:
    compiled = CompiledCatalog.build(load_catalog_text(_text(limit='[50, "95%"]'), "c.yaml"))
    burst, quiet, monthly = rules_for(compiled, "pro", "read")
    period = (0, 1000)
    policy = monthly.policy(1000, period)
    assert isinstance(policy, QuotaPolicy)
    assert policy.alerting == Alerting((500, 800, 990), ("50%", "80%", "990"), "pro", "read")
    overridden = monthly.policy(2000, period)  # a customer override of the limit moves the percent levels
    assert overridden.alerting == Alerting((990, 1000, 1600), ("990", "50%", "80%"), "pro", "read")
    window = burst.policy(10, period)
    assert isinstance(window, WindowPolicy)
    assert window.alerting == Alerting((5, 10), ("50%", "95%"), "pro", "read")
    assert quiet.policy(10, period).alerting is None
    assert quiet.alerts == ()
    assert quiet.plan == ""
    assert hash(policy) == hash(monthly.policy(1000, period))


def test_alerts_that_resolve_to_one_level_keep_the_first_label() -> None:
    compiled = CompiledCatalog.build(load_catalog_text(_text(quota="[{units: 500}, 50]"), "c.yaml"))
    monthly = rules_for(compiled, "pro", "read")[2]
    assert monthly.policy(1000, (0, 1)).alerting == Alerting((500,), ("500",), "pro", "read")
    assert monthly.policy(3, (0, 1)).alerting == Alerting((2, 500), ("50%", "500"), "pro", "read")
