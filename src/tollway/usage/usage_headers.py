"""``Tollway-Usage`` and ``Tollway-Cost``: what this period has used and cost so far, on every admitted
response of a plan with ``usage_headers: true``, as RFC 9651 structured fields::

    Tollway-Usage: "requests";q=1234, "egress";q=5678901
    Tollway-Cost: 12.34;currency="USD";as-of=@1795600000

The numbers are the caller report's (``caller_report``: usage FINAL with the billable rules, priced by
the billing code), cached per customer and refreshed in the background at most every ``refresh_s``: the
request path only reads a dict, never waits for ClickHouse. ``as-of`` says when they were read; a
customer's first call after a quiet spell carries no fields (the refresh it triggers fills them in).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tollway.entitlements.live_catalog import LiveCatalog
from tollway.structured_fields import sf_string

log = logging.getLogger(__name__)

USAGE_FIELD: Final = "tollway-usage"
COST_FIELD: Final = "tollway-cost"
_MAX_SF_INTEGER: Final = 999_999_999_999_999
_MAX_SF_DECIMAL: Final = Decimal("999999999999.999")

Fields = tuple[tuple[str, str], ...]


def sf_number(text: str) -> str:
    """A quantity as an sf-integer or sf-decimal when it fits RFC 9651's ranges, else an sf-string."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return sf_string(text)
    if value == value.to_integral_value() and abs(value) <= _MAX_SF_INTEGER:
        return str(int(value))
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -3 and abs(value) <= _MAX_SF_DECIMAL:
        return format(value, "f")
    return sf_string(text)


def fields_of(report: Mapping[str, Any]) -> Fields:
    """The two fields of a caller report (``Tollway-Cost`` only when the plan has pricing)."""
    usage = ", ".join(f"{sf_string(meter)};q={sf_number(q)}" for meter, q in report["usage"].items())
    fields: list[tuple[str, str]] = [(USAGE_FIELD, usage)] if usage else []
    charges = report.get("charges")
    if charges is not None:
        as_of = int(datetime.fromisoformat(report["as_of"]).timestamp())
        cost = f"{sf_number(charges['total'])};currency={sf_string(charges['currency'])};as-of=@{as_of}"
        fields.append((COST_FIELD, cost))
    return tuple(fields)


@dataclass(slots=True)
class _Entry:
    fields: Fields
    read_at: float


class UsageHeaders:
    """Per-customer field values; ``monotonic`` is the injected clock's."""

    def __init__(
        self,
        report: Callable[[str], Awaitable[Mapping[str, Any]]],
        live: LiveCatalog,
        monotonic: Callable[[], float],
        *,
        refresh_s: float = 5.0,
        max_entries: int = 100_000,
    ) -> None:
        self._report = report
        self._live = live
        self._monotonic = monotonic
        self._refresh_s = refresh_s
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def fields(self, customer_id: str, plan_id: str) -> Fields:
        """The fields for one admitted response of ``customer_id`` on ``plan_id`` (none when the plan does
        not enable them, or nothing has been read yet); starts a refresh when they are stale."""
        plan = self._live.current.plans.get(plan_id)
        if plan is None or not plan.usage_headers:
            return ()
        entry = self._entries.get(customer_id)
        if (entry is None or self._monotonic() - entry.read_at >= self._refresh_s) and (
            customer_id not in self._refreshing
        ):
            self._refreshing[customer_id] = asyncio.get_running_loop().create_task(self._refresh(customer_id))
        return entry.fields if entry is not None else ()

    async def _refresh(self, customer_id: str) -> None:
        try:
            fields = fields_of(await self._report(customer_id))
        except Exception as exc:  # the headers are a courtesy: never fail a request for them
            log.warning("usage headers for %s not refreshed: %s", customer_id, exc)
            return
        finally:
            self._refreshing.pop(customer_id, None)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[customer_id] = _Entry(fields, self._monotonic())
