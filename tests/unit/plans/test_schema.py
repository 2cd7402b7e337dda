"""Rules local to one object: each mistake gives one issue, on the right line, with a clear message."""

import pytest

from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import parse_window

BASE = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: t, version: "1"}
meters:
  requests: {unit: requests}
  METER
features:
  read:
    routes:
      - ROUTE
plans:
  pro:
    features: [read]
    limits:
      - LIMIT
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.001"}
      discounts:
        - DISCOUNT
"""
GOOD = {
    "METER": "egress: {unit: response_bytes}",
    "ROUTE": "{methods: [GET], path: /v1/items}",
    "LIMIT": "{name: burst, limit: 10, per: second}",
    "DISCOUNT": "{id: launch, percent: '20'}",
}
LINES = {"METER": 6, "ROUTE": 10, "LIMIT": 15, "DISCOUNT": 22}


def catalog(**changes: str) -> str:
    text = BASE
    for slot, value in {**GOOD, **changes}.items():
        text = text.replace(slot, value)
    return text


def test_the_base_is_valid() -> None:
    load_catalog_text(catalog(), "c.yaml")


@pytest.mark.parametrize(
    ("slot", "value", "message"),
    [
        ("ROUTE", "{methods: [GET], path: /v1/items, prefix: /v1/}", "exactly one of `path` or `prefix`"),
        ("ROUTE", "{methods: [GET]}", "exactly one of `path` or `prefix`"),
        ("ROUTE", "{methods: [GET], path: '/v1/items/id-{id}'}", "placeholder must be a whole segment"),
        ("ROUTE", "{methods: [GET], path: '/v1/{a}/{a}'}", "appears twice"),
        ("ROUTE", "{methods: [GET], path: v1/items}", "must start with /"),
        ("ROUTE", "{methods: [GET], path: '/v1//items'}", "empty path segment"),
        ("ROUTE", "{methods: [GET], path: '/v1/items?x=1'}", "the query string is never matched"),
        ("ROUTE", "{methods: [GET], prefix: '/v1/{x}'}", "cannot hold placeholders"),
        ("ROUTE", "{methods: ['*', GET], path: /v1/items}", "list it alone"),
        ("ROUTE", "{methods: [GET, GET], path: /v1/items}", "listed twice"),
        ("ROUTE", "{methods: [], path: /v1/items}", "must not be empty"),
        ("ROUTE", "{methods: [FETCH], path: /v1/items}", "upper-case HTTP method"),
        ("LIMIT", "{name: burst, limit: 10, per: second, window: 10s}", "exactly one of `per` or `window`"),
        ("LIMIT", "{name: burst, limit: 10}", "exactly one of `per` or `window`"),
        ("LIMIT", "{name: burst, limit: 10, window: 32d}", "from 1s to 31d"),
        ("LIMIT", "{name: burst, limit: 10, window: 0s}", "from 1s to 31d"),
        ("LIMIT", "{name: burst, limit: 10, per: second, shadow: maybe}", "expected true or false"),
        ("LIMIT", "{name: burst, limit: 10.0, per: second}", "expected an integer"),
        ("LIMIT", "{name: burst, limit: 10, per: second, enforcement: loose}", "expected 'hard' or 'soft'"),
        ("METER", "egress: {unit: response_bytes, field: a.b}", "`field` applies only to unit response_json"),
        ("METER", "tokens: {unit: response_json, field: 'a..b'}", "dotted JSON path"),
        ("METER", "egress: {unit: response_bytes, billable: {exclude_statuses: [600]}}", "HTTP status"),
        ("DISCOUNT", "{id: launch}", "exactly one of `percent` or `amount`"),
        ("DISCOUNT", "{id: launch, percent: '20', amount: '5'}", "exactly one of `percent` or `amount`"),
        ("DISCOUNT", "{id: launch, percent: '120'}", "at most 100"),
        ("DISCOUNT", "{id: launch, amount: '0'}", "above 0"),
        ("DISCOUNT", "{id: launch, percent: '5', periods: 0}", "must be at least 1"),
        ("DISCOUNT", "{id: calls, percent: '5'}", None),  # discount ids and charge ids are separate namespaces
    ],
)
def test_object_rules(slot: str, value: str, message: str | None) -> None:
    text = catalog(**{slot: value})
    if message is None:
        load_catalog_text(text, "c.yaml")
        return
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, "c.yaml")
    [issue] = caught.value.issues
    assert message in issue.message
    assert issue.line == LINES[slot]


def test_invoice_is_a_reserved_charge_id() -> None:
    text = catalog().replace("{id: calls,", "{id: invoice,")
    with pytest.raises(CatalogError, match="'invoice' is reserved"):
        load_catalog_text(text, "c.yaml")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_windows(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "30m1h", "1 h", "-1s"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(ValueError, match="not a window"):
        parse_window(text)
