"""The webhook dispatcher on a real Valkey, delivering to a real local HTTP receiver that verifies every
signature with the standardwebhooks library: delivery and filters, a lost announcement, a receiver down
then up, receivers that fail forever (5xx, redirects, timeouts) disabled on a shrunk schedule while the
others are unaffected, and ``kill -9`` of a ``tollway dispatch`` process mid-traffic."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.webhook_endpoints import RedisEndpoints
from tollway.harness.valkey import ValkeyServer
from tollway.harness.webhook_receiver import WebhookReceiver
from tollway.notifications import keys, outbox
from tollway.notifications.dispatcher import Dispatcher, DispatchSettings, Target
from tollway.notifications.events import Event, event_id

pytestmark = pytest.mark.integration

PREFIX = "tw:"
SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()
ROOT = Path(__file__).resolve().parents[2]


async def emit(redis: Redis, event: Event, *, announce: bool = True) -> None:
    """What the outbox writer does (h4's OutboxWriter.emit): once-marker, append, announce."""
    if await redis.set(keys.once_key(PREFIX, event.customer_id, event.id), "1", nx=True, px=keys.ONCE_TTL_MS):
        await redis.xadd(keys.stream_key(PREFIX, event.customer_id), event.stream_fields())  # type: ignore[arg-type]
        if announce:
            await outbox.announce(redis, PREFIX, event.customer_id)


def make_event(n: int, customer: str = "cus_a", kind: str = "key.created") -> Event:
    return Event(event_id(kind, customer, n), kind, 1_700_000_000_000 + n, customer, {"key_id": f"key_{n}"})  # type: ignore[arg-type]


def settings(**changes: object) -> DispatchSettings:
    base: dict[str, object] = {
        "webhook_allow_private": True,
        "outbox_scan_s": 0.5,
        "webhook_timeout_s": 1.0,
        "webhook_claim_s": 3.0,
    }
    return DispatchSettings.model_validate({**base, **changes})


@asynccontextmanager
async def running(
    valkey: ValkeyServer, targets: list[Target], s: DispatchSettings
) -> AsyncIterator[tuple[Dispatcher, Redis, RedisEndpoints]]:
    redis = Redis.from_url(valkey.url, decode_responses=True)
    endpoints = RedisEndpoints(redis, PREFIX)
    for target in targets:
        await endpoints.put(target)
    dispatcher = Dispatcher(redis, PREFIX, endpoints, s, endpoints_ttl_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher, redis, endpoints
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await dispatcher.aclose()
        await redis.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_delivers_every_event_signed_once_per_endpoint_with_filters(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        receiver = WebhookReceiver(secrets={"/all": SECRET, "/keys": SECRET, "/old": OLD_SECRET})
        await receiver.start()
        targets = [
            Target("ep_all", receiver.url("/all"), (SECRET, OLD_SECRET)),  # a rotation: both secrets sign
            Target("ep_keys", receiver.url("/keys"), (SECRET,), frozenset({"key.revoked"})),
            Target("ep_old", receiver.url("/old"), (SECRET, OLD_SECRET)),
        ]
        async with running(valkey_fresh, targets, settings()) as (_, redis, _):
            events = [make_event(n, f"cus_{n % 5}", "key.revoked" if n % 2 else "key.created") for n in range(60)]
            for event in events:
                await emit(redis, event)
                await emit(redis, event)  # emitted twice: one event
            await until(lambda: receiver.count >= 60 + 30 + 60)
            await asyncio.sleep(0.5)
        await receiver.stop()
        assert receiver.bad_signatures == 0
        assert Counter(receiver.ids("/all")) == Counter(e.id for e in events)
        assert Counter(receiver.ids("/old")) == Counter(e.id for e in events)
        assert Counter(receiver.ids("/keys")) == Counter(e.id for e in events if e.type == "key.revoked")
        got = next(r for r in receiver.received if r.webhook_id == events[3].id)
        assert got.body["data"] == {"customer_id": "cus_3", "key_id": "key_3"}

    asyncio.run(main())


def test_an_entry_whose_announcement_was_lost_is_delivered_by_the_scan(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        receiver = WebhookReceiver(secrets={"/ok": SECRET})
        await receiver.start()
        async with running(valkey_fresh, [Target("ep", receiver.url(), (SECRET,))], settings()) as (_, redis, _):
            event = make_event(1)
            await emit(redis, event, announce=False)
            await until(lambda: receiver.count == 1, 10)
            assert await redis.xlen(keys.stream_key(PREFIX, "cus_a")) == 0  # acknowledged and deleted
        await receiver.stop()
        assert receiver.ids() == [event.id]

    asyncio.run(main())


def test_receiver_down_then_up_gets_everything(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        receiver = WebhookReceiver(secrets={"/ok": SECRET})
        port = await receiver.start()
        await receiver.stop()  # down: connections refused
        s = settings(webhook_retry_schedule_s="0,0.3" + ",0.5" * 60)  # 30 s of attempts: longer than the outage
        async with running(valkey_fresh, [Target("ep", receiver.url(), (SECRET,))], s) as (dispatcher, redis, _):
            events = [make_event(n, f"cus_{n % 7}") for n in range(200)]
            for event in events:
                await emit(redis, event)
            await until(lambda: dispatcher.stats.failed_attempts >= 200, 10)
            await asyncio.sleep(1.0)
            receiver = WebhookReceiver(port=port, secrets={"/ok": SECRET})
            await receiver.start()
            await until(lambda: receiver.count >= 200, 20)
            await until(lambda: dispatcher.stats.delivered >= 200)
            # settles are batched: the last ones may land just after the delivered counter moved
            left = await dispatcher.queue.pending()
            for _ in range(200):  # up to 10 s
                if not left:
                    break
                await asyncio.sleep(0.05)
                left = await dispatcher.queue.pending()
            assert left == 0
        await receiver.stop()
        assert receiver.bad_signatures == 0
        assert Counter(receiver.ids()) == Counter(e.id for e in events)

    asyncio.run(main())


def test_failing_receivers_are_bounded_and_disabled_others_unaffected(valkey_fresh: ValkeyServer) -> None:
    async def main() -> None:
        receiver = WebhookReceiver(
            secrets={"/ok": SECRET},
            modes={"/fail": "fail", "/redirect": "redirect", "/slow": "slow"},
            slow_s=5.0,
        )
        await receiver.start()
        targets = [
            Target("ep_ok", receiver.url("/ok"), (SECRET,)),
            Target("ep_fail", receiver.url("/fail"), (SECRET,)),
            Target("ep_redirect", receiver.url("/redirect"), (SECRET,)),
            Target("ep_slow", receiver.url("/slow"), (SECRET,)),
        ]
        s = settings(
            webhook_retry_schedule_s="0,0.2,0.2",  # three attempts per delivery
            webhook_timeout_s=0.5,
            webhook_disable_after_s=1.5,
        )
        async with running(valkey_fresh, targets, s) as (dispatcher, redis, endpoints):
            events = []
            first_emit_ms = int(time.time() * 1000)
            for n in range(40):  # over 4 s: every failing endpoint fails past disable_after_s
                event = make_event(n)
                events.append(event)
                await emit(redis, event)
                await asyncio.sleep(0.1)
            await until(lambda: set(dispatcher.stats.disabled) == {"ep_fail", "ep_redirect", "ep_slow"}, 15)
            await until(lambda: len([r for r in receiver.received if r.type == "endpoint.disabled"]) == 3, 10)
            await asyncio.sleep(1.0)
            for endpoint in ("ep_fail", "ep_redirect", "ep_slow"):  # disabled on schedule, not before
                disabled_at = int(await redis.hget(keys.endpoint_key(PREFIX, endpoint), "disabled_at") or 0)
                assert disabled_at - first_emit_ms >= 1500
            state = {t.id: t.enabled for t in await endpoints.targets()}
            assert state == {"ep_ok": True, "ep_fail": False, "ep_redirect": False, "ep_slow": False}
        await receiver.stop()
        assert receiver.bad_signatures == 0
        # the healthy endpoint got every event, on time, once each, plus the three endpoint.disabled events
        ok = [r for r in receiver.received if r.path == "/ok"]
        assert Counter(r.webhook_id for r in ok if r.type == "key.created") == Counter(e.id for e in events)
        disabled = sorted(r.body["data"]["endpoint_id"] for r in ok if r.type == "endpoint.disabled")
        assert disabled == ["ep_fail", "ep_redirect", "ep_slow"]
        assert all(
            r.body["data"]["url"] and r.body["data"]["failing_since"].endswith("Z")
            for r in ok
            if r.type == "endpoint.disabled"
        )
        for path in ("/fail", "/redirect", "/slow"):  # bounded: at most three attempts per event
            assert 0 < receiver.hits.get(path, 0) <= 3 * len(events)

    asyncio.run(main())


PEPPER = "p" * 32  # the dispatcher process opens the endpoints' sealed secrets with it


async def sealed_endpoint(redis: Redis, url: str, prefix: str = PREFIX) -> tuple[str, str]:
    """An endpoint registered as `tollway webhooks create` does (its secret sealed with ``PEPPER``), for a
    dispatcher in another process: its id and its secret."""
    from tollway.notifications.endpoint_store import EndpointStore
    from tollway.notifications.endpoints import SecretBox, UrlPolicy

    store = EndpointStore(redis, SecretBox(PEPPER.encode()), prefix, policy=UrlPolicy(True, True))
    issued = await store.create(url)
    return issued.endpoint.id, issued.secret


def _dispatch_process(valkey: ValkeyServer, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TOLLWAY_REDIS_URL": valkey.url,
        "TOLLWAY_PEPPER": PEPPER,
        "TOLLWAY_WEBHOOKS_ALLOW_HTTP": "true",
        "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TOLLWAY_WEBHOOK_ALLOW_PRIVATE": "true",
        "TOLLWAY_OUTBOX_SCAN_S": "0.5",
        "TOLLWAY_WEBHOOK_CLAIM_S": "2",
        "TOLLWAY_WEBHOOK_TIMEOUT_S": "1",
        "TOLLWAY_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tollway", "dispatch", "--no-history"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def test_kill_9_of_the_dispatcher_loses_nothing_and_duplicates_keep_their_id(
    valkey_fresh: ValkeyServer, tmp_path: Path
) -> None:
    async def main() -> None:
        receiver = WebhookReceiver(modes={})
        await receiver.start()
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        for path in ("/ok", "/two"):
            _, receiver.secrets[path] = await sealed_endpoint(redis, receiver.url(path))
        first = _dispatch_process(valkey_fresh, tmp_path / "dispatch.log")
        events = [make_event(n, f"cus_{n % 11}") for n in range(1500)]
        try:
            for i, event in enumerate(events):
                await emit(redis, event)
                if i == 600:
                    await until(lambda: receiver.count > 100, 20)
                    first.send_signal(signal.SIGKILL)
                    first.wait()
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            second = _dispatch_process(valkey_fresh, tmp_path / "dispatch.log")
            try:
                await until(
                    lambda: len(set(receiver.ids("/ok"))) == 1500 and len(set(receiver.ids("/two"))) == 1500, 60
                )
            except AssertionError:
                log = "\n".join(
                    line for line in (tmp_path / "dispatch.log").read_text().splitlines() if "httpx" not in line
                )[-3000:]
                pending = await redis.zcard(keys.due_key(PREFIX))
                raise AssertionError(f"{len(set(receiver.ids()))} ids, {pending} queued; log:\n{log}") from None
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
            await receiver.stop()
            await redis.aclose()
        assert receiver.bad_signatures == 0
        assert set(receiver.ids("/ok")) == {e.id for e in events}  # nothing lost (a duplicate has the same id)
        assert set(receiver.ids("/two")) == {e.id for e in events}

    asyncio.run(main())


def test_entries_read_by_a_dead_dispatcher_are_reclaimed(valkey_fresh: ValkeyServer) -> None:
    from tollway.notifications.outbox_reader import OutboxReader

    async def main() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        events = [make_event(n) for n in range(5)]
        for event in events:
            await emit(redis, event)

        async def crash(batch: object) -> None:
            raise RuntimeError("killed before the deliveries were queued")

        dead = OutboxReader(redis, PREFIX, crash, consumer="dead")
        with pytest.raises(RuntimeError):
            await dead.ready_once()
        stream = keys.stream_key(PREFIX, "cus_a")
        assert (await redis.xpending(stream, keys.GROUP))["pending"] == 5  # read, never acknowledged

        got: list[str] = []

        async def handle(batch: list[Event]) -> None:
            got.extend(e.id for e in batch)

        alive = OutboxReader(redis, PREFIX, handle, consumer="alive", claim_idle_ms=200)  # type: ignore[arg-type]
        assert await alive.scan() == 0  # not idle long enough yet: still the dead one's
        await asyncio.sleep(0.3)
        assert await alive.scan() == 5
        assert got == [e.id for e in events]
        assert (await redis.xpending(stream, keys.GROUP))["pending"] == 0
        assert await redis.xlen(stream) == 0
        await redis.aclose()

    asyncio.run(main())


def test_an_idle_reader_waits_without_polling_and_an_announcement_wakes_it(valkey_fresh: ValkeyServer) -> None:
    """With nothing announced the reader blocks on the wake token (no ``SPOP`` every few milliseconds: an
    idle dispatcher costs no CPU); an event written by the outbox writer wakes it at once, long before its
    30 s wait would end; ``stop`` ends the wait too."""
    from tollway.notifications.outbox import OutboxWriter
    from tollway.notifications.outbox_reader import OutboxReader

    async def spops(redis: Redis) -> int:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_spop", {}).get("calls", 0))

    async def main() -> None:
        redis = Redis.from_url(valkey_fresh.url, decode_responses=True)
        got = asyncio.Event()
        seen: list[str] = []

        async def handle(batch: list[Event]) -> None:
            seen.extend(e.id for e in batch)
            got.set()

        reader = OutboxReader(redis, PREFIX, handle, poll_s=30.0, scan_s=3600.0)  # type: ignore[arg-type]
        stop = asyncio.Event()
        task = asyncio.create_task(reader.run(stop))
        await asyncio.sleep(0.3)  # the first scan done, now idle
        before = await spops(redis)
        await asyncio.sleep(1.0)
        assert await spops(redis) == before  # blocked, not polling the ready set
        event = make_event(1)
        assert await OutboxWriter(redis, PREFIX).emit(event)
        await asyncio.wait_for(got.wait(), 5.0)
        assert seen == [event.id]
        stop.set()
        await asyncio.wait_for(task, 5.0)
        await redis.aclose()

    asyncio.run(main())


def test_the_dispatcher_on_a_valkey_cluster(valkey_cluster: object) -> None:
    """Outboxes spread over the cluster's slots, the queue in the {wh} slot: every event delivered once."""
    import secrets

    from redis.asyncio.cluster import RedisCluster

    from tollway.harness.valkey_cluster import ValkeyCluster
    from tollway.notifications.outbox_reader import OutboxReader

    assert isinstance(valkey_cluster, ValkeyCluster)
    prefix = f"t{secrets.token_hex(3)}:"

    async def main() -> None:
        redis = RedisCluster.from_url(valkey_cluster.url, decode_responses=True, socket_timeout=2)
        receiver = WebhookReceiver(secrets={"/ok": SECRET})
        await receiver.start()
        endpoints = RedisEndpoints(redis, prefix)  # type: ignore[arg-type]
        await endpoints.put(Target("ep", receiver.url(), (SECRET,)))
        events = [make_event(n, f"cus_{n}") for n in range(30)]
        for event in events[:20]:
            await redis.xadd(keys.stream_key(prefix, event.customer_id), event.stream_fields())  # type: ignore[arg-type]
            await redis.sadd(keys.ready_key(prefix), event.customer_id)
        for event in events[20:]:  # never announced: found by the scan over every node
            await redis.xadd(keys.stream_key(prefix, event.customer_id), event.stream_fields())  # type: ignore[arg-type]
        dispatcher = Dispatcher(redis, prefix, endpoints, settings(), endpoints_ttl_s=0.1)  # type: ignore[arg-type]
        assert isinstance(dispatcher.reader, OutboxReader)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await until(lambda: receiver.count >= 30, 20)
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await dispatcher.aclose()
            await receiver.stop()
            await redis.aclose()
        assert Counter(receiver.ids()) == Counter(e.id for e in events)
        assert receiver.bad_signatures == 0

    asyncio.run(main())
