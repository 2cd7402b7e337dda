"""The decision core writes one decision row per verdict, before returning it; a full spool refuses
(fail_closed) or admits unrecorded (admit), as configured."""

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.unit.fakes import MemoryKeyStore
from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Deny
from tollway.extproc.decision import DECIDED_AT_HEADER, USAGE_ID_HEADER, DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver
from tollway.usage.recorder import SpoolFullPolicy, UsageRecorder
from tollway.usage.spool import SpoolWriter

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: rows, version: "1"}
meters:
  requests: {unit: requests}
  egress: {unit: response_bytes}
  work: {unit: cost}
features:
  read:
    cost: 3
    routes: [{methods: [GET], path: "/v1/items/{id}"}]
  admin:
    routes: [{methods: [GET], prefix: /v1/admin/}]
plans:
  pro:
    features: [read]
    quotas: [{name: monthly, limit: 2}]
"""
NOW = datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)


def spooled(spool: SpoolWriter) -> list[dict[str, Any]]:
    assert spool.path is not None
    return [json.loads(line) for line in spool.path.read_bytes().splitlines()]


def build(
    tmp_path: Path, policy: SpoolFullPolicy = "fail_closed", max_bytes: int = 1 << 30
) -> tuple[DecisionCore, SpoolWriter, str]:
    async def setup() -> tuple[DecisionCore, SpoolWriter, str]:
        clock = ManualClock(NOW)
        digester = KeyDigester(b"d" * 32)
        keys = MemoryKeyStore()
        issued = await Keyring(keys, digester, clock).create("acme")
        subscriptions = MemorySubscriptionStore()
        await subscriptions.put(Subscription.new("acme", "pro", datetime(2026, 1, 1, tzinfo=UTC)))
        live = LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml"))
        gate = EntitlementGate(
            live, SubscriptionResolver(subscriptions, SubscriptionCache(clock.monotonic)), MemoryLimiter(), clock
        )
        spool = SpoolWriter(tmp_path, max_bytes=max_bytes)
        recorder = UsageRecorder(spool, lambda: live.current, policy)
        authenticator = Authenticator(keys, digester, KeyCache(clock.monotonic), clock)
        core = DecisionCore(
            authenticator, Refusals(), gate=gate, recorder=recorder, wall_ms=lambda: int(clock.now().timestamp() * 1000)
        )
        return core, spool, issued.secret

    return asyncio.run(setup())


def test_every_verdict_is_one_decision_row(tmp_path: Path) -> None:
    core, spool, key = build(tmp_path)

    def decide(path: str, request_id: str, headers: dict[str, str] | None = None) -> Allow | Deny:
        return asyncio.run(
            core.decide(CheckRequest("GET", path, {"x-api-key": key} if headers is None else headers, request_id))
        )

    admitted = decide("/v1/items/1", "r1")
    assert isinstance(admitted, Allow)
    assert dict(admitted.upstream_headers)[DECIDED_AT_HEADER] == str(int(NOW.timestamp() * 1000))
    assert not admitted.repeats, "a verdict carrying its decision time is never served from a cache"
    decide("/v1/items/2", "r2")
    refused = [decide("/v1/items/3", "r3"), decide("/v1/admin/x", "r4"), decide("/v1/items/5", "r5", {})]
    assert [d.status for d in refused if isinstance(d, Deny)] == [429, 403, 401]

    rows = {row["envoy_request_id"]: row for row in spooled(spool)}
    assert list(rows) == ["r1", "r2", "r3", "r4", "r5"]
    assert rows["r1"]["request_id"] == dict(admitted.upstream_headers)[USAGE_ID_HEADER]
    first = rows["r1"]
    assert first["ts"] == "2026-11-25 12:00:00.123"
    assert (first["customer_id"], first["plan"], first["feature"], first["route"]) == (
        "acme",
        "pro",
        "read",
        "/v1/items/{id}",
    )
    assert (first["status"], first["outcome"], first["version"]) == (0, "admitted", 1)
    assert {k: Decimal(v) for k, v in first["meters"].items()} == {"requests": 1, "work": 3}, "no bytes known yet"
    assert (rows["r3"]["status"], rows["r3"]["reason"], rows["r3"]["feature"]) == (429, "quota-exceeded", "read")
    assert (rows["r4"]["status"], rows["r4"]["reason"], rows["r4"]["customer_id"]) == (
        403,
        "feature-not-entitled",
        "acme",
    )
    assert (rows["r5"]["status"], rows["r5"]["customer_id"], rows["r5"]["meters"]) == (401, "", {})
    for request_id, decision in zip(["r3", "r4", "r5"], refused, strict=True):
        assert isinstance(decision, Deny)
        assert rows[request_id]["response_bytes"] == len(decision.body)


def test_a_full_spool_fails_closed_by_default(tmp_path: Path) -> None:
    core, spool, key = build(tmp_path, max_bytes=1 << 20)
    spool.append(b"x" * (1 << 20) + b"\n")
    assert spool.full
    decision = asyncio.run(core.decide(CheckRequest("GET", "/v1/items/1", {"x-api-key": key}, "r1")))
    assert isinstance(decision, Deny)
    assert decision.status == 503
    assert b"metering-unavailable" in decision.body


def test_a_full_spool_admits_unrecorded_when_told_to(tmp_path: Path) -> None:
    core, spool, key = build(tmp_path, policy="admit", max_bytes=1 << 20)
    spool.append(b"x" * (1 << 20) + b"\n")
    decision = asyncio.run(core.decide(CheckRequest("GET", "/v1/items/1", {"x-api-key": key}, "r1")))
    assert isinstance(decision, Allow)
    assert spool.rows_refused == 1


def test_requests_repeating_one_request_id_are_rows_of_their_own(tmp_path: Path) -> None:
    """Envoy's request id is the client's when Envoy preserves it: the row id is Tollway's, so twenty
    requests sent with one x-request-id in one millisecond are twenty rows, never merged by FINAL."""
    core, spool, key = build(tmp_path)
    decisions = [
        asyncio.run(core.decide(CheckRequest("GET", path, headers, "chosen-by-the-client")))
        for path, headers in [("/v1/items/1", {"x-api-key": key})] * 2  # the quota (2) admits two
        + [("/v1/items/1", {"x-api-key": key})] * 8  # quota exceeded: refused
        + [("/v1/admin/x", {"x-api-key": key})] * 5  # not entitled: refused
        + [("/v1/items/1", {})] * 5  # no credential: refused
    ]
    expected = [200] * 2 + [429] * 8 + [403] * 5 + [401] * 5
    assert [d.status if isinstance(d, Deny) else 200 for d in decisions] == expected
    rows = spooled(spool)
    assert len(rows) == 20
    keys = {(row["customer_id"], row["ts"], row["request_id"]) for row in rows}
    assert len(keys) == 20, "each request has its own deduplication key"
    assert {row["envoy_request_id"] for row in rows} == {"chosen-by-the-client"}, "Envoy's id is kept"
    usage_ids = [dict(d.upstream_headers)[USAGE_ID_HEADER] for d in decisions if isinstance(d, Allow)]
    assert usage_ids == [row["request_id"] for row in rows[:2]], "the admit tells Envoy its row's id"


def test_a_client_cannot_choose_the_usage_id(tmp_path: Path) -> None:
    core, spool, key = build(tmp_path)
    headers = {"x-api-key": key, USAGE_ID_HEADER: "forged", "x-request-id": "forged"}
    decision = asyncio.run(core.decide(CheckRequest("GET", "/v1/items/1", headers, "forged")))
    assert isinstance(decision, Allow)
    (row,) = spooled(spool)
    assert row["request_id"] != "forged"
    assert dict(decision.upstream_headers)[USAGE_ID_HEADER] == row["request_id"], "set, replacing the client's"
