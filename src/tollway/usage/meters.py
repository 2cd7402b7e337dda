"""Meter quantities of one request, from the catalog's meter definitions. Pure.

Every meter of the catalog that applies to a request is recorded, not only those the customer's plan
prices today: re-rating history under a new catalog (billing) needs the quantities a future plan may
charge for. A meter whose quantity is not known yet is absent (a decision-only row has no byte counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from tollway.plans.catalog import CompiledCatalog
from tollway.usage.row import share_meters

Quantities = dict[str, int | Decimal]


@dataclass(frozen=True, slots=True, eq=False)
class MeterSet:
    """A catalog's meters that apply to one feature's requests, grouped by what they count. Compared and
    hashed by identity: each is built once per catalog and feature, and is a memo key on the hot path."""

    requests: tuple[str, ...] = ()
    cost: tuple[str, ...] = ()
    request_bytes: tuple[str, ...] = ()
    response_bytes: tuple[str, ...] = ()
    response_json: frozenset[str] = frozenset()

    def at_decision(self, cost: int) -> Mapping[str, int | Decimal]:
        """What is known when Tollway decides: the request itself and its route's cost weight (shared:
        do not modify)."""
        return _at_decision(self, cost)

    def at_response(
        self, cost: int, request_bytes: int, response_bytes: int, from_body: Mapping[str, str] | None = None
    ) -> Quantities:
        """Everything, once Envoy reported the response. ``from_body``: values the body meter extracted."""
        quantities: Quantities = dict(_at_decision(self, cost))
        for name in self.request_bytes:
            quantities[name] = request_bytes
        for name in self.response_bytes:
            quantities[name] = response_bytes
        if from_body:
            for name, text in from_body.items():
                if name in self.response_json:
                    value = _decimal(text)
                    if value is not None:
                        quantities[name] = value
        return quantities


@lru_cache(maxsize=1024)
def _at_decision(meters: MeterSet, cost: int) -> Quantities:
    quantities: Quantities = dict.fromkeys(meters.requests, 1)
    for name in meters.cost:
        quantities[name] = cost
    share_meters(quantities)
    return quantities


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() and value >= 0 else None


EMPTY = MeterSet()


class CatalogMeters:
    """A catalog's meters per feature (a meter with ``features`` counts only those features' requests)."""

    __slots__ = ("_by_feature",)

    def __init__(self, catalog: CompiledCatalog | None = None) -> None:
        self._by_feature: dict[str, MeterSet] = {}
        if catalog is None:
            return
        for feature in catalog.catalog.features:
            by_unit: dict[str, list[str]] = {}
            for name, meter in catalog.catalog.meters.items():
                if meter.features is None or feature in meter.features:
                    by_unit.setdefault(meter.unit, []).append(name)
            self._by_feature[feature] = MeterSet(
                requests=tuple(by_unit.get("requests", ())),
                cost=tuple(by_unit.get("cost", ())),
                request_bytes=tuple(by_unit.get("request_bytes", ())),
                response_bytes=tuple(by_unit.get("response_bytes", ())),
                response_json=frozenset(by_unit.get("response_json", ())),
            )

    @classmethod
    def of(cls, by_feature: Mapping[str, MeterSet]) -> CatalogMeters:
        """Meters given per feature (tests, tools)."""
        meters = cls()
        meters._by_feature.update(by_feature)
        return meters

    def for_feature(self, feature: str) -> MeterSet:
        """The meters of ``feature``'s requests; none for a feature the catalog lacks."""
        return self._by_feature.get(feature, EMPTY)


NO_METERS = CatalogMeters()  # Tollway without a catalog: rows carry no meters


@lru_cache(maxsize=16)
def catalog_meters(catalog: CompiledCatalog) -> CatalogMeters:
    """Memoised per catalog object (a reload builds a new one)."""
    return CatalogMeters(catalog)
