"""One usage row: what the ``usage`` table in ClickHouse holds for a request, and its JSONEachRow line.

A request has up to two rows with the same key (customer_id, ts, request_id): version 1, written when
Tollway decides (so a request is recorded even if its response is never reported), and version 2, the
same request completed with the response facts from Envoy's access log. ClickHouse keeps the highest
version (ReplacingMergeTree); readers query ``FINAL``. See docs/usage-tracking.md.

``request_id`` is the row's own id, minted by Tollway when it decides (``new_row_id``), never a value a
client can choose: Envoy's ``x-request-id`` is one when ``preserve_external_request_id`` is on, and a client
repeating it would merge its requests into one row. Envoy's id is kept as ``envoy_request_id``, a
reference for correlating with Envoy's and the upstream's logs.

Encoding is on the hot path (every decision writes a row), so it is a format string, not a generic
JSON encoder: strings go through the C-accelerated JSON string escaper, numbers are formatted directly.
"""

from __future__ import annotations

import itertools
import json.encoder
import os
import time
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

Outcome = Literal["admitted", "refused"]
DECISION_VERSION: Final = 1
RESPONSE_VERSION: Final = 2
NO_STATUS: Final = 0  # the response was never reported (a decision-only row)

_quote = json.encoder.encode_basestring_ascii


_NO_METERS: Final[Mapping[str, int | Decimal]] = MappingProxyType({})


class UsageRow(NamedTuple):
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
    meters: Mapping[str, int | Decimal] = _NO_METERS
    version: int = DECISION_VERSION
    envoy_request_id: str = ""  # Envoy's x-request-id: a reference, not the key (client-chosen if preserved)
    # The request's real-time price in micro-units of ``balance_unit`` (burned from a prepaid balance when
    # ``balance_unit`` is set; counted against a postpaid spend cap when it is empty). 0: none.
    price_micros: int = 0
    balance_unit: str = ""

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
    shared = _SHARED.get(id(meters))
    if shared is not None and shared[0] is meters:
        return shared[1]
    return "{" + ",".join(f"{_quote(name)}:{_quote(str(qty))}" for name, qty in meters.items()) + "}"


_SHARED: dict[int, tuple[Mapping[str, int | Decimal], str]] = {}


def share_meters(meters: Mapping[str, int | Decimal]) -> Mapping[str, int | Decimal]:
    """Mark ``meters`` as a map many rows reuse unchanged (a route's decision-time meters): its JSON is
    encoded once. The map must never be modified afterwards."""
    if len(_SHARED) >= 4096:  # bounded: only re-encoding costs, never a wrong answer
        _SHARED.clear()
    _SHARED[id(meters)] = (meters, encode_meters(meters))
    return meters


@lru_cache(maxsize=8192)
def _identity(
    customer_id: str,
    subject: str,
    plan: str,
    feature: str,
    route: str,
    method: str,
    outcome: str,
    reason: str,
    limits_checked: bool,
    version: int,
) -> str:
    """The part of a line that repeats for every request of a caller on a route: encoded once."""
    return (
        f'"customer_id":{_quote(customer_id)},"subject":{_quote(subject)},"plan":{_quote(plan)},'
        f'"feature":{_quote(feature)},"route":{_quote(route)},"method":{_quote(method)},"outcome":"{outcome}",'
        f'"reason":{_quote(reason)},"limits_checked":{"true" if limits_checked else "false"},"version":{version:d}}}\n'
    )


def encode_row(row: UsageRow) -> bytes:
    """The row as one JSONEachRow line (newline-terminated; ClickHouse takes the keys in any order)."""
    return (
        f'{{"request_id":{_quote(row.request_id)},"envoy_request_id":{_quote(row.envoy_request_id)},'
        f'"ts":"{format_ts(row.ts_ms)}","status":{row.status:d},'
        f'"request_bytes":{row.request_bytes:d},"response_bytes":{row.response_bytes:d},'
        f'"upstream_latency_ms":{row.upstream_latency_ms:.3f},"meters":{encode_meters(row.meters)},'
        + (_price(row.price_micros, row.balance_unit) if row.price_micros or row.balance_unit else "")
        + _identity(
            row.customer_id,
            row.subject,
            row.plan,
            row.feature,
            row.route,
            row.method,
            row.outcome,
            row.reason,
            row.limits_checked,
            row.version,
        )
    ).encode("ascii")


def _price(price_micros: int, balance_unit: str) -> str:
    """Only rows with a price carry these keys; ClickHouse fills the defaults (0, '') for the others."""
    return f'"price_micros":{price_micros:d},"balance_unit":{_quote(balance_unit)},'


_DECISION_END: Final = b'"version":1}'
_ID_START: Final = len(b'{"request_id":"')


def without_superseded(data: bytes) -> bytes:
    """``data`` (whole lines) without the decision rows whose response row is in the same batch.

    The response row supersedes the decision row anyway (same key, higher version); not inserting the
    decision row halves what ClickHouse parses and stores in the normal case. Lines are as ``encode_row``
    writes them: the request id first, the version last. Anything else is kept as is.
    """
    lines = data.split(b"\n")
    completed = {
        line[_ID_START : line.find(b'"', _ID_START)]
        for line in lines
        if line.endswith(b'"version":2}') and line.startswith(b'{"request_id":"')
    }
    if not completed:
        return data
    kept = [
        line
        for line in lines
        if not (line.endswith(_DECISION_END) and line[_ID_START : line.find(b'"', _ID_START)] in completed)
    ]
    return b"\n".join(kept)


COLUMNS: Final = (
    "request_id",
    "envoy_request_id",
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
    "price_micros",
    "balance_unit",
)


def _process_prefix() -> str:
    return os.urandom(8).hex() + "-"


_row_prefix = _process_prefix()
_row_serial = itertools.count(1)


def new_row_id() -> str:
    """A new usage row id: 64 random bits drawn once per process, then this process's serial number, in
    hex (``3f9c0e7a1b2d4c5e-1a2b``). Unique across processes and restarts without coordination, never
    chosen by a client, and cheap on the check path (~0.2 µs: no system call per id)."""
    return f"{_row_prefix}{next(_row_serial):x}"


def _after_fork_in_child() -> None:
    """A forked child must not repeat its parent's ids: it draws its own prefix."""
    global _row_prefix, _row_serial
    _row_prefix = _process_prefix()
    _row_serial = itertools.count(1)


os.register_at_fork(after_in_child=_after_fork_in_child)
