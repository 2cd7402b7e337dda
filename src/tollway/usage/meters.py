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

Quantities = dict[str, int | Decimal]


@dataclass(frozen=True, slots=True)
class MeterSet:
    """A catalog's meters grouped by what they count."""

    requests: tuple[str, ...] = ()
    cost: tuple[str, ...] = ()
    request_bytes: tuple[str, ...] = ()
    response_bytes: tuple[str, ...] = ()
    response_json: frozenset[str] = frozenset()

    def at_decision(self, cost: int) -> Quantities:
        """What is known when Tollway decides: the request itself and its route's cost weight."""
        quantities: Quantities = dict.fromkeys(self.requests, 1)
        for name in self.cost:
            quantities[name] = cost
        return quantities

    def at_response(
        self, cost: int, request_bytes: int, response_bytes: int, from_body: Mapping[str, str] | None = None
    ) -> Quantities:
        """Everything, once Envoy reported the response. ``from_body``: values the body meter extracted."""
        quantities = self.at_decision(cost)
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


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() and value >= 0 else None


EMPTY = MeterSet()


@lru_cache(maxsize=16)
def meter_set(catalog: CompiledCatalog) -> MeterSet:
    """The catalog's meters by unit (memoised per catalog object; a reload builds a new one)."""
    by_unit: dict[str, list[str]] = {}
    for name, meter in catalog.catalog.meters.items():
        by_unit.setdefault(meter.unit, []).append(name)
    return MeterSet(
        requests=tuple(by_unit.get("requests", ())),
        cost=tuple(by_unit.get("cost", ())),
        request_bytes=tuple(by_unit.get("request_bytes", ())),
        response_bytes=tuple(by_unit.get("response_bytes", ())),
        response_json=frozenset(by_unit.get("response_json", ())),
    )
