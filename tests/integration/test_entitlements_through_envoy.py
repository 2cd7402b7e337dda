"""Stage 2 end to end: real Envoy → real Tollway (processes, or in-process with an injected clock) → real
Valkey, against the small catalog ``tests/fixtures/entitlements/stage2.yaml``.

Windows are an hour or longer so time never frees capacity mid-test; waits poll with deadlines.
"""

import asyncio
import copy
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import http_sf
import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.inprocess_tollway import inprocess_tollway
from tests.support.tollway_cli import create_key, run_cli
from tollway.clock import ManualClock
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess, admin_get
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements" / "stage2.yaml"
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance"}
CACHE_TTL_S = 1.0  # TOLLWAY_KEY_CACHE_TTL_S default: keys and subscriptions are cached this long
ITEM = "/v1/items/7"

# --- the stack ------------------------------------------------------------------------------------------


def request_id_in_response(cfg: envoy_config.EnvoyConfig) -> envoy_config.EnvoyConfig:
    """Envoy returns its x-request-id to the client (on local replies too), so a test can compare a
    problem's ``instance`` with the id Envoy generated and sent to Tollway."""
    result: envoy_config.EnvoyConfig = copy.deepcopy(cfg)
    for listener in result["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == envoy_config.HCM_FILTER:
                    network_filter["typed_config"]["always_set_request_id_in_response"] = True
    return result


@dataclass
class Stack:
    valkey: ValkeyServer
    envoy: EnvoyProcess
    client: httpx.Client
    tollways: list[TollwayServer] = field(default_factory=list)

    def get(self, key: str, path: str = ITEM) -> httpx.Response:
        return self.client.get(path, headers=bearer(key))

    def subscribe(self, customer: str, plan: str, *extra: str) -> str:
        """A key for ``customer`` and a subscription to ``plan``; returns the API key."""
        key = create_key(self.valkey.url, customer)["api_key"]
        subscribe(self.valkey.url, customer, plan, *extra)
        return str(key)

    def log(self) -> str:
        return "".join(t.log_tail(500) for t in self.tollways)


def subscribe(redis_url: str, customer: str, plan: str, *extra: str) -> dict[str, Any]:
    done = run_cli(redis_url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--json", *extra)
    assert done.code == 0, done.stderr
    result: dict[str, Any] = done.json()
    return result


def start_stack(
    valkey: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    *,
    processes: int = 1,
    protocol: str = "http",
) -> Stack:
    tollways = [tollway_factory({"TOLLWAY_CATALOG": str(CATALOG)}) for _ in range(processes)]
    if protocol == "http":
        endpoints = {"tollway_http": [t.http_endpoint for t in tollways]}
    else:
        endpoints = {"tollway_grpc": [t.grpc_endpoint for t in tollways]}
    envoy = envoy_factory(protocol, endpoints=endpoints, transform=request_id_in_response)
    return Stack(valkey, envoy, httpx.Client(base_url=envoy.base_url, timeout=5), tollways)


class StackFactory(Protocol):
    def __call__(self, *, processes: int = 1, protocol: str = "http") -> Stack: ...


@pytest.fixture
def make_stack(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> Iterator[StackFactory]:
    built: list[Stack] = []

    def make(*, processes: int = 1, protocol: str = "http") -> Stack:
        built.append(start_stack(valkey_fresh, tollway_factory, envoy_factory, processes=processes, protocol=protocol))
        return built[-1]

    yield make
    for stack in built:
        stack.client.close()


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    return make_stack()


# --- assertions -------------------------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    assert str(body["type"]).endswith(type_suffix), body
    # `instance` is the request id Envoy generated, sent to Tollway and (configured here) returned.
    assert body["instance"] == response.headers["x-request-id"], body
    return body


Fields = dict[str, dict[str, int]]


def sf_policies(field_name: str, value: str) -> Fields:
    """An RFC 9651 List of sf-strings with integer parameters, parsed by ``http_sf`` and type-checked."""
    members: Any = http_sf.parse(value.encode(), tltype="list")
    fields: Fields = {}
    for name, params in members:
        assert isinstance(name, str), f"{field_name}: policy names are sf-strings, got {name!r}"
        assert name not in fields, f"{field_name}: {name} twice"
        for key, number in params.items():
            assert type(number) is int, f"{field_name}: {name};{key} is not an integer: {number!r}"
        fields[name] = dict(params)
    return fields


def ratelimit(response: httpx.Response) -> tuple[Fields, Fields]:
    """(RateLimit-Policy, RateLimit) as ``{policy name: parameters}``."""
    parsed = [sf_policies(name, response.headers[name]) for name in ("ratelimit-policy", "ratelimit")]
    assert list(parsed[0]) == list(parsed[1]), "both fields name the same policies in the same order"
    return parsed[0], parsed[1]


def upstream_saw(response: httpx.Response) -> dict[str, str]:
    """The x-tollway-* headers the demo upstream received."""
    assert response.status_code == 200, response.text
    headers: dict[str, str] = response.json()["headers"]
    return {name: value for name, value in headers.items() if name.startswith("x-tollway-")}


def per_host_requests(envoy: EnvoyProcess, cluster: str) -> dict[str, int]:
    """``rq_total`` per endpoint of ``cluster`` from Envoy's /clusters admin page."""
    status, body = admin_get(envoy.admin_port, "/clusters")
    assert status == 200, body
    totals: dict[str, int] = {}
    for line in body.splitlines():
        match = re.fullmatch(rf"{re.escape(cluster)}::([\d.]+:\d+)::rq_total::(\d+)", line.strip())
        if match:
            totals[match.group(1)] = int(match.group(2))
    return totals


def tollway_answered_the_outage(envoy: EnvoyProcess) -> bool:
    """Tollway itself answered 503 (Envoy's HTTP ext_authz turns a 5xx answer into status_on_error), as
    opposed to Envoy giving up on a silent Tollway (a timeout)."""
    stats = envoy.stats("tollway_http.upstream_rq")
    return stats.get("cluster.tollway_http.upstream_rq_503", 0) >= 1 and not stats.get(
        "cluster.tollway_http.upstream_rq_timeout", 0
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def burst(base_url: str, key: str, n: int, path: str = ITEM, connections: int = 250) -> Counter[int]:
    """``n`` requests over ``connections`` concurrent keep-alive connections; the count of each status.

    A bare asyncio HTTP/1.1 client: httpx's pool costs milliseconds of CPU per request at this many
    connections, enough on a 2-core box to starve Tollway past its 100 ms limiter budget (503s).
    """
    host, _, port = base_url.removeprefix("http://").partition(":")
    request = f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n\r\n".encode()
    statuses: Counter[int] = Counter()
    todo = iter(range(n))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in todo:
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                length = 0
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                statuses[int(head[0].split()[1])] += 1
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(min(connections, n))))

    asyncio.run(run())
    assert sum(statuses.values()) == n
    return statuses


def warm_directly(tollway: TollwayServer, key: str) -> None:
    """One check sent straight to a Tollway process (not through Envoy): it answers, caches are warm."""
    response = httpx.get(f"http://{tollway.http_endpoint[0]}:{tollway.http_port}{ITEM}", headers=bearer(key))
    assert response.status_code == 200, response.text


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# --- 1. exactness across processes ------------------------------------------------------------------------


def test_exactly_the_limit_is_admitted_across_two_tollway_processes(make_stack: StackFactory) -> None:
    stack = make_stack(processes=2)
    key = stack.subscribe("exact-co", "exact")  # 100 an hour
    warm = stack.subscribe("warm-co", "exact")  # another customer: exact-co's count stays untouched
    for tollway in stack.tollways:
        warm_directly(tollway, warm)
    # 64 connections keep both processes racing on one counter; 250 opened at once through Envoy also made
    # Envoy open as many connections to Tollway, starving a 2-core box past the limiter's bound (503s).
    statuses = burst(stack.envoy.base_url, key, 500, connections=64)
    assert statuses == Counter({200: 100, 429: 400}), statuses
    served = per_host_requests(stack.envoy, "tollway_http")
    for tollway in stack.tollways:
        host = "{}:{}".format(*tollway.http_endpoint)
        assert served.get(host, 0) > 0, f"{tollway.name} served no check: {served}"
    assert sum(served.values()) == 500, served  # the direct warm-up checks did not go through Envoy
    print(f"checks per Tollway process: {served}")


# --- 2. quota per billing period, injected clock, month boundary in Paris ---------------------------------


def test_quota_resets_at_the_customers_local_month_end(valkey_fresh: ValkeyServer, envoy_factory: EnvoyFactory) -> None:
    # 22:30Z on 30 November is 23:30 in Paris (UTC+1): the local month ends at 23:00Z.
    clock = ManualClock(datetime(2026, 11, 30, 22, 30, tzinfo=UTC))
    url = valkey_fresh.url
    key = create_key(url, "paris-co")["api_key"]
    subscribe(url, "paris-co", "monthly", "--timezone", "Europe/Paris", "--start", "2026-01-01T00:00:00Z")
    with inprocess_tollway(url, CATALOG, clock=clock) as tollway:
        envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
        with httpx.Client(base_url=envoy.base_url, timeout=5) as client:

            def get() -> httpx.Response:
                return client.get(ITEM, headers={"authorization": f"Bearer {key}"})

            november_s = 30 * 86400  # 1 Nov 00:00 → 1 Dec 00:00 Paris time (no DST change in November)
            for remaining in (2, 1, 0):
                admitted = get()
                assert admitted.status_code == 200, admitted.text
                policy, state = ratelimit(admitted)
                assert policy == {"monthly": {"q": 3, "w": november_s}}
                assert state == {"monthly": {"r": remaining, "t": 1800}}

            refused = get()
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["type"] == QUOTA_EXCEEDED
            assert body["violated-policies"] == ["monthly"]
            assert refused.headers["retry-after"] == "1800"  # to local midnight, 1 December
            assert ratelimit(refused)[1] == {"monthly": {"r": 0, "t": 1800}}

            clock.advance(timedelta(minutes=29, seconds=59))  # 22:59:59Z: still November in Paris
            still = get()
            assert still.status_code == 429, still.text
            assert still.headers["retry-after"] == "1"

            clock.advance(2)  # 23:00:01Z: December in Paris, still November in UTC
            again = get()
            assert again.status_code == 200, again.text
            policy, state = ratelimit(again)
            assert policy == {"monthly": {"q": 3, "w": 31 * 86400}}  # December is the period now
            assert state == {"monthly": {"r": 2, "t": 31 * 86400 - 1}}


# --- 3. entitlements --------------------------------------------------------------------------------------


def test_each_entitlement_refusal_is_a_403_problem(stack: Stack) -> None:
    url = stack.valkey.url
    basic = stack.subscribe("basic-co", "basic")
    no_subscription = create_key(url, "nosub-co")["api_key"]
    ghost = stack.subscribe("ghost-co", "ghost")  # no plan of that name in the catalog
    assert stack.get(basic).status_code == 200
    cases = [
        (basic, "/v1/nothing-here", "/route-not-granted"),
        (basic, "/v1/reports/daily", "/feature-not-entitled"),
        (no_subscription, ITEM, "/no-subscription"),
        (ghost, ITEM, "/plan-unavailable"),
    ]
    for key, path, slug in cases:
        response = stack.get(key, path)
        body = assert_problem(response, 403, slug)
        assert "ratelimit" not in response.headers
        assert key not in response.text
        print(f"{slug}: {body['detail']}")


# --- 4. RateLimit headers ---------------------------------------------------------------------------------


def test_ratelimit_headers_on_admitted_and_refused_responses(stack: Stack) -> None:
    key = stack.subscribe("metered-co", "metered")  # burst 5/h, daily 20/d, monthly quota 100
    shown = run_cli(stack.valkey.url, "subscriptions", "show", "--customer", "metered-co", "--json").json()
    period = shown["current_period"]
    period_end = datetime.fromisoformat(period["end"].replace("Z", "+00:00"))
    period_s = int((period_end - datetime.fromisoformat(period["start"].replace("Z", "+00:00"))).total_seconds())
    expected_policy = {
        "burst": {"q": 5, "w": 3600},
        "daily": {"q": 20, "w": 86400},
        "monthly": {"q": 100, "w": period_s},
    }
    for used in range(1, 6):
        response = stack.get(key)
        assert response.status_code == 200, response.text
        policy, state = ratelimit(response)
        assert policy == expected_policy
        assert [state[name]["r"] for name in policy] == [5 - used, 20 - used, 100 - used]
        # t: 0 while one more request fits now; else when one does. The quota's t: to the period end.
        assert state["daily"]["t"] == 0
        if used < 5:
            assert state["burst"]["t"] == 0
        to_period_end = (period_end - datetime.now(UTC)).total_seconds()
        assert abs(state["monthly"]["t"] - to_period_end) <= 5, (state, to_period_end)
    policy, state = ratelimit(response)
    assert 3600 - 5 <= state["burst"]["t"] <= 2 * 3600, state  # one hour, plus at most a bucket

    refused = stack.get(key)
    assert_problem(refused, 429, "#quota-exceeded")
    assert refused.json()["violated-policies"] == ["burst"]
    policy, state = ratelimit(refused)
    assert policy == expected_policy
    assert [state[name]["r"] for name in policy] == [0, 15, 95]  # a refusal consumes nothing
    # The draft: Retry-After and the violated policy's t refer to the same point in time.
    assert int(refused.headers["retry-after"]) == state["burst"]["t"], (refused.headers, state)

    # A customer override changes q (and only for that customer).
    tight = stack.subscribe("tight-co", "metered", "--override", "burst=2")
    assert ratelimit(stack.get(tight))[0]["burst"] == {"q": 2, "w": 3600}
    assert ratelimit(stack.get(tight))[1]["burst"]["r"] == 0
    refused = stack.get(tight)
    assert refused.status_code == 429
    assert ratelimit(refused)[0]["burst"]["q"] == 2
    assert ratelimit(refused)[0]["daily"]["q"] == 20


# --- 5. shadow and soft limits ----------------------------------------------------------------------------


def test_a_shadow_limit_is_reported_upstream_and_logged_never_enforced_nor_advertised(stack: Stack) -> None:
    key = stack.subscribe("shadow-co", "shadow")  # trial: 2 an hour, shadow
    for n in range(1, 6):
        response = stack.get(key)
        seen = upstream_saw(response)
        assert seen["x-tollway-plan"] == "shadow"
        assert seen["x-tollway-limits"] == "checked"
        if n <= 2:
            assert "x-tollway-shadow-exceeded" not in seen, (n, seen)
        else:
            assert seen["x-tollway-shadow-exceeded"] == "trial", (n, seen)
        # Not advertised: with no other policy there are no RateLimit fields at all.
        assert "ratelimit" not in response.headers
        assert "ratelimit-policy" not in response.headers
    wait_for(lambda: "shadow limit exceeded" in stack.log(), 5, "the shadow limit log line")
    line = next(line for line in stack.log().splitlines() if "shadow limit exceeded" in line)
    assert "shadow-co" in line, line
    assert "trial" in line, line


def test_a_soft_limit_admits_past_the_limit_and_reports_the_overage(stack: Stack) -> None:
    key = stack.subscribe("soft-co", "soft")  # soft-cap: 2 an hour, soft
    for n in range(1, 5):
        response = stack.get(key)
        seen = upstream_saw(response)
        policy, state = ratelimit(response)
        assert policy == {"soft-cap": {"q": 2, "w": 3600}}
        assert state["soft-cap"]["r"] == max(2 - n, 0)
        if n <= 2:
            assert "x-tollway-overage" not in seen, (n, seen)
        else:
            assert seen["x-tollway-overage"] == "soft-cap", (n, seen)


# --- 6. Redis outages -------------------------------------------------------------------------------------


def provision_outage_customers(stack: Stack, *extra: str) -> tuple[str, str]:
    return stack.subscribe("closed-co", "closed", *extra), stack.subscribe("open-co", "open", *extra)


def test_hung_redis_within_the_cache_ttl_applies_each_plans_outage_policy(stack: Stack) -> None:
    """Key and subscription still cached (≤ 1 s), the limiter call times out: the plan decides."""
    closed, opened = provision_outage_customers(stack)
    for _attempt in range(3):
        assert stack.get(closed).status_code == 200  # warms key and subscription caches
        assert stack.get(opened).status_code == 200
        warmed = time.monotonic()
        stack.valkey.pause()
        try:
            refused = stack.get(closed)
            admitted = stack.get(opened)
        finally:
            stack.valkey.resume()
        if time.monotonic() - warmed < CACHE_TTL_S * 0.8:
            break
    else:
        pytest.skip("could not send two requests within the cache TTL on this machine")
    assert_problem(refused, 503, "/authorization-unavailable")
    assert refused.headers["retry-after"] == "1"
    assert tollway_answered_the_outage(stack.envoy), stack.envoy.stats("tollway_http.upstream_rq")
    assert upstream_saw(admitted)["x-tollway-limits"] == "unchecked"
    assert "ratelimit" not in admitted.headers  # nothing was checked, nothing to advertise


def test_stopped_redis_within_the_cache_ttl_applies_each_plans_outage_policy(stack: Stack) -> None:
    """As above with Redis stopped (connections refused).

    Fails today: when Redis stops, the pub/sub watchers (``auth.redis_store`` and
    ``subscriptions.redis_store`` ``watch_changes``) lose their connection and call ``on_resync``, which
    clears the key and subscription caches at once; the next request cannot authenticate, so every
    customer gets 503 at once and a fail_open plan never applies to a stopped Redis. Clearing on
    re-subscribe (the ``subscribe`` message) is enough: entries cached before the loss expire within
    their TTL anyway, as the warning logged there ("caches fall back to their TTL") already says."""
    closed, opened = provision_outage_customers(stack)
    try:
        for _attempt in range(3):
            assert stack.get(closed).status_code == 200
            assert stack.get(opened).status_code == 200
            warmed = time.monotonic()
            stack.valkey.stop()
            refused = stack.get(closed)
            admitted = stack.get(opened)
            if time.monotonic() - warmed < CACHE_TTL_S * 0.8:
                break
            stack.valkey.start()
            closed, opened = provision_outage_customers(stack)
        else:
            pytest.skip("could not stop Redis and send two requests within the cache TTL on this machine")
    finally:
        if not stack.valkey.is_running():
            stack.valkey.start()
    assert_problem(refused, 503, "/authorization-unavailable")
    assert admitted.status_code == 200, f"fail_open plan refused while its caches were warm: {admitted.text}"
    assert upstream_saw(admitted)["x-tollway-limits"] == "unchecked"


def test_stopped_redis_past_the_cache_ttl_applies_each_plans_policy_then_enforces_again(stack: Stack) -> None:
    """Past the cache TTL the key and subscription cannot be read, but their last-known records stand in
    (TOLLWAY_STALE_MAX_S): each plan's outage policy decides, as within the TTL; a customer this Tollway
    never read gets 503 whatever the plan. Once Redis is back (empty: no persistence) limits apply again."""
    closed, opened = provision_outage_customers(stack)
    never_read = stack.subscribe("unseen-co", "open")
    assert stack.get(closed).status_code == 200
    assert stack.get(opened).status_code == 200
    stack.valkey.stop()
    try:
        time.sleep(CACHE_TTL_S + 0.1)
        for key in (closed, never_read):
            response = stack.get(key)
            assert_problem(response, 503, "/authorization-unavailable")
            assert response.headers["retry-after"] == "1"
        admitted = stack.get(opened)
        assert admitted.status_code == 200, f"fail_open plan refused past the cache TTL: {admitted.text}"
        assert upstream_saw(admitted)["x-tollway-limits"] == "unchecked"
        assert tollway_answered_the_outage(stack.envoy), stack.envoy.stats("tollway_http.upstream_rq")
    finally:
        stack.valkey.start()
    closed, opened = provision_outage_customers(stack, "--override", "hourly=1")
    wait_for(lambda: stack.get(closed).status_code == 200, 5, "recovery after Redis came back")
    assert_problem(stack.get(closed), 429, "#quota-exceeded")
    assert stack.get(opened).status_code == 200
    refused = stack.get(opened)
    assert_problem(refused, 429, "#quota-exceeded")
    assert refused.json()["violated-policies"] == ["hourly"]


# --- 7. gRPC ext_authz ------------------------------------------------------------------------------------


def test_grpc_exactness_and_refusal_headers(make_stack: StackFactory) -> None:
    stack = make_stack(protocol="grpc")
    key = stack.subscribe("grpc-co", "exact", "--override", "hourly=10")
    assert burst(stack.envoy.base_url, key, 30) == Counter({200: 10, 429: 20})
    refused = stack.get(key)
    body = assert_problem(refused, 429, "#quota-exceeded")
    assert body["violated-policies"] == ["hourly"]
    policy, state = ratelimit(refused)
    assert policy == {"hourly": {"q": 10, "w": 3600}}
    assert state["hourly"]["r"] == 0
    assert int(refused.headers["retry-after"]) == state["hourly"]["t"]

    other = stack.subscribe("grpc-two", "metered")
    admitted = stack.get(other)
    assert upstream_saw(admitted)["x-tollway-plan"] == "metered"
    policy, state = ratelimit(admitted)
    assert policy["burst"] == {"q": 5, "w": 3600}
    assert state["burst"] == {"r": 4, "t": 0}
