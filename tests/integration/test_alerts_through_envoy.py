"""Issue 15 acceptance (the outbox part): through real Envoy, three Tollway processes with capacity leases
on, a customer pushed past 50/80/100 % of a quota by concurrent requests: the customer's outbox stream
holds exactly three quota.threshold_crossed events, one per level, each once, with their bodies; the next
billing period (an anniversary a few seconds away) starts fresh with its own events."""

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.integration.test_credits_through_envoy import burst
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.events import Event, threshold_event_id
from tollway.notifications.keys import ready_key, stream_key
from tollway.ratelimit.alerts import rfc3339

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "notifications" / "alerts.yaml"
LIMIT = 400


def outbox(client: "redis.Redis[str]", customer: str) -> list[Event]:
    """The customer's threshold events, in order (the lifecycle events of the setup, key.created and
    subscription.changed, share the outbox and are left out)."""
    everything = [Event.from_stream(fields) for _, fields in client.xrange(stream_key("tw:", customer))]
    return [e for e in everything if e.type == "quota.threshold_crossed"]


def test_three_processes_racing_past_each_level_report_it_once_and_the_next_period_starts_fresh(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    tollways = [tollway_factory({"TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_LEASE_MAX_MS": "100"}) for _ in range(3)]
    envoy = envoy_factory("http", endpoints={"tollway_http": [t.http_endpoint for t in tollways]})
    customer = "alerts-co"
    key = str(create_key(valkey_fresh.url, customer)["api_key"])
    # An anniversary a few seconds ahead: the current period ends then (monthly periods of that anchor).
    boundary = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    done = run_cli(
        valkey_fresh.url,
        "subscriptions",
        "set",
        "--customer",
        customer,
        "--plan",
        "alerting",
        "--alignment",
        "anniversary",
        "--anchor",
        boundary.isoformat().replace("+00:00", "Z"),
        "--json",
    )
    assert done.code == 0, done.stderr
    boundary_ms = int(boundary.timestamp() * 1000)
    start_ms = int((boundary - _one_month_before(boundary)).timestamp() * 1000)
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    try:
        result = burst(envoy, key, 700)
        assert time.time() * 1000 < boundary_ms, "the burst ended within the first period"
        assert result.statuses == Counter({200: LIMIT, 429: 300})
        events = outbox(client, customer)
        assert [(e.type, e.data["threshold"], e.data["threshold_label"]) for e in events] == [
            ("quota.threshold_crossed", 200, "50%"),
            ("quota.threshold_crossed", 320, "80%"),
            ("quota.threshold_crossed", 400, "100%"),
        ]
        assert len({e.id for e in events}) == 3
        for event in events:
            level = event.data["threshold"]
            assert event.id == threshold_event_id("quota.threshold_crossed", customer, "monthly", start_ms, level)
            assert event.customer_id == customer
            assert level <= event.data["used"] <= LIMIT
            assert {k: v for k, v in event.data.items() if k not in ("threshold", "threshold_label", "used")} == {
                "plan": "alerting",
                "feature": "items-read",
                "policy": "monthly",
                "limit": LIMIT,
                "period_start": rfc3339(start_ms),
                "period_end": rfc3339(boundary_ms),
            }
            assert start_ms <= event.ts_ms < boundary_ms + 1000
        assert [e.data["used"] for e in events] == [200, 320, 400], "each crossed by a request checked alone"
        assert customer in client.smembers(ready_key("tw:"))

        # The next period: counted from 0 again, its own events.
        time.sleep(max(boundary_ms / 1000 - time.time(), 0) + 1.5)
        again = burst(envoy, key, 250)
        assert again.statuses == Counter({200: 250})
        fresh = outbox(client, customer)[3:]
        assert [(e.data["threshold"], e.data["period_start"]) for e in fresh] == [(200, rfc3339(boundary_ms))]
        assert fresh[0].id == threshold_event_id("quota.threshold_crossed", customer, "monthly", boundary_ms, 200)
        assert len(outbox(client, customer)) == 4
    finally:
        client.close()


def _one_month_before(moment: datetime) -> timedelta:
    """The length of the monthly anniversary period that ends at ``moment``."""
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    return moment - moment.replace(year=year, month=month)
