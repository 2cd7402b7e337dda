"""Issue 15 acceptance, end to end: through real Envoy, three ``tollway serve`` processes with capacity
leases on count the requests and detect the threshold crossings; ``tollway keys create`` emits
``key.created``; a ``tollway dispatch --no-history`` process beside them delivers every event to a real
local receiver that verifies each signature with the standardwebhooks library, registered with
``tollway webhooks create``.

* exactly three ``quota.threshold_crossed`` deliveries for a customer pushed past 50/80/100 %, each once,
  and the next period's crossings as new events;
* the receiver down for 60 s while traffic keeps flowing, then up on the same port: every event delivered;
* ``kill -9`` of the dispatcher and of a checking process mid-traffic, the ready-set announcements lost:
  every event delivered, a duplicate only ever with the id of its event.

Every event emitted leaves its once-marker (``keys.once_key``) in Valkey for months: the set of markers is
the set of events that must arrive, compared with what the receiver got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.integration.test_alerts_through_envoy import CATALOG, LIMIT, _one_month_before
from tests.integration.test_credits_through_envoy import ITEM, burst
from tests.support.tollway_cli import TEST_PEPPER, create_key, run_cli
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer
from tollway.harness.webhook_receiver import Received, WebhookReceiver
from tollway.notifications import keys
from tollway.notifications.events import threshold_event_id
from tollway.ratelimit.alerts import rfc3339

pytestmark = pytest.mark.integration

PREFIX = "tw:"
ROOT = Path(__file__).resolve().parents[2]
LEVELS = [200, 320, 400]  # alerts [50, "80%", 100] of a 400-request monthly quota
LEASES = {"TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_LEASE_MAX_MS": "100"}
WEBHOOKS_ENV = {"TOLLWAY_WEBHOOKS_ALLOW_HTTP": "true", "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true"}
T = TypeVar("T")


class Receiver:
    """The harness receiver on its own event loop in a thread (the traffic helpers run their own loops):
    stopped and started again on the same port, it keeps what it received across restarts."""

    def __init__(self) -> None:
        self.inner = WebhookReceiver()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._run(self.inner.start())

    def stop(self) -> None:
        self._run(self.inner.stop())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def received(self) -> list[Received]:
        return list(self.inner.received)

    def ids(self) -> set[str]:
        return {r.webhook_id for r in self.received()}


@contextlib.contextmanager
def receiver_running() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()


def register(valkey: ValkeyServer, receiver: Receiver) -> None:
    """``tollway webhooks create`` (the secret sealed with the pepper), its secret given to the receiver."""
    done = run_cli(valkey.url, "webhooks", "create", receiver.inner.url("/hook"), "--json", env=WEBHOOKS_ENV)
    assert done.code == 0, done.stderr
    receiver.inner.secrets["/hook"] = str(done.json()["secret"])


class Dispatch:
    """``tollway dispatch --no-history`` in a subprocess, its settings shrunk (docs/notifications-delivery.md)."""

    def __init__(self, valkey: ValkeyServer, log: Path, **settings: str) -> None:
        self.valkey = valkey
        self.log = log
        self.settings = {
            "TOLLWAY_OUTBOX_SCAN_S": "0.5",
            "TOLLWAY_WEBHOOK_CLAIM_S": "2",
            "TOLLWAY_WEBHOOK_TIMEOUT_S": "5",
            **settings,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Dispatch:
        env = {
            **os.environ,
            **WEBHOOKS_ENV,
            **self.settings,
            "PYTHONPATH": str(ROOT / "src"),
            "TOLLWAY_REDIS_URL": self.valkey.url,
            "TOLLWAY_PEPPER": TEST_PEPPER,
            "TOLLWAY_LOG_LEVEL": "INFO",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tollway", "dispatch", "--no-history"],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def kill9(self) -> None:
        assert self.process is not None
        assert self.process.poll() is None, self.tail()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(line for line in lines if "httpx" not in line)[-3000:]


def once_markers(client: redis.Redis[str]) -> set[str]:
    """The id of every event ever emitted (each leaves its once-marker ``{p}evo:{<cust>}:<id>``)."""
    return {name.rsplit(":", 1)[1] for name in client.scan_iter(match=f"{PREFIX}evo:*", count=1000)}


def missing(receiver: Receiver, client: redis.Redis[str]) -> Callable[[], str]:
    """For a failure message: the events emitted and not (yet) delivered."""
    return lambda: f"{len(once_markers(client) - receiver.ids())} of {len(once_markers(client))} not delivered"


def until(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {timeout_s} s: {what()}")
        time.sleep(0.1)


def subscribe(valkey: ValkeyServer, customer: str, *extra: str) -> None:
    done = run_cli(valkey.url, "subscriptions", "set", "--customer", customer, "--plan", "alerting", *extra)
    assert done.code == 0, done.stderr


def push(envoy: EnvoyProcess, key: str, n: int, connections: int = 16) -> Counter[int]:
    """``n`` GETs through Envoy over keep-alive connections, tolerating a dropped connection (a checking
    process killed mid-traffic): the statuses seen, ``0`` for a request that got no answer."""
    host, _, port = envoy.base_url.removeprefix("http://").partition(":")
    request = f"GET {ITEM} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n\r\n".encode()
    statuses: Counter[int] = Counter()
    todo = iter(range(n))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in todo:
                try:
                    writer.write(request)
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                    length = next((int(h.split(":", 1)[1]) for h in head if h.lower().startswith("content-length:")), 0)
                    await reader.readexactly(length)
                    statuses[int(head[0].split()[1])] += 1
                except (ConnectionError, asyncio.IncompleteReadError):
                    statuses[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection() for _ in range(min(connections, n))))

    asyncio.run(run())
    return statuses


def assert_counted(statuses: Counter[int], n: int, limit: int = LIMIT) -> None:
    """``limit`` admitted, the rest refused; on a loaded machine a few checks may outlast Envoy's 200 ms
    ext_authz timeout (503; such a check may still have been counted, and admitted by Tollway)."""
    assert set(statuses) <= {200, 429, 503}, statuses
    assert limit - statuses[503] <= statuses[200] <= limit, statuses
    assert sum(statuses.values()) == n


def crossings(received: list[Received]) -> dict[tuple[str, str, int], set[str]]:
    """(customer, period start, level) → the webhook-ids it was delivered under."""
    out: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for r in received:
        if r.type == "quota.threshold_crossed":
            data = r.body["data"]
            out[(data["customer_id"], data["period_start"], data["threshold"])].add(r.webhook_id)
    return out


def assert_same_event_per_id(received: list[Received]) -> None:
    """A duplicate delivery is the same event: one body per webhook-id, the id the body's own id."""
    bodies: dict[str, dict[str, Any]] = {}
    for r in received:
        assert bodies.setdefault(r.webhook_id, r.body) == r.body, f"two events under {r.webhook_id}"


def assert_threshold_ids_deterministic(received: list[Received]) -> None:
    for r in received:
        if r.type == "quota.threshold_crossed":
            data = r.body["data"]
            start_ms = int(datetime.fromisoformat(data["period_start"].replace("Z", "+00:00")).timestamp() * 1000)
            expected = threshold_event_id(
                "quota.threshold_crossed", data["customer_id"], "monthly", start_ms, data["threshold"]
            )
            assert r.webhook_id == expected


def test_a_customer_past_50_80_100_percent_gets_three_signed_deliveries_once_and_the_next_period_new_ones(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    tollways = [tollway_factory(LEASES) for _ in range(3)]
    envoy = envoy_factory("http", endpoints={"tollway_http": [t.http_endpoint for t in tollways]})
    customer = "alerts-co"
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    with receiver_running() as receiver:
        register(valkey_fresh, receiver)
        dispatch = Dispatch(valkey_fresh, tmp_path / "dispatch.log").start()
        try:
            key = create_key(valkey_fresh.url, customer)
            # An anniversary a few seconds ahead: the current period ends then.
            boundary = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
            subscribe(
                valkey_fresh,
                customer,
                "--alignment",
                "anniversary",
                "--anchor",
                boundary.isoformat().replace("+00:00", "Z"),
            )
            boundary_ms = int(boundary.timestamp() * 1000)
            start_ms = int((boundary - _one_month_before(boundary)).timestamp() * 1000)

            result = burst(envoy, str(key["api_key"]), 700)
            assert time.time() * 1000 < boundary_ms, "the burst ended within the first period"
            assert_counted(result.statuses, 700)
            thresholds = lambda: [r for r in receiver.received() if r.type == "quota.threshold_crossed"]  # noqa: E731
            until(lambda: len(thresholds()) >= 3, 20, lambda: f"{thresholds()}\n{dispatch.tail()}")
            time.sleep(1.0)  # a duplicate would arrive by now

            # deliveries run concurrently: no order between events (docs/notifications-delivery.md)
            got = sorted(thresholds(), key=lambda r: int(r.body["data"]["threshold"]))
            assert receiver.inner.bad_signatures == 0
            assert [r.body["data"]["threshold"] for r in got] == LEVELS
            assert [r.body["data"]["used"] for r in got] == LEVELS, "each crossed by a request checked alone"
            assert [r.body["data"]["threshold_label"] for r in got] == ["50%", "80%", "100%"]
            assert [r.webhook_id for r in got] == [
                threshold_event_id("quota.threshold_crossed", customer, "monthly", start_ms, level) for level in LEVELS
            ]
            assert len({r.webhook_id for r in got}) == 3
            for r in got:
                assert r.body["type"] == "quota.threshold_crossed"
                assert {
                    k: v for k, v in r.body["data"].items() if k not in ("threshold", "threshold_label", "used")
                } == {
                    "customer_id": customer,
                    "plan": "alerting",
                    "feature": "items-read",
                    "policy": "monthly",
                    "limit": LIMIT,
                    "period_start": rfc3339(start_ms),
                    "period_end": rfc3339(boundary_ms),
                }
            # the setup's own lifecycle events, each once, and nothing else
            assert Counter(r.type for r in receiver.received()) == Counter(
                {"quota.threshold_crossed": 3, "key.created": 1, "subscription.changed": 1}
            )
            assert len(receiver.ids()) == 5
            assert receiver.ids() == once_markers(client)

            # A dispatcher restarted: its expiry job re-emits key.created for the keys of the last day (a
            # retry of the keyring's emission); the once-marker keeps it from a second delivery.
            dispatch.stop()
            dispatch.start()
            time.sleep(2.0)
            assert Counter(r.type for r in receiver.received())["key.created"] == 1

            # The next period: counted from 0 again, a new event for its 50 %.
            time.sleep(max(boundary_ms / 1000 - time.time(), 0) + 1.5)
            again = burst(envoy, str(key["api_key"]), 250)
            assert_counted(again.statuses, 250, limit=250)
            until(lambda: len(thresholds()) >= 4, 20, lambda: f"{thresholds()}\n{dispatch.tail()}")
            time.sleep(1.0)
            fresh = [r for r in thresholds() if r.webhook_id not in {g.webhook_id for g in got}]
            assert [(r.body["data"]["threshold"], r.body["data"]["period_start"]) for r in fresh] == [
                (200, rfc3339(boundary_ms))
            ]
            assert fresh[0].webhook_id == threshold_event_id(
                "quota.threshold_crossed", customer, "monthly", boundary_ms, 200
            )
            assert len(thresholds()) == 4
            assert len({r.webhook_id for r in thresholds()}) == 4
            assert len(receiver.received()) == 6, "every event delivered once"
            assert receiver.inner.bad_signatures == 0
            assert receiver.ids() == once_markers(client)
        finally:
            dispatch.stop()
            client.close()


def start_checks(
    valkey: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, customers: list[str]
) -> tuple[list[TollwayServer], EnvoyProcess, dict[str, str]]:
    """Three checking processes with leases behind one Envoy, and a key (``key.created``) and a
    subscription to the alerting plan (``subscription.changed``) per customer."""
    tollways = [tollway_factory(LEASES) for _ in range(3)]
    envoy = envoy_factory("http", endpoints={"tollway_http": [t.http_endpoint for t in tollways]})
    api_keys = {}
    for customer in customers:
        api_keys[customer] = str(create_key(valkey.url, customer)["api_key"])
        subscribe(valkey, customer)
    return tollways, envoy, api_keys


def past_the_quota(envoy: EnvoyProcess, key: str) -> None:
    """Push until refused by the quota (some checks may fail while a checking process is down)."""
    for _ in range(10):
        if push(envoy, key, 150)[429]:
            return
    raise AssertionError("never refused by the quota")


def assert_everything_delivered_once_per_id(receiver: Receiver, client: redis.Redis[str], customers: list[str]) -> None:
    received = receiver.received()
    assert receiver.inner.bad_signatures == 0
    assert receiver.ids() == once_markers(client), "every event emitted delivered, nothing else"
    assert_same_event_per_id(received)
    assert_threshold_ids_deterministic(received)
    by_crossing = crossings(received)
    assert sorted((c, level) for c, _, level in by_crossing) == sorted((c, lv) for c in customers for lv in LEVELS)
    assert all(len(ids) == 1 for ids in by_crossing.values()), "a crossing delivered under one id"
    assert client.zcard(keys.due_key(PREFIX)) == 0, "no delivery left queued"


def test_receiver_down_for_60_s_under_load_then_up_gets_every_event(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    customers = [f"outage-{n}" for n in range(5)]
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    # attempts over ~2 minutes (documented schedule: 24 h and more): longer than the outage
    dispatch = Dispatch(valkey_fresh, tmp_path / "dispatch.log", TOLLWAY_WEBHOOK_RETRY_SCHEDULE_S="0,0.5,1" + ",2" * 60)
    with receiver_running() as receiver:
        register(valkey_fresh, receiver)
        dispatch.start()
        try:
            _, envoy, api_keys = start_checks(valkey_fresh, tollway_factory, envoy_factory, customers)
            past_the_quota(envoy, api_keys[customers[0]])
            until(lambda: len(receiver.ids()) == len(once_markers(client)), 20, dispatch.tail)
            before = len(receiver.received())

            receiver.stop()  # down: connections refused, open ones dropped
            down_at = time.monotonic()
            extra_keys = 0
            rounds = 0
            while time.monotonic() - down_at < 60:
                for customer in customers[1:]:  # each crosses a level every other round or so
                    push(envoy, api_keys[customer], 60)
                create_key(valkey_fresh.url, customers[rounds % len(customers)])
                extra_keys += 1
                rounds += 1
                time.sleep(2.0)
            emitted_while_down = once_markers(client) - receiver.ids()
            retried = [int(n) for n in client.hvals(keys.tries_key(PREFIX))]
            assert len(receiver.received()) == before, "nothing reached a receiver that was down"
            assert max(retried, default=0) >= 5, "deliveries were retried during the outage"
            receiver.start()  # up again, on the same port

            for customer in customers[1:]:
                past_the_quota(envoy, api_keys[customer])
            until(lambda: receiver.ids() >= once_markers(client), 30, missing(receiver, client))
            time.sleep(1.0)
            assert_everything_delivered_once_per_id(receiver, client, customers)
            assert emitted_while_down <= receiver.ids()
            types = Counter(r.type for r in receiver.received() if r.webhook_id in emitted_while_down)
            assert types["key.created"] == extra_keys, types
            assert types["quota.threshold_crossed"] >= 4, types
            assert Counter(r.type for r in receiver.received())["key.created"] >= len(customers) + extra_keys
        finally:
            dispatch.stop()
            client.close()


def test_kill_9_of_the_dispatcher_and_of_a_checking_process_mid_traffic_loses_nothing(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> None:
    customers = [f"crash-{n}" for n in range(4)]
    victim = "crash-victim"
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    log = tmp_path / "dispatch.log"
    with receiver_running() as receiver:
        register(valkey_fresh, receiver)
        first = Dispatch(valkey_fresh, log).start()
        second = Dispatch(valkey_fresh, log)
        try:
            tollways, envoy, api_keys = start_checks(valkey_fresh, tollway_factory, envoy_factory, customers)
            created = create_key(valkey_fresh.url, victim)
            api_keys[victim] = str(created["api_key"])
            subscribe(valkey_fresh, victim)
            # a customer of long standing: the expiry job's catch-up (it re-emits, and so re-announces,
            # key.created for keys of the last day) does not announce it for the next dispatcher
            _created_days_ago(client, str(created["key_id"]), 2)
            # the checking process that dies: the victim's requests reach it alone
            lone = envoy_factory("http", endpoints={"tollway_http": [tollways[0].http_endpoint]})

            def traffic() -> None:
                for _ in range(5):
                    for customer in customers:
                        push(envoy, api_keys[customer], 100)

            background = threading.Thread(target=traffic)
            background.start()
            until(lambda: len(crossings(receiver.received())) >= 2, 30, first.tail)
            first.kill9()  # mid-traffic: entries read and deliveries claimed, not all settled

            victim_traffic = threading.Thread(target=push, args=(lone, api_keys[victim], 1000, 4))
            victim_traffic.start()
            made_by_the_dead = {  # the victim's 50 % and 80 % crossings, counted by the lone process
                threshold_event_id("quota.threshold_crossed", victim, "monthly", _month_start_ms(), level)
                for level in LEVELS[:2]
            }
            until(lambda: made_by_the_dead <= _ids_of(victim, client), 30, lambda: str(_ids_of(victim, client)))
            tollways[0].process.send_signal(signal.SIGKILL)  # mid-traffic
            victim_traffic.join(60)
            background.join(120)
            for customer in [*customers, victim]:
                past_the_quota(envoy, api_keys[customer])
            client.delete(keys.ready_key(PREFIX))  # every announcement lost: only the scan finds them
            assert not made_by_the_dead & receiver.ids(), "no dispatcher ran since they were made"

            second.start()
            until(lambda: receiver.ids() >= once_markers(client), 30, missing(receiver, client))
            # A delivery the killed dispatcher had claimed (and perhaps sent) stays due until its claim
            # times out and the new dispatcher settles it: wait for the queue to empty, not a fixed time.
            due = keys.due_key(PREFIX)
            until(lambda: client.zcard(due) == 0, 30, lambda: f"{client.zcard(due)} deliveries still due")
            assert made_by_the_dead <= receiver.ids()
            assert_everything_delivered_once_per_id(receiver, client, [*customers, victim])
        finally:
            first.stop()
            second.stop()
            client.close()


def _month_start_ms() -> int:
    """The start of the current calendar month (the period of a subscription with calendar alignment)."""
    now = datetime.now(UTC)
    return int(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _ids_of(customer: str, client: redis.Redis[str]) -> set[str]:
    """The ids of the events emitted about ``customer`` (its once-markers)."""
    pattern = f"{PREFIX}evo:{{{customer}}}:*"
    return {name.rsplit(":", 1)[1] for name in client.scan_iter(match=pattern, count=1000)}


def _created_days_ago(client: redis.Redis[str], key_id: str, days: int) -> None:
    """Backdate an API key's ``created_at`` in its stored record (``auth.redis_store``)."""
    from tollway.auth.records import format_instant

    digest = client.get(f"{PREFIX}apikey-id:{key_id}")
    assert digest, key_id
    record = f"{PREFIX}apikey:{digest}"
    assert client.hget(record, "created_at")
    client.hset(record, "created_at", format_instant(datetime.now(UTC) - timedelta(days=days)))
