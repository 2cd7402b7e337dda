"""Which meters a request adds to: every catalog meter, unless the meter names its features."""

from decimal import Decimal

from tollway.plans.loader import compile_catalog_text
from tollway.usage.meters import catalog_meters

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: meters, version: "1"}
meters:
  requests: {unit: requests}
  egress: {unit: response_bytes}
  search-units: {unit: cost, features: [search]}
  tokens: {unit: response_json, field: usage.total_tokens, features: [chat]}
features:
  search:
    cost: 5
    routes: [{methods: [GET], path: /v1/search}]
  items:
    routes: [{methods: [GET], path: /v1/items}]
  chat:
    routes: [{methods: [POST], path: /v1/chat}]
plans:
  pro: {features: [search, items, chat]}
"""


def test_a_meter_with_features_counts_only_their_requests() -> None:
    meters = catalog_meters(compile_catalog_text(CATALOG, "catalog.yaml"))
    assert meters.for_feature("search").at_decision(5) == {"requests": 1, "search-units": 5}
    assert meters.for_feature("items").at_decision(1) == {"requests": 1}
    assert meters.for_feature("items").at_response(1, 0, 70, {"tokens": "9"}) == {"requests": 1, "egress": 70}
    assert meters.for_feature("chat").at_response(1, 10, 70, {"tokens": "9"}) == {
        "requests": 1,
        "egress": 70,
        "tokens": Decimal(9),
    }
    assert meters.for_feature("unknown").at_decision(1) == {}
