"""Capacity leases through real Envoy and Valkey (``tollway.ratelimit.leases``): most checks of a busy
customer are answered in process, yet every number stays exact — each admitted request gets its own
``remaining``, the counters hold exactly the admitted requests once the leases end, and a limit admits
exactly its count across two Tollway processes."""

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements" / "leases.yaml"
ITEM = "/v1/items/7"
_STATE = re.compile(r'"([a-z-]+)";r=(\d+);t=(\d+)')


@dataclass
class Burst:
    statuses: Counter[int] = field(default_factory=Counter)
    remaining: dict[str, list[int]] = field(default_factory=dict)  # per policy, from each 200's RateLimit


def burst(envoy: EnvoyProcess, key: str, n: int, connections: int = 32) -> Burst:
    """``n`` GETs over ``connections`` keep-alive connections at once, raw HTTP/1.1 (no client overhead)."""
    host, _, port = envoy.base_url.removeprefix("http://").partition(":")
    request = f"GET {ITEM} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n\r\n".encode()
    result = Burst()
    todo = iter(range(n))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in todo:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
                headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
                await reader.readexactly(int(headers.get("content-length", "0")))
                status = int(head[0].split()[1])
                result.statuses[status] += 1
                if status == 200:
                    for name, remaining, _ in _STATE.findall(headers["ratelimit"]):
                        result.remaining.setdefault(name, []).append(int(remaining))
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(min(connections, n))))

    asyncio.run(run())
    return result


def subscribe(valkey: ValkeyServer, customer: str, plan: str) -> str:
    key = str(create_key(valkey.url, customer)["api_key"])
    done = run_cli(valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json")
    assert done.code == 0, done.stderr
    return key


def evalsha_calls(client: "redis.Redis[str]") -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def counted(client: "redis.Redis[str]", customer: str, policy: str) -> int:
    """What Valkey counts for ``customer``'s ``policy``: a window's running total, or the quota counter."""
    [window] = client.keys(f"*rl:{{{customer}}}:{policy}") or [None]
    if window is not None:
        return int(client.hget(window, "t") or 0)
    [quota] = client.keys(f"*q:{{{customer}}}:{policy}:*")
    return int(client.get(quota) or 0)


def settle(client: "redis.Redis[str]", customer: str, policy: str, expected: int) -> int:
    """The count once every lease has ended and given back its unused units (within a second)."""
    deadline = time.monotonic() + 2.0
    value = counted(client, customer, policy)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = counted(client, customer, policy)
    return value


def start(
    valkey: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, processes: int
) -> EnvoyProcess:
    tollways = [tollway_factory({"TOLLWAY_CATALOG": str(CATALOG)}) for _ in range(processes)]
    return envoy_factory("http", endpoints={"tollway_http": [t.http_endpoint for t in tollways]})


def test_a_busy_customer_is_served_from_leases_with_exact_numbers(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    envoy = start(valkey_fresh, tollway_factory, envoy_factory, processes=1)
    key = subscribe(valkey_fresh, "busy-co", "busy")
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    try:
        warm = burst(envoy, key, 20)  # caches warm, demand seen
        assert warm.statuses == Counter({200: 20})
        before = evalsha_calls(client)
        result = burst(envoy, key, 3000)
        checks = evalsha_calls(client) - before
        assert result.statuses == Counter({200: 3000})
        # One process: every admitted request has its own place in each count, as without leases. The
        # warm-up's and the burst's places are checked together: a warm-up request that waited behind the
        # first lease may be counted after the lease's units, which the burst's first requests then get.
        for policy, limit in (("per-minute", 40_000), ("hourly", 100_000), ("monthly", 1_000_000)):
            places = sorted(warm.remaining[policy] + result.remaining[policy])
            got, want = Counter(places), Counter(range(limit - 3020, limit))
            assert places == list(range(limit - 3020, limit)), (
                policy,
                sorted(limit - v for v in (got - want).elements())[:30],
                sorted(limit - v for v in (want - got).elements())[:30],
                sorted(limit - v for v in warm.remaining[policy]),
            )
        # Most requests never reached Valkey (a check is a lease of many, or one request).
        assert checks < 3000 / 4, f"{checks} limiter checks for 3000 requests"
        # Once the leases end, the counters hold exactly what was admitted: unused units came back.
        for policy in ("per-minute", "hourly", "monthly"):
            assert settle(client, "busy-co", policy, 3020) == 3020, policy
    finally:
        client.close()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_limit_admits_exactly_its_count_with_leases(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, processes: int
) -> None:
    envoy = start(valkey_fresh, tollway_factory, envoy_factory, processes=processes)
    key = subscribe(valkey_fresh, "capped-co", "capped")
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    try:
        result = burst(envoy, key, 2000)
        assert result.statuses == Counter({200: 800, 429: 1200}), result.statuses
        if processes == 1:
            assert sorted(result.remaining["hourly"]) == list(range(800)), "each admitted request its own place"
        assert settle(client, "capped-co", "hourly", 800) == 800
    finally:
        client.close()
