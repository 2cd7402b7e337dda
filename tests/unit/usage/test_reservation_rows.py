"""Admission of a request whose plan reserves for a meter known only after the response (issue 14,
item 3): the decision core mints the usage row id before the gate, the reservation is keyed by it, the
decision row carries the reserved price, capacity leases never carry a reservation, and a reserve the
balance cannot cover is refused with 402 ``insufficient-credits``."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.unit.fakes import MemoryKeyStore
from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.credits.grants import GrantState
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Decision, Deny
from tollway.extproc.decision import PRICE_HEADER, USAGE_ID_HEADER, DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.ratelimit.reservations import Reservation
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver
from tollway.usage.recorder import UsageRecorder
from tollway.usage.spool import SpoolWriter

CATALOG = """
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: tokens, version: "1"}
meters:
  requests: {unit: requests}
  tokens: {unit: response_json, field: usage.total_tokens, features: [chat]}
features:
  chat:
    routes: [{methods: [POST], path: /v1/chat}]
plans:
  llm:
    features: [chat]
    prepaid: {unit: USD, reserve: {tokens: 4000}}
    limits: [{name: burst, limit: 1000, per: second}]
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.001"}
        - {id: llm, model: per_unit, meter: tokens, unit_amount: "0.00001"}
"""
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_a_reservation_is_keyed_by_the_row_id_and_the_row_carries_the_reserved_price(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = ManualClock(NOW)
        digester = KeyDigester(b"d" * 32)
        keys = MemoryKeyStore()
        issued = await Keyring(keys, digester, clock).create("acme")
        subscriptions = MemorySubscriptionStore()
        await subscriptions.put(Subscription.new("acme", "llm", datetime(2026, 1, 1, tzinfo=UTC)))
        live = LiveCatalog(compile_catalog_text(CATALOG, "catalog.yaml"))
        limiter = MemoryLimiter()
        # 0.001 + 4000 × 0.00001 = 0.041 USD per admission: the balance covers exactly 2.
        limiter.put_grant("acme", GrantState("g1", 82_000))
        resolver = SubscriptionResolver(subscriptions, SubscriptionCache(clock.monotonic))
        gate = EntitlementGate(live, resolver, limiter, clock, max_lease_ms=5_000)  # leases on
        spool = SpoolWriter(tmp_path)
        recorder = UsageRecorder(spool, lambda: live.current)
        authenticator = Authenticator(keys, digester, KeyCache(clock.monotonic), clock)
        core = DecisionCore(
            authenticator, Refusals(), gate=gate, recorder=recorder, wall_ms=lambda: int(clock.now().timestamp() * 1000)
        )

        async def decide() -> Decision:
            req = CheckRequest("POST", "/v1/chat", {"x-api-key": issued.secret}, "r")
            return core.decide_now(req) or await core.decide(req)

        answers = [await decide() for _ in range(3)]
        admitted = [a for a in answers if isinstance(a, Allow)]
        assert len(admitted) == 2
        refused = answers[2]
        assert isinstance(refused, Deny)
        assert refused.status == 402
        assert json.loads(refused.body)["type"].endswith("insufficient-credits")
        held = limiter.reservations("acme")
        ids = [dict(a.upstream_headers)[USAGE_ID_HEADER] for a in admitted]
        assert sorted(held) == sorted(ids)  # one reservation per admitted request, none for the refusal
        for allow in admitted:
            headers = dict(allow.upstream_headers)
            record = Reservation.decode(headers[USAGE_ID_HEADER], held[headers[USAGE_ID_HEADER]])
            assert record.price == 40_000
            assert headers[PRICE_HEADER] == "41000 USD"
        assert gate.leases.book.max_lease_ms == 5_000
        rows: list[dict[str, Any]] = [json.loads(line) for line in (spool.path or Path()).read_bytes().splitlines()]
        by_id = {row["request_id"]: row for row in rows}
        for row_id in ids:
            assert by_id[row_id]["price_micros"] == 41_000
            assert by_id[row_id]["balance_unit"] == "USD"

    asyncio.run(scenario())
