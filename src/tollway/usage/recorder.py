"""Decision rows: every admit and every refusal becomes a version-1 usage row in the spool before Envoy
hears the verdict. Admitted requests are completed later by the access log (version 2); a refusal is
final at once (Tollway wrote the response itself: its status and body size are known).

Each row is keyed by ``row_id``, which the caller mints with ``tollway.usage.row.new_row_id`` (an admit
passes it on to Envoy, so the access log completes the same row); ``request_id`` is Envoy's x-request-id,
stored as a reference only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal

from tollway.plans.catalog import CompiledCatalog
from tollway.usage.meters import EMPTY, MeterSet, catalog_meters
from tollway.usage.row import DECISION_VERSION, NO_STATUS, UsageRow, encode_row
from tollway.usage.spool import SpoolWriter

log = logging.getLogger(__name__)

SpoolFullPolicy = Literal["fail_closed", "admit"]
FAIL_CLOSED: Final = "fail_closed"


class UsageRecorder:
    """Writes decision rows to this process's spool segment. ``catalog`` returns the live catalog (or None
    when Tollway only authenticates: rows then carry no plan and no meters)."""

    def __init__(
        self,
        spool: SpoolWriter,
        catalog: Callable[[], CompiledCatalog | None],
        full_policy: SpoolFullPolicy = "fail_closed",
    ) -> None:
        self._spool = spool
        self._catalog = catalog
        self.full_policy = full_policy
        self.rows_dropped = 0

    @property
    def spool(self) -> SpoolWriter:
        return self._spool

    @property
    def refuses_new_requests(self) -> bool:
        """True while the spool is full and the policy is to refuse what cannot be recorded."""
        return self._spool.full and self.full_policy == FAIL_CLOSED

    def _meters(self, feature: str) -> MeterSet:
        catalog = self._catalog()
        return catalog_meters(catalog).for_feature(feature) if catalog is not None else EMPTY

    def _write(self, row: UsageRow) -> bool:
        if self._spool.append(encode_row(row)):
            return True
        self.rows_dropped += 1
        return False

    def admitted(
        self,
        row_id: str,
        request_id: str,
        ts_ms: int,
        method: str,
        customer_id: str,
        subject: str,
        plan: str = "",
        feature: str = "",
        route: str = "",
        cost: int = 1,
        limits_checked: bool = True,
        price_micros: int = 0,
        balance_unit: str = "",
    ) -> bool:
        """Record an admit; False if the spool is full (the row is lost unless the caller refuses).
        ``price_micros``/``balance_unit``: what the request burned (prepaid) or spent (postpaid, no unit)."""
        return self._write(
            UsageRow(
                row_id,
                ts_ms,
                customer_id,
                subject,
                plan,
                feature,
                route,
                method,
                NO_STATUS,
                "admitted",
                "",
                limits_checked,
                0,
                0,
                0.0,
                self._meters(feature).at_decision(cost),
                DECISION_VERSION,
                request_id,
                price_micros,
                balance_unit,
            )
        )

    def refused(
        self,
        row_id: str,
        request_id: str,
        ts_ms: int,
        method: str,
        status: int,
        reason: str,
        response_bytes: int,
        customer_id: str = "",
        subject: str = "",
        plan: str = "",
        feature: str = "",
        route: str = "",
        cost: int = 1,
    ) -> bool:
        """Record a refusal (never billable). The body Envoy never read counts 0 request bytes."""
        return self._write(
            UsageRow(
                row_id,
                ts_ms,
                customer_id,
                subject,
                plan,
                feature,
                route,
                method,
                status,
                "refused",
                reason,
                True,
                0,
                response_bytes,
                0.0,
                self._meters(feature).at_decision(cost),
                DECISION_VERSION,
                request_id,
            )
        )
