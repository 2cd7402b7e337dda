"""The metering process settles a request's reservation from its access-log entry (with the body meter's
value) before it writes the completed row, which carries the settled price; a repeated entry settles
nothing twice (issue 14, item 3)."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from envoy.service.accesslog.v3 import als_pb2

from tests.unit.usage.test_access_log_rows import entry
from tests.unit.usage.test_reservation_rows import CATALOG
from tollway.credits.grants import GrantState
from tollway.extproc.access_log import AccessLogService
from tollway.extproc.metadata import AUTHZ_NAMESPACE
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.usage.meters import catalog_meters
from tollway.usage.settlement import ReservationSettler
from tollway.usage.spool import SpoolWriter

NOW = int(datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp() * 1000)
PERIOD = (
    int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000),
)


def logged(row_id: str, tokens: str | None) -> als_pb2.StreamAccessLogsMessage:
    log = entry(f"envoy-{row_id}", usage_id=row_id, tokens=tokens, decided=str(NOW))
    authz = log.common_properties.metadata.filter_metadata[AUTHZ_NAMESPACE]
    authz.fields["x-tollway-plan"].string_value = "llm"
    authz.fields["x-tollway-price"].string_value = "41000 USD"  # 1 call + 4000 tokens reserved
    message = als_pb2.StreamAccessLogsMessage()
    message.http_logs.log_entry.append(log)
    return message


def test_the_completed_row_carries_the_settled_price_and_a_repeat_settles_nothing(tmp_path: Path) -> None:
    catalog = compile_catalog_text(CATALOG, "catalog.yaml")
    limiter = MemoryLimiter()
    limiter.put_grant("acme", GrantState("g1", 1_000_000))
    for row_id in ("u1", "u2"):
        money = catalog.money_for("llm", "chat", PERIOD, 1)
        assert money is not None
        assert limiter.check("acme", [], 0, NOW, None, money.for_row(row_id)).admitted
    assert sum(g.remaining for g in limiter.grants("acme")) == 1_000_000 - 2 * 41_000
    spool = SpoolWriter(tmp_path)
    settler = ReservationSettler(limiter, lambda: catalog, lambda: NOW + 5)
    service = AccessLogService(spool, lambda: catalog_meters(catalog), settler)

    async def scenario() -> None:
        await service.write_settled(logged("u1", "1500"))  # 2500 tokens back: 25_000
        await service.write_settled(logged("u1", "1500"))  # Envoy's retry, or a replay: nothing twice
        await service.write_settled(logged("u2", None))  # the body meter saw no field: the reserve stands

    asyncio.run(scenario())
    rows = [json.loads(line) for line in (spool.path or Path()).read_bytes().splitlines()]
    assert [(r["request_id"], r["version"], r["price_micros"]) for r in rows] == [
        ("u1", 2, 16_000),
        ("u1", 2, 16_000),
        ("u2", 2, 41_000),
    ]
    assert sum(g.remaining for g in limiter.grants("acme")) == 1_000_000 - 16_000 - 41_000
    assert (settler.settled, settler.already, settler.failed) == (2, 1, 0)
    assert all(v.startswith("S ") for v in limiter.reservations("acme").values())
