from pathlib import Path

import pytest

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import UnknownMeter, UnknownPlan
from tollway.plans.loader import load_compiled_catalog

PLANS = Path(__file__).parents[3] / "plans"


@pytest.fixture(scope="module")
def compiled() -> CompiledCatalog:
    return load_compiled_catalog(PLANS / "catalog.yaml")


def test_plan_grants(compiled: CompiledCatalog) -> None:
    assert compiled.plan_grants("free", "items-read")
    assert not compiled.plan_grants("free", "items-write")
    assert compiled.plan_grants("enterprise", "admin")
    assert not compiled.plan_grants("pro", "no-such-feature")
    with pytest.raises(UnknownPlan):
        compiled.plan_grants("gold", "items-read")


def test_limits_and_quotas_for_a_feature(compiled: CompiledCatalog) -> None:
    assert [x.name for x in compiled.limits_for("pro", "items-read")] == ["burst", "sustained"]
    assert [x.name for x in compiled.limits_for("pro", "items-write")] == ["burst", "sustained", "writes"]
    assert [x.name for x in compiled.limits_for("pro", "search")] == ["burst", "sustained", "search-trial"]
    assert [x.name for x in compiled.quotas_for("pro", "reports")] == ["monthly", "monthly-exports"]
    assert [x.name for x in compiled.quotas_for("pro", "search")] == ["monthly"]
    assert [x.name for x in compiled.limits_for("pro", "unlisted")] == ["burst", "sustained"]
    with pytest.raises(UnknownPlan):
        compiled.limits_for("gold", "search")


def test_windows_in_seconds(compiled: CompiledCatalog) -> None:
    assert [x.window_seconds for x in compiled.plan("pro").limits] == [1, 60, 300, 3600]
    assert compiled.plan("enterprise").limits[1].window_seconds == 900


def test_meters(compiled: CompiledCatalog) -> None:
    requests = compiled.meter("requests")
    assert requests.unit == "requests"
    assert [requests.billable.counts(s) for s in (200, 404, 429, 500, 503)] == [True, True, False, False, False]
    assert compiled.meter("egress").billable.counts(404)
    assert not compiled.meter("egress").billable.counts(502)
    with pytest.raises(UnknownMeter):
        compiled.meter("tokens")


def test_routes_of_the_example(compiled: CompiledCatalog) -> None:
    match = compiled.routes.match
    assert match("GET", "/v1/items/abc") is not None
    assert match("POST", "/v1/search/aggregate") == match("POST", "/v1/search/aggregate?x=1")
    found = match("POST", "/v1/search/aggregate")
    assert found is not None
    assert (found.feature, found.cost) == ("search", 5)
    report = match("GET", "/v1/reports/2026/usage.csv")
    assert report is not None
    assert (report.feature, report.route, report.cost) == ("reports", "/v1/reports/", 2)
    assert match("DELETE", "/v1/admin/users/7") is not None
    assert match("GET", "/v1/unknown") is None


def test_identity(compiled: CompiledCatalog) -> None:
    assert compiled.name == "acme-data-api"
    assert compiled.version == "2026-12-07.1"
    assert compiled.digest in repr(compiled)
