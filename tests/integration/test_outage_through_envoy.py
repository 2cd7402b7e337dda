"""A 10 s Redis pause through real Envoy, Tollway and Valkey (issue 13, items 6 and 7).

Known customers keep calling while Valkey is stopped with SIGSTOP (a hung Redis: connections open,
nothing answered) for 10 s — ten times the key and subscription caches' TTL. Their last-known key
records and subscriptions stand in (``TOLLWAY_STALE_MAX_S``), and each plan's outage policy decides on
the limits: a ``fail_open`` plan is admitted throughout, a ``fail_closed`` plan gets Tollway's own 503
problem. Every check is answered within Envoy's 200 ms ext_authz timeout (one deadline per check,
``TOLLWAY_CHECK_DEADLINE_MS``), with capacity leases on and off.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements" / "stage2.yaml"
ITEM = "/v1/items/7"
ENVOY_TIMEOUT_S = 0.2  # envoy/envoy-http.yaml: ext_authz http_service timeout
BEFORE_S, PAUSE_S, AFTER_S = 1.5, 10.0, 1.5
GAP_S = 0.05  # between one connection's requests
MAX_REQUESTS = 2000  # per connection: the loop is bounded whatever happens
OPEN_CUSTOMERS = ("open-1", "open-2", "open-3")
CLOSED_CUSTOMER = "closed-1"


@dataclass(frozen=True)
class Answer:
    customer: str
    started: float  # seconds since the traffic began
    latency: float
    status: int
    problem_type: str  # of a problem document, else ""


async def call(
    host: str, port: int, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[int, str]:
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    problem_type = ""
    if headers.get("content-type") == "application/problem+json":
        problem_type = str(json.loads(body)["type"])
    return int(head[0].split()[1]), problem_type


def traffic(envoy: EnvoyProcess, valkey: ValkeyServer, keys: dict[str, str]) -> list[Answer]:
    """One keep-alive connection per customer, each sending requests one after another for
    ``BEFORE_S + PAUSE_S + AFTER_S``; Valkey is paused ``BEFORE_S`` in and resumed ``PAUSE_S`` later."""
    host, _, port_text = envoy.base_url.removeprefix("http://").partition(":")
    port = int(port_text)
    answers: list[Answer] = []

    async def connection(customer: str, key: str, began: float) -> None:
        request = f"GET {ITEM} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(MAX_REQUESTS):
                started = time.monotonic()
                if started - began > BEFORE_S + PAUSE_S + AFTER_S:
                    break
                status, problem_type = await call(host, port, request, reader, writer)
                answers.append(Answer(customer, started - began, time.monotonic() - started, status, problem_type))
                await asyncio.sleep(GAP_S)
        finally:
            writer.close()

    async def outage() -> None:
        await asyncio.sleep(BEFORE_S)
        valkey.pause()
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            valkey.resume()

    async def run() -> None:
        began = time.monotonic()
        await asyncio.gather(outage(), *(connection(c, k, began) for c, k in keys.items()))

    asyncio.run(run())
    return answers


def provision(valkey: ValkeyServer, customer: str, plan: str) -> str:
    key = str(create_key(valkey.url, customer)["api_key"])
    done = run_cli(valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json")
    assert done.code == 0, done.stderr
    return key


def stale_answers(admin_port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    return {m[0]: float(m[1]) for m in re.findall(r'^tollway_stale_answers_total\{store="(\w+)"\} (\S+)$', text, re.M)}


@pytest.mark.parametrize("lease_max_ms", ["0", "100"], ids=["leases-off", "leases-on"])
def test_a_ten_second_redis_pause_admits_fail_open_customers_and_every_check_beats_envoys_timeout(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, lease_max_ms: str
) -> None:
    tollway = tollway_factory({"TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_LEASE_MAX_MS": lease_max_ms})
    envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
    keys = {customer: provision(valkey_fresh, customer, "open") for customer in OPEN_CUSTOMERS}
    keys[CLOSED_CUSTOMER] = provision(valkey_fresh, CLOSED_CUSTOMER, "closed")
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        for key in keys.values():  # every customer known to this Tollway before the outage
            assert client.get(ITEM, headers={"authorization": f"Bearer {key}"}).status_code == 200

    answers = traffic(envoy, valkey_fresh, keys)

    opened = [a for a in answers if a.customer != CLOSED_CUSTOMER]
    closed = [a for a in answers if a.customer == CLOSED_CUSTOMER]
    paused = [a for a in opened if BEFORE_S + 1.5 < a.started < BEFORE_S + PAUSE_S]  # well past the 1 s TTL
    assert len(paused) >= 3 * 20, f"too little traffic during the pause to show anything: {len(paused)}"
    refused = [a for a in opened if a.status != 200]
    assert not refused, f"{len(refused)} of {len(opened)} fail_open requests refused, e.g. {refused[:3]}"
    # Every check answered within Envoy's 200 ms timeout, as Envoy itself counts it: a check past it would
    # be a timeout (and, with failure_mode_allow false, a 503 even for the fail_open plan).
    stats = envoy.stats("tollway_http.upstream_rq")
    assert not stats.get("cluster.tollway_http.upstream_rq_timeout", 0), stats
    # Client side, the same bound (which also counts Envoy's, the upstream's and this client's scheduling on
    # a shared machine, so it is asserted on the 95th percentile; the counter above is exact).
    latencies = sorted(a.latency for a in answers)
    p95 = latencies[int(len(latencies) * 0.95)]
    slow = [a for a in answers if a.latency >= ENVOY_TIMEOUT_S]
    assert p95 < ENVOY_TIMEOUT_S, f"p95 {p95:.3f} s; {len(slow)} of {len(answers)} slower, e.g. {slow[:3]}"

    # The fail_closed plan: Tollway's own 503 problem (fast, not an Envoy timeout) while Redis is away.
    during = [a for a in closed if BEFORE_S + 0.5 < a.started < BEFORE_S + PAUSE_S]
    assert during, "no fail_closed request during the pause"
    assert {a.status for a in during} <= {200, 503}, during  # 200: answered from a lease already held
    assert sum(a.status == 503 for a in during) >= len(during) - 2, during
    assert all(a.problem_type.endswith("authorization-unavailable") for a in during if a.status == 503)
    assert stats.get("cluster.tollway_http.upstream_rq_503", 0) >= 1, stats  # answered by Tollway itself

    stale = stale_answers(tollway.admin_port)
    assert stale.get("keys", 0) > 0, stale
    assert stale.get("subscriptions", 0) > 0, stale
    # Redis back: limits are checked again, the fail_closed customer admitted.
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        deadline = time.monotonic() + 5
        while client.get(ITEM, headers={"authorization": f"Bearer {keys[CLOSED_CUSTOMER]}"}).status_code != 200:
            assert time.monotonic() < deadline, "no recovery after Redis came back"
            time.sleep(0.05)
        response = client.get(ITEM, headers={"authorization": f"Bearer {keys[OPEN_CUSTOMERS[0]]}"})
        assert response.json()["headers"]["x-tollway-limits"] == "checked"
