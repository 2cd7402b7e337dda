"""One usage row: what the ``usage`` table in ClickHouse holds for a request, and its JSONEachRow line.

A request has up to two rows with the same key (customer_id, ts, request_id): version 1, written when
Tollway decides (so a request is recorded even if its response is never reported), and version 2, the
same request completed with the response facts from Envoy's access log. ClickHouse keeps the highest
version (ReplacingMergeTree); readers query ``FINAL``. See docs/usage-tracking.md.

Encoding is on the hot path (every decision writes a row), so it is a format string, not a generic
JSON encoder: strings go through the C-accelerated JSON string escaper, numbers are formatted directly.
"""

from __future__ import annotations

import json.encoder
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

Outcome = Literal["admitted", "refused"]
DECISION_VERSION: Final = 1
RESPONSE_VERSION: Final = 2
NO_STATUS: Final = 0  # the response was never reported (a decision-only row)

_quote = json.encoder.encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    ts_ms: int  # decision time, epoch milliseconds (UTC)
    customer_id: str
    subject: str  # API key id or token subject
    plan: str
    feature: str
    route: str
    method: str
    status: int
    outcome: Outcome
    reason: str
    limits_checked: bool
    request_bytes: int
    response_bytes: int
    upstream_latency_ms: float
    meters: Mapping[str, int | Decimal] = field(default_factory=dict)
    version: int = DECISION_VERSION

    def to_line(self) -> bytes:
        return encode_row(self)


class _SecondFormatter:
    """``YYYY-MM-DD HH:MM:SS`` for an epoch second, remembering the last one (rows come in time order)."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, second: int) -> str:
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            self._second = second
        return self._text


_seconds = _SecondFormatter()


def format_ts(ts_ms: int) -> str:
    """ClickHouse DateTime64(3) text for epoch milliseconds (integers would be read as seconds)."""
    second, millis = divmod(ts_ms, 1000)
    return f"{_seconds(second)}.{millis:03d}"


def encode_meters(meters: Mapping[str, int | Decimal]) -> str:
    """A JSON object of decimal strings: ClickHouse parses them into Decimal(38, 9) exactly."""
    if not meters:
        return "{}"
    return "{" + ",".join(f"{_quote(name)}:{_quote(str(qty))}" for name, qty in meters.items()) + "}"


def encode_row(row: UsageRow) -> bytes:
    """The row as one JSONEachRow line (newline-terminated)."""
    return (
        f'{{"request_id":{_quote(row.request_id)},"ts":"{format_ts(row.ts_ms)}",'
        f'"customer_id":{_quote(row.customer_id)},"subject":{_quote(row.subject)},'
        f'"plan":{_quote(row.plan)},"feature":{_quote(row.feature)},"route":{_quote(row.route)},'
        f'"method":{_quote(row.method)},"status":{row.status:d},"outcome":"{row.outcome}",'
        f'"reason":{_quote(row.reason)},"limits_checked":{"true" if row.limits_checked else "false"},'
        f'"request_bytes":{row.request_bytes:d},"response_bytes":{row.response_bytes:d},'
        f'"upstream_latency_ms":{row.upstream_latency_ms:.3f},"meters":{encode_meters(row.meters)},'
        f'"version":{row.version:d}}}\n'
    ).encode("ascii")


COLUMNS: Final = (
    "request_id",
    "ts",
    "customer_id",
    "subject",
    "plan",
    "feature",
    "route",
    "method",
    "status",
    "outcome",
    "reason",
    "limits_checked",
    "request_bytes",
    "response_bytes",
    "upstream_latency_ms",
    "meters",
    "version",
)
