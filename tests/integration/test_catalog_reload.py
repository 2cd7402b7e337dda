"""Catalog hot reload the Kubernetes way, through real Envoy while a client keeps sending requests.

A ConfigMap volume looks like ``<dir>/catalog.yaml → ..data/catalog.yaml`` with ``..data`` a symlink to
a timestamped directory; the kubelet updates it by writing a new timestamped directory and renaming a
fresh symlink over ``..data`` (one atomic ``rename``). The test does exactly that.
"""

import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_sf
import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_compiled_catalog

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements"
POLL_S = 0.2
SEEN_WITHIN_S = 2.0


class ConfigMapVolume:
    """A directory laid out and updated as the kubelet does for a mounted ConfigMap."""

    def __init__(self, root: Path, first: Path) -> None:
        self.root = root
        root.mkdir()
        self._swaps = 0
        self.swap_to(first)
        (root / "catalog.yaml").symlink_to("..data/catalog.yaml")

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.yaml"

    def swap_to(self, source: Path) -> None:
        stamp = f"..2026_11_25_10_00_{self._swaps:02d}.000"
        self._swaps += 1
        target = self.root / stamp
        target.mkdir()
        shutil.copyfile(source, target / "catalog.yaml")
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(stamp)
        os.replace(tmp_link, self.root / "..data")  # the atomic rename


@dataclass
class Observation:
    at: float
    status: int
    burst_q: int | None


@dataclass
class BackgroundClient:
    """Sends requests one after another until stopped; records every answer (and every failure)."""

    base_url: str
    key: str
    observations: list[Observation] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/v1/items/7", headers={"authorization": f"Bearer {self.key}"})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                q = None
                if "ratelimit-policy" in response.headers:
                    parsed: Any = http_sf.parse(response.headers["ratelimit-policy"].encode(), tltype="list")
                    q = next((int(params["q"]) for name, params in parsed if name == "burst"), None)
                with self._lock:
                    self.observations.append(Observation(time.monotonic(), response.status_code, q))

    def since(self, start: float) -> list[Observation]:
        with self._lock:
            return [o for o in self.observations if o.at >= start]

    def stop(self) -> None:
        self._stop.set()


@dataclass
class ReloadStack:
    volume: ConfigMapVolume
    tollway: TollwayServer
    client: BackgroundClient


@pytest.fixture
def reload_stack(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path
) -> Iterator[ReloadStack]:
    volume = ConfigMapVolume(tmp_path / "catalog-volume", FIXTURES / "reload-v1.yaml")
    tollway = tollway_factory({"TOLLWAY_CATALOG": str(volume.catalog), "TOLLWAY_CATALOG_POLL_S": str(POLL_S)})
    envoy = envoy_factory("http", endpoints={"tollway_http": [tollway.http_endpoint]})
    key = create_key(valkey_fresh.url, "reload-co")["api_key"]
    subscribed = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "reload-co", "--plan", "basic")
    assert subscribed.code == 0, subscribed.stderr
    client = BackgroundClient(envoy.base_url, key)
    thread = threading.Thread(target=client.run, name="background-client", daemon=True)
    thread.start()
    try:
        yield ReloadStack(volume, tollway, client)
    finally:
        client.stop()
        thread.join(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until true; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def digest(name: str) -> str:
    return load_compiled_catalog(FIXTURES / name).digest


def test_catalog_swaps_reload_live_and_an_invalid_one_is_refused(reload_stack: ReloadStack) -> None:
    volume, tollway, client = reload_stack.volume, reload_stack.tollway, reload_stack.client
    v1, v2, v3 = digest("reload-v1.yaml"), digest("reload-v2.yaml"), digest("reload-v3.yaml")
    wait_until(lambda: any(o.burst_q == 100_000 for o in client.since(0)), 5, "the first catalog serving")
    assert f"version reload-1 ({v1}) is live" in tollway.log_tail(200)

    # (a) a valid change: seen within a couple of poll intervals, no request lost on the way.
    swapped = time.monotonic()
    volume.swap_to(FIXTURES / "reload-v2.yaml")
    took = wait_until(lambda: any(o.burst_q == 7000 for o in client.since(swapped)), SEEN_WITHIN_S, "q=7000")
    first_new = next(o.at for o in client.since(swapped) if o.burst_q == 7000)
    assert all(o.burst_q == 7000 for o in client.since(first_new)), "the old catalog came back"
    # (d) the change is logged with both versions and digests.
    assert f"version reload-2 ({v2}) is live, replacing version reload-1 ({v1})" in tollway.log_tail(200)
    print(f"new catalog seen {took:.2f} s after the swap")

    # (b) an invalid change: refused with file:line, the catalog in use stays live.
    swapped = time.monotonic()
    volume.swap_to(FIXTURES / "reload-invalid.yaml")
    wait_until(lambda: "catalog change refused" in tollway.log_tail(200), 5, "the refusal in the log")
    log = tollway.log_tail(200)
    assert f"version reload-2 ({v2}) stays live" in log
    issue = re.search(rf"{re.escape(str(volume.catalog))}:13:\d+: plans\.basic\.featurez: unknown field", log)
    assert issue, log
    steady_from = time.monotonic()
    time.sleep(3)
    during = client.since(swapped)
    assert len(client.since(steady_from)) > 0
    assert {o.burst_q for o in during} == {7000}, Counter(o.burst_q for o in during)

    # (c) a valid change after the refused one: live again.
    swapped = time.monotonic()
    volume.swap_to(FIXTURES / "reload-v3.yaml")
    wait_until(lambda: any(o.burst_q == 9000 for o in client.since(swapped)), SEEN_WITHIN_S, "q=9000")
    assert f"version reload-3 ({v3}) is live, replacing version reload-2 ({v2})" in tollway.log_tail(200)

    client.stop()
    statuses = Counter(o.status for o in client.since(0))
    assert client.failures == []
    assert set(statuses) == {200}, statuses
    print(f"{sum(statuses.values())} requests during the swaps, all 200")


def test_a_pathological_catalog_is_refused_and_reload_goes_on(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, tmp_path: Path
) -> None:
    """Issue 13 item 10: a 1.3 KB catalog nested 500 deep once ended the watcher silently (the next valid
    catalog never loaded) and made SIGTERM exit 1 without draining leases or closing metering."""
    volume = ConfigMapVolume(tmp_path / "catalog-volume", FIXTURES / "reload-v1.yaml")
    deep = tmp_path / "deep.yaml"
    head = (FIXTURES / "reload-v1.yaml").read_text().replace('"reload-1"', '"deep"')
    deep.write_text(head + "x: " + "[" * 500 + "]" * 500 + "\n")
    tollway = tollway_factory(
        {
            "TOLLWAY_CATALOG": str(volume.catalog),
            "TOLLWAY_CATALOG_POLL_S": str(POLL_S),
            "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "TOLLWAY_LOADER": "off",
        }
    )
    key = create_key(valkey_fresh.url, "reload-co")["api_key"]
    subscribed = run_cli(valkey_fresh.url, "subscriptions", "set", "--customer", "reload-co", "--plan", "basic")
    assert subscribed.code == 0, subscribed.stderr
    check = f"http://127.0.0.1:{tollway.http_port}/v1/items/7"
    health = f"http://127.0.0.1:{tollway.admin_port}/healthz"

    def admitted() -> bool:
        return httpx.get(check, headers={"x-api-key": key}, timeout=2).status_code == 200

    def live_version() -> str:
        return str(httpx.get(health, timeout=2).json()["catalog"]["version"])

    assert admitted()
    volume.swap_to(deep)
    wait_until(lambda: "nested more than 64 deep" in tollway.log_tail(400), 10, "the refusal in the log")
    log = tollway.log_tail(400)
    assert "catalog change refused; version reload-1" in log
    assert re.search(rf"{re.escape(str(volume.catalog))}:\d+:\d+: lists and mappings are nested more than 64", log)
    assert live_version() == "reload-1"
    assert admitted()

    volume.swap_to(FIXTURES / "reload-v2.yaml")
    wait_until(lambda: live_version() == "reload-2", 10, "the next valid catalog live")
    assert f"version reload-2 ({digest('reload-v2.yaml')}) is live, replacing version reload-1" in tollway.log_tail(400)
    assert admitted()

    assert tollway.stop(timeout=20) == 0
    log = tollway.log_tail(400)
    assert "Traceback" not in log
    assert '"msg":"stopped"' in log.splitlines()[-1], log[-2000:]  # the whole shutdown ran
