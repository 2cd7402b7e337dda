"""``alerts:`` of a rate limit, a quota and a prepaid balance, as a catalog writes them (schema only).

A limit's or quota's alert is a percent of its limit (``80``, ``12.5`` or ``"80%"``: above 0, at most
100) or an absolute amount of its units (``{units: 9000}``: a whole number ≥ 1), at most
``thresholds.MAX_ALERTS`` of them. They compile to levels in units (``notifications.thresholds``) with the
customer's effective limit. A prepaid balance's alerts are amounts of the balance unit (``["10", "1"]``),
checked against the unit's places in ``plans.realtime``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Final

from pydantic import AfterValidator, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from tollway.notifications.thresholds import MAX_ALERTS, Alert

_PERCENT_TEXT: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
_HINT: Final = 'an alert is a percent of the limit (80 or "80%", above 0 and at most 100) or {units: N}'


def _percent(value: Decimal) -> Alert:
    if not value.is_finite() or not Decimal(0) < value <= Decimal(100):
        raise PydanticCustomError("alert_percent", "an alert percent must be above 0 and at most 100")
    return Alert(percent=value)


def parse_alert(value: object) -> Alert:
    """One catalog alert (an int, a Decimal from the YAML loader, ``"80%"`` or ``{units: N}``) → Alert."""
    if isinstance(value, Alert):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("alert_type", _HINT)
    if isinstance(value, int):
        return _percent(Decimal(value))
    if isinstance(value, Decimal):
        return _percent(value)
    if isinstance(value, float):
        raise PydanticCustomError("alert_float", 'an alert percent must not be a binary float: write "12.5%"')
    if isinstance(value, str):
        match = _PERCENT_TEXT.fullmatch(value.strip())
        if match is None:
            raise PydanticCustomError("alert_text", f'{_HINT}; "{value}" is neither')
        try:
            return _percent(Decimal(match.group(1)))
        except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
            raise PydanticCustomError("alert_text", _HINT) from None
    if isinstance(value, dict):
        if set(value) != {"units"}:
            raise PydanticCustomError("alert_units_keys", "an alert in units is written {units: N}, with no other key")
        units = value["units"]
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise PydanticCustomError("alert_units", "an alert's units are a whole number of at least 1")
        return Alert(units=units)
    raise PydanticCustomError("alert_type", _HINT)


def _dump(alert: Alert) -> object:
    return alert.label() if alert.percent is not None else {"units": alert.units}


def _alert_list(value: list[Alert]) -> list[Alert]:
    if not value:
        raise PydanticCustomError("alerts_empty", "must not be empty (leave `alerts` out for none)")
    if len(value) > MAX_ALERTS:
        raise PydanticCustomError("alerts_many", f"at most {MAX_ALERTS} alerts per policy, not {len(value)}")
    if len(set(value)) != len(value):
        raise PydanticCustomError("alerts_repeated", "an alert is listed twice")
    return value


CatalogAlert = Annotated[Alert, PlainValidator(parse_alert), PlainSerializer(_dump)]
Alerts = Annotated[list[CatalogAlert], AfterValidator(_alert_list)]
"""A policy's ``alerts``: at most ``MAX_ALERTS``."""


def alert_labels(alerts: list[Alert] | tuple[Alert, ...], limit: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The levels of ``alerts`` for ``limit`` (ascending, distinct: ``thresholds.levels``) and the label of
    each (the first alert, in catalog order, that resolves to it)."""
    labels: dict[int, str] = {}
    for alert in alerts:
        labels.setdefault(alert.level(limit), alert.label())
    levels = tuple(sorted(labels))
    return levels, tuple(labels[level] for level in levels)


__all__ = ["Alerts", "CatalogAlert", "alert_labels", "parse_alert"]
