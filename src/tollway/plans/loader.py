"""Load a catalog file (plain or a Kubernetes ConfigMap) and report every problem with file:line:column."""

from __future__ import annotations

from pathlib import Path

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.schema import Catalog
from tollway.plans.validation import validate_catalog
from tollway.plans.yaml_source import read_document


def load_catalog(path: Path) -> Catalog:
    """Read and check ``path``. Raises ``CatalogError`` (every issue) or ``OSError`` (unreadable file)."""
    return load_catalog_text(path.read_text(encoding="utf-8"), str(path))


def load_catalog_text(text: str, filename: str) -> Catalog:
    """Check catalog ``text``; issues name ``filename``. Raises ``CatalogError``."""
    document = read_document(text, filename)
    issues = list(document.issues)
    if document.data is None and not issues:
        issues.append(CatalogIssue(filename, 1, 1, "the catalog is empty"))
    catalog = None
    if document.data is not None:
        catalog, problems = validate_catalog(document.data)
        issues.extend(document.issue(problem) for problem in problems if not document.reported(problem.path))
    if issues or catalog is None:
        raise CatalogError(issues)
    return catalog


def load_compiled_catalog(path: Path) -> CompiledCatalog:
    """``load_catalog`` plus the route table and look-ups (``CompiledCatalog``)."""
    return CompiledCatalog.build(load_catalog(path))


def compile_catalog_text(text: str, filename: str) -> CompiledCatalog:
    return CompiledCatalog.build(load_catalog_text(text, filename))
