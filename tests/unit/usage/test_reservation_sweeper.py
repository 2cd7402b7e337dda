"""The reservation sweeper repairs what a crash or a lost access-log entry left (issue 14, item 3): an open
reservation is settled from its completed row, closed at its reserve when only the decision row exists,
or released when the request has no row; a settlement whose row never got the settled price gets a
correction row; markers are deleted once the latest row is right; young entries are left alone."""

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from tests.unit.usage.test_reservation_rows import CATALOG
from tollway.credits.grants import GrantState
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.usage.reservation_sweeper import (
    CLOSED_AT_RESERVE,
    CORRECTED,
    SETTLED_FROM_ROW,
    sweep,
)
from tollway.usage.row import RESPONSE_VERSION, UsageRow

NOW = int(datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp() * 1000)
PERIOD = (
    int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000),
)
TIMEOUT = 900_000
ADMITTED_PRICE = 41_000  # 1 call (1_000) + 4000 tokens reserved (40_000)


def decision_row(row_id: str) -> UsageRow:
    return UsageRow(
        row_id, NOW, "acme", "key_1", "llm", "chat", "/v1/chat", "POST", 0, "admitted", "", True, 0, 0, 0.0,
        {"requests": 1}, 1, "e-" + row_id, ADMITTED_PRICE, "USD",
    )  # fmt: skip


def completed(row_id: str, tokens: int, price: int = ADMITTED_PRICE) -> UsageRow:
    meters = {"requests": 1, "tokens": Decimal(tokens)}
    return decision_row(row_id)._replace(version=RESPONSE_VERSION, status=200, meters=meters, price_micros=price)


class Rows:
    def __init__(self) -> None:
        self.versions: dict[str, list[UsageRow]] = {}

    def put(self, row: UsageRow) -> None:
        self.versions.setdefault(row.request_id, []).append(row)

    async def rows(self, customer_id: str, row_ids: Sequence[str]) -> Mapping[str, UsageRow]:
        return {r: max(v, key=lambda x: x.version) for r, v in self.versions.items() if r in row_ids}


def test_the_sweeper_settles_closes_releases_and_corrects_from_the_usage_rows() -> None:
    catalog = compile_catalog_text(CATALOG, "catalog.yaml")
    limiter = MemoryLimiter()
    limiter.put_grant("acme", GrantState("g1", 1_000_000))
    money = catalog.money_for("llm", "chat", PERIOD, 1)
    assert money is not None
    for row_id in ("lost-log", "unsettled", "never-answered", "meter-died", "done", "young"):
        at = NOW + 10 * TIMEOUT if row_id == "young" else NOW
        assert limiter.check("acme", [], 0, at, None, money.for_row(row_id)).admitted
    rows = Rows()
    for row_id in ("lost-log", "unsettled", "meter-died", "done"):
        rows.put(decision_row(row_id))
    rows.put(completed("unsettled", 1_500))  # written while Redis could not be reached: the reserved price
    assert limiter.settle_now("acme", "meter-died", {"llm": 500}, NOW + 1).back == 35_000  # then killed
    assert limiter.settle_now("acme", "done", {"llm": 4_000}, NOW + 1).status == "settled"
    rows.put(completed("done", 4_000))
    spooled: list[dict[str, object]] = []

    def append(data: bytes) -> bool:
        spooled.extend(json.loads(line) for line in data.splitlines())
        return True

    later = NOW + TIMEOUT + 5
    report = asyncio.run(sweep(limiter, rows, catalog, append, later, TIMEOUT))
    assert (report.settled, report.closed, report.released, report.corrected, report.forgotten) == (
        ["unsettled"],
        ["lost-log"],
        ["never-answered"],
        ["meter-died"],
        ["done"],
    )
    by_id = {str(r["request_id"]): r for r in spooled}
    assert (by_id["unsettled"]["version"], by_id["unsettled"]["price_micros"], by_id["unsettled"]["reason"]) == (
        3,
        ADMITTED_PRICE - 25_000,
        SETTLED_FROM_ROW,
    )
    assert (by_id["lost-log"]["version"], by_id["lost-log"]["price_micros"], by_id["lost-log"]["reason"]) == (
        3,
        ADMITTED_PRICE,
        CLOSED_AT_RESERVE,
    )
    assert (by_id["meter-died"]["version"], by_id["meter-died"]["price_micros"], by_id["meter-died"]["reason"]) == (
        3,
        ADMITTED_PRICE - 35_000,
        CORRECTED,
    )
    held = limiter.reservations("acme")
    assert held["young"].startswith("R ")  # not due yet
    assert "done" not in held
    # The burned total is what the rows say once loaded: 41_000 each, less what went back, and the request
    # that was never answered gave back its reserve (its call stays burned: it has no row).
    burned = 1_000_000 - sum(g.remaining for g in limiter.grants("acme"))
    rows_total = (ADMITTED_PRICE - 25_000) + ADMITTED_PRICE + (ADMITTED_PRICE - 35_000) + ADMITTED_PRICE
    assert burned == rows_total + ADMITTED_PRICE + 1_000  # + "young" (open) + the unanswered request's call
    # A timeout later (a marker answers duplicates that long): the corrections are loaded, so every marker
    # goes; nothing is settled twice. The young reservation is due only later.
    for row in spooled:
        rows.put(completed(str(row["request_id"]), 0, int(str(row["price_micros"])))._replace(version=3))
    again = asyncio.run(sweep(limiter, rows, catalog, append, later + TIMEOUT, TIMEOUT))
    assert sorted(again.forgotten) == ["lost-log", "meter-died", "never-answered", "unsettled"]
    assert again.settled == again.closed == again.released == again.corrected == []
    assert list(limiter.reservations("acme")) == ["young"]
    assert 1_000_000 - sum(g.remaining for g in limiter.grants("acme")) == burned
