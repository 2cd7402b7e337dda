"""Webhook throughput (``webhooks_per_s``): the dispatcher delivering signed events to a local receiver.

Not a wrk row: the bench starts a Valkey of its own and a receiver process (``WebhookReceiver``: HTTP/1.1
keep-alive on a loopback port, answering 204; signatures not verified there, so the receiver is not the
bottleneck — the integration tests verify every one), registers one endpoint in the production endpoint
store (its secret sealed with a random pepper), and writes ``events``
events into 100 customers' outbox streams as the emitters do (append, then announce). Then a subprocess
times the production :class:`Dispatcher` from its start until every delivery is settled — reading the
outboxes, queueing, claiming, signing, POSTing, settling — and prints one JSON object: deliveries per
second, the growth of its peak RSS (``ru_maxrss``) over the run (bounded: batches of at most 256 claims,
``TOLLWAY_WEBHOOK_MAX_IN_FLIGHT`` attempts in flight, whatever the backlog), what the receiver counted.

Subprocess: ``python -m tollway.bench.webhook_throughput --redis URL --url RECEIVER_URL --events N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from tollway.bench.errors import BenchError
from tollway.bench.subprocess_json import run_json
from tollway.harness.ports import free_port
from tollway.harness.valkey import ValkeyServer

DEFAULT_EVENTS: Final = 30_000
TARGET_PER_S: Final = 2_000
_RESULT_KEYS: Final = ("events", "seconds", "webhooks_per_s", "rss_growth_mib", "pending_after")
_TIMEOUT_S: Final = 600.0
_CUSTOMERS: Final = 100
_PREFIX: Final = "tw:"


async def _fill(redis: Any, events: int) -> None:
    from tollway.notifications import keys
    from tollway.notifications.events import Event, event_id
    from tollway.notifications.outbox import announce

    now = int(time.time() * 1000)
    for start in range(0, events, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(events, start + 1000)):
                customer = f"cus_{n % _CUSTOMERS}"
                event = Event(
                    event_id("quota.threshold_crossed", customer, "requests", now, n),
                    "quota.threshold_crossed",
                    now,
                    customer,
                    {"policy": "requests", "limit": 10_000, "used": n, "threshold": 80, "threshold_label": "80%"},
                )
                pipe.xadd(keys.stream_key(_PREFIX, customer), event.stream_fields())
            await pipe.execute()
        await announce(redis, _PREFIX, *{f"cus_{n % _CUSTOMERS}" for n in range(start, min(events, start + 1000))})


async def dispatch(redis_url: str, url: str, events: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from tollway.notifications.dispatcher import Dispatcher, DispatchSettings
    from tollway.notifications.endpoint_store import EndpointStore
    from tollway.notifications.endpoints import SecretBox, UrlPolicy
    from tollway.notifications.store_endpoints import StoreEndpoints

    redis = Redis.from_url(redis_url, decode_responses=True)
    # The production endpoint store: the secret is sealed with a pepper and opened by the dispatcher.
    store = EndpointStore(
        redis, SecretBox(os.urandom(32)), _PREFIX, policy=UrlPolicy(allow_http=True, allow_private=True)
    )
    await store.create(url)
    endpoints = StoreEndpoints(store)
    await _fill(redis, events)
    settings = DispatchSettings(webhook_allow_private=True)
    dispatcher = Dispatcher(redis, _PREFIX, endpoints, settings)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    rss_before = usage_before.ru_maxrss
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(dispatcher.run(stop))
    while dispatcher.stats.delivered + dispatcher.stats.failed_attempts < events:
        if task.done():
            task.result()
            raise BenchError("webhook throughput: the dispatcher stopped")
        if time.perf_counter() - started > _TIMEOUT_S - 30:
            raise BenchError(f"webhook throughput: {dispatcher.stats.delivered} of {events} delivered in time")
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.1)  # the last settle batch
    stop.set()
    await task
    await dispatcher.aclose()
    pending = await dispatcher.queue.pending()
    await redis.aclose()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    rss_after = usage_after.ru_maxrss
    cpu_s = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return {
        "events": events,
        "delivered": dispatcher.stats.delivered,
        "failed_attempts": dispatcher.stats.failed_attempts,
        "seconds": round(seconds, 3),
        "webhooks_per_s": round(dispatcher.stats.delivered / seconds, 1),
        "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
        "pending_after": pending,
        "max_in_flight": settings.webhook_max_in_flight,
        "cpu_us_per_delivery": round(cpu_s * 1e6 / max(1, dispatcher.stats.delivered), 1),
    }


def _receiver_main(port: int) -> None:
    from tollway.harness.webhook_receiver import WebhookReceiver

    async def serve() -> None:
        receiver = WebhookReceiver(port=port, keep_bodies=False)
        await receiver.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        print(json.dumps({"received": receiver.count}), flush=True)

    asyncio.run(serve())


def measure(work_dir: Path, events: int = DEFAULT_EVENTS) -> dict[str, Any]:
    """A Valkey and a receiver of their own, the dispatcher timed in a subprocess; the figures."""
    run_dir = Path(work_dir) / f"webhooks-{os.getpid()}-{time.time_ns()}"
    run_dir.mkdir(parents=True)
    port = free_port()
    with ValkeyServer(run_dir / "valkey") as valkey:
        receiver = subprocess.Popen(
            [sys.executable, "-m", __name__, "--receiver", str(port)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=run_dir,
        )
        try:
            assert receiver.stdout is not None
            if receiver.stdout.readline().strip() != "ready":
                raise BenchError("webhook throughput: the receiver did not start")
            argv = [sys.executable, "-m", __name__, "--redis", valkey.url]
            argv += ["--url", f"http://127.0.0.1:{port}/hook", "--events", str(events)]
            result = run_json(argv, what="webhook throughput", cwd=run_dir, timeout_s=_TIMEOUT_S, keys=_RESULT_KEYS)
        finally:
            receiver.send_signal(signal.SIGTERM)
            out, _ = receiver.communicate(timeout=30)
    received = json.loads(out.strip().splitlines()[-1])["received"] if out.strip() else -1
    if result["delivered"] != events or received < events or result["pending_after"]:
        raise BenchError(
            f"webhook throughput: {result['delivered']} delivered, {received} received, "
            f"{result['pending_after']} still queued, of {events}"
        )
    return {**result, "received": received, "target_per_s": TARGET_PER_S}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--receiver", type=int, help="run the receiver on this port (until SIGTERM)")
    parser.add_argument("--redis", help="the Valkey URL")
    parser.add_argument("--url", help="the receiver's URL")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    args = parser.parse_args(argv)
    if args.receiver:
        _receiver_main(args.receiver)
        return 0
    import uvloop

    result = uvloop.run(dispatch(args.redis, args.url, args.events))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
