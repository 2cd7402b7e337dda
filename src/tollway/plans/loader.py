"""Load a catalog file (plain or a Kubernetes ConfigMap) and report every problem with file:line:column."""

from __future__ import annotations

import os
from pathlib import Path

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.schema import Catalog
from tollway.plans.validation import validate_catalog
from tollway.plans.yaml_source import MAX_YAML_BYTES, decode_yaml, read_document


def read_yaml_bytes(path: Path) -> tuple[bytes, int]:
    """At most ``MAX_YAML_BYTES + 1`` bytes of ``path`` (never more, whatever its size) and its size.
    Raises ``OSError``."""
    with path.open("rb") as handle:
        data = handle.read(MAX_YAML_BYTES + 1)
        size = max(len(data), os.fstat(handle.fileno()).st_size)
    return data, size


def read_yaml_file(path: Path) -> str:
    """The text of a YAML input file. Raises ``CatalogError`` (too large, not UTF-8) or ``OSError``."""
    data, size = read_yaml_bytes(path)
    return decode_yaml(data, str(path), size)


def load_catalog(path: Path) -> Catalog:
    """Read and check ``path``. Raises ``CatalogError`` (every issue) or ``OSError`` (unreadable file)."""
    return load_catalog_text(read_yaml_file(path), str(path))


def load_catalog_text(text: str, filename: str) -> Catalog:
    """Check catalog ``text``; issues name ``filename``. Raises ``CatalogError``."""
    document = read_document(text, filename)
    issues = list(document.issues)
    if document.data is None and not issues:
        issues.append(CatalogIssue(filename, 1, 1, "the catalog is empty"))
    catalog = None
    if document.data is not None and not document.reported(()):  # a limit crossed: nothing else is checked
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
