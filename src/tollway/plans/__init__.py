"""The plan catalog: plans, features, meters, limits, quotas and pricing as YAML (or a Kubernetes ConfigMap).

``load_catalog`` reads and checks a file (every problem reported at once, each with file:line:column);
``CompiledCatalog`` adds the route table and the look-ups the decision core needs; ``CatalogWatcher``
reloads it when the file (or the ConfigMap volume behind it) changes.
"""

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue, UnknownMeter, UnknownPlan
from tollway.plans.loader import load_catalog, load_catalog_text, load_compiled_catalog
from tollway.plans.routes import RouteMatch, RouteTable
from tollway.plans.schema import Catalog

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogIssue",
    "CompiledCatalog",
    "RouteMatch",
    "RouteTable",
    "UnknownMeter",
    "UnknownPlan",
    "load_catalog",
    "load_catalog_text",
    "load_compiled_catalog",
]
