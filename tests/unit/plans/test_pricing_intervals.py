"""A plan's ``pricing.interval`` (issue 16, item 4): every interval loads; a bad name, a synonym among
them, is an issue naming the file and line, reported with the catalog's other issues."""

import pytest

from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog_text

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {{name: intervals, version: "1"}}
plans:
  a:
    pricing:
      currency: USD
      interval: {first}
  b:
    pricing:
      currency: USD
      interval: {second}
"""


@pytest.mark.parametrize("interval", ["week", "quarter", "half_year"])  # month and year: test_schema
def test_every_interval_loads(interval: str) -> None:
    catalog = load_catalog_text(CATALOG.format(first=interval, second="month"), "plans.yaml")
    pricing = catalog.plans["a"].pricing
    assert pricing is not None
    assert pricing.interval == interval


def test_bad_interval_names_are_issues_with_file_and_line() -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog_text(CATALOG.format(first="semiannual", second="fortnight"), "plans.yaml")
    assert [str(issue) for issue in info.value.issues] == [
        "plans.yaml:8:17: plans.a.pricing.interval: interval 'semiannual' is not one of week, month, quarter, "
        "half_year, year (write 'half_year') (got: semiannual)",
        "plans.yaml:12:17: plans.b.pricing.interval: interval 'fortnight' is not one of week, month, quarter, "
        "half_year, year (got: fortnight)",
    ]
    with pytest.raises(CatalogError, match=r"plans\.yaml:8:17: .*interval 'quarterly' .*\(write 'quarter'\)"):
        load_catalog_text(CATALOG.format(first="quarterly", second="month"), "plans.yaml")
    with pytest.raises(CatalogError, match=r"plans\.yaml:8:17: .*interval 3 is not one of"):
        load_catalog_text(CATALOG.format(first="3", second="month"), "plans.yaml")
