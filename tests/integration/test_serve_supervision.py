"""``serve`` (in this process, against a real Valkey) supervises its background tasks: one that fails is
logged and restarted, and the shutdown afterwards runs whole — leases given back, metering closed — and
returns normally (the process would exit 0)."""

import asyncio
import logging
from pathlib import Path

import pytest

from tests.support.tollway_cli import TEST_PEPPER
from tollway.entitlements.gate import EntitlementGate
from tollway.extproc.metering import Metering
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.valkey import ValkeyServer
from tollway.plans.watcher import CatalogWatcher
from tollway.server import serve
from tollway.settings import Settings
from tollway.subscriptions.resolver import SubscriptionResolver

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "entitlements" / "reload-v1.yaml"


def test_failing_background_tasks_are_restarted_and_shutdown_is_clean(
    valkey_fresh: ValkeyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    follows: list[int] = []
    watches: list[int] = []
    shutdown: list[str] = []
    followed_again = asyncio.Event()
    watched_again = asyncio.Event()

    async def follow_changes(self: SubscriptionResolver) -> None:
        follows.append(len(follows))
        if len(follows) == 1:
            raise RuntimeError("pub/sub follower broke")
        followed_again.set()
        await asyncio.Event().wait()

    async def run(self: CatalogWatcher) -> None:  # named as the method it replaces (the task name)
        watches.append(len(watches))
        if len(watches) == 2:
            watched_again.set()
        raise RecursionError("maximum recursion depth exceeded")  # what a 500-deep catalog once did

    drain_leases = EntitlementGate.drain_leases
    close_metering = Metering.close

    async def recording_drain(self: EntitlementGate) -> int:
        shutdown.append("leases drained")
        return await drain_leases(self)

    def recording_close(self: Metering) -> None:
        shutdown.append("metering closed")
        close_metering(self)

    monkeypatch.setattr(SubscriptionResolver, "follow_changes", follow_changes)
    monkeypatch.setattr(CatalogWatcher, "run", run)
    monkeypatch.setattr(EntitlementGate, "drain_leases", recording_drain)
    monkeypatch.setattr(Metering, "close", recording_close)
    http_port, metering_port = free_ports(2)
    settings = Settings(
        redis_url=valkey_fresh.url,
        pepper=TEST_PEPPER,  # type: ignore[arg-type]
        host=LOOPBACK,
        http_port=http_port,
        grpc_port=0,
        admin_port=0,
        usage_port=0,
        metering_port=metering_port,
        catalog=CATALOG,
        spool_dir=tmp_path / "spool",
        loader="off",
        shutdown_grace_s=1.0,
    )
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(serve(settings, stop=stop, handle_signals=False))
        await asyncio.wait_for(followed_again.wait(), 20)  # restarted after its first back-off
        await asyncio.wait_for(watched_again.wait(), 20)  # the watcher too, however often it fails
        stop.set()
        await asyncio.wait_for(serving, 30)  # returns: no exception out of the shutdown

    asyncio.run(scenario())
    assert follows == [0, 1]
    assert "background task 'SubscriptionResolver.follow_changes' failed; restart 1 in 0.5 s" in caplog.text
    assert "RuntimeError: pub/sub follower broke" in caplog.text
    assert "background task 'CatalogWatcher.run' failed" in caplog.text
    assert shutdown == ["leases drained", "metering closed"]
    assert caplog.records[-1].getMessage() == "stopped"
