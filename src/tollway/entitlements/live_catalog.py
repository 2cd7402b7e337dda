"""The catalog in force, replaced whole when a valid new one is loaded (requests in flight keep the one
they started with: each reads ``current`` once)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError

log = logging.getLogger(__name__)


class LiveCatalog:
    def __init__(self, catalog: CompiledCatalog) -> None:
        self.current = catalog
        self.loaded_at = datetime.now(UTC)
        self.rejected: CatalogError | None = None

    def replace(self, catalog: CompiledCatalog) -> None:
        old = self.current
        self.current = catalog
        self.loaded_at = datetime.now(UTC)
        self.rejected = None
        log.info(
            "catalog %s version %s (%s) is live, replacing version %s (%s)",
            catalog.name,
            catalog.version,
            catalog.digest,
            old.version,
            old.digest,
        )

    def reject(self, error: CatalogError) -> None:
        self.rejected = error
        log.error(
            "catalog change refused; version %s (%s) stays live:\n%s",
            self.current.version,
            self.current.digest,
            "\n".join(str(issue) for issue in error.issues),
        )

    def describe(self) -> dict[str, object]:
        catalog = self.current
        return {
            "name": catalog.name,
            "version": catalog.version,
            "digest": catalog.digest,
            "loaded_at": self.loaded_at.isoformat().replace("+00:00", "Z"),
            "last_change_refused": None if self.rejected is None else [str(i) for i in self.rejected.issues],
        }
