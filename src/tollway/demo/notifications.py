"""The demo's webhook receiver: a real local HTTP server (in a thread) that verifies every delivery's
signature with the ``standardwebhooks`` library, registered with ``tollway webhooks create`` like any
endpoint; at the end of the demo, the events it got are printed (docs/notifications.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from typing import Final

from tollway.harness.webhook_receiver import Received, WebhookReceiver

PATH: Final = "/tollway-events"
WAIT_S: Final = 15.0


class DemoReceiver:
    """A :class:`WebhookReceiver` on a loopback port, served by its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self._receiver = WebhookReceiver(keep_bodies=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="demo-webhook-receiver", daemon=True)

    def start(self) -> DemoReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._receiver.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return self._receiver.url(PATH)

    def verify_with(self, secret: str) -> None:
        self._receiver.secrets[PATH] = secret

    @property
    def bad_signatures(self) -> int:
        return self._receiver.bad_signatures

    def received(self) -> list[Received]:
        return list(self._receiver.received)

    def wait_for(self, types: Collection[str], timeout_s: float = WAIT_S) -> bool:
        """Until every type in ``types`` has arrived (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(types) <= {r.type for r in self.received()}:
                return True
            time.sleep(0.1)
        return False


def register(env: dict[str, str], receiver: DemoReceiver) -> str:
    """``tollway webhooks create URL --json``: the endpoint's id; its secret (shown once) goes to the receiver,
    which verifies every delivery with it."""
    created = subprocess.run(
        [sys.executable, "-m", "tollway", "webhooks", "create", receiver.url, "--description", "make demo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(created.stdout)
    receiver.verify_with(str(answer["secret"]))
    endpoint = answer["endpoint"]
    return str(endpoint.get("endpoint_id") or endpoint.get("id"))


def summary(event: Received) -> str:
    """One line about an event's body: what crossed what, or what changed."""
    data = event.body.get("data", {})
    if not isinstance(data, dict):
        return ""
    keys = ("policy", "threshold_label", "used", "limit", "key_id", "plan", "unit", "balance", "threshold", "price")
    return ", ".join(f"{k}={data[k]}" for k in keys if k in data)


def show(receiver: DemoReceiver, expected: Collection[str]) -> int:
    """Print the events the receiver got (in arrival order), each verified; 0 if every expected type came
    and no signature failed."""
    received = receiver.received()
    for event in received:
        customer = ""
        data = event.body.get("data")
        if isinstance(data, dict):
            customer = str(data.get("customer_id", ""))
        print(f"  {event.type:<26} {event.webhook_id}  {customer:<10} {summary(event)}")
    missing = sorted(set(expected) - {r.type for r in received})
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if receiver.bad_signatures:
        problems.append(f"{receiver.bad_signatures} deliveries with a bad signature")
    mark = "ok" if not problems else "UNEXPECTED, " + "; ".join(problems)
    print(f"  {len(received)} events received, every signature verified with standardwebhooks  [{mark}]")
    return 1 if problems else 0
