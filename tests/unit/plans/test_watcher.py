"""The watcher against a real directory laid out the way the kubelet mounts a ConfigMap."""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import tollway.plans.watcher as watcher_module
from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog_text
from tollway.plans.watcher import CatalogWatcher

POLL = 0.05

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {{name: t, version: "{version}"}}
features:
  read:
    routes: [{{methods: [GET], path: /v1/items}}]
plans:
  free:
    features: [read]
    limits: [{{name: burst, limit: {limit}, per: second}}]
"""


def catalog(version: str, limit: int = 10) -> str:
    return CATALOG.format(version=version, limit=limit)


def digest_of(text: str) -> str:
    return CompiledCatalog.build(load_catalog_text(text, "x")).digest


class KubeletVolume:
    """catalog.yaml → ..data/catalog.yaml, ..data → ..<timestamp>/, updated by renaming a new ..data over the old."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0

    @property
    def path(self) -> Path:
        return self.root / "catalog.yaml"

    def publish(self, text: str | bytes) -> None:
        self.generation += 1
        directory = self.root / f"..2026_11_25_10_00_00.{self.generation}"
        directory.mkdir()
        if isinstance(text, bytes):
            (directory / "catalog.yaml").write_bytes(text)
        else:
            (directory / "catalog.yaml").write_text(text)
        staging = self.root / "..data_tmp"
        staging.symlink_to(directory.name)
        os.replace(staging, self.root / "..data")  # the atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/catalog.yaml")


class Recorder:
    def __init__(self) -> None:
        self.changes: list[CompiledCatalog] = []
        self.errors: list[CatalogError] = []

    def watcher(self, path: Path, current_digest: str | None = None) -> CatalogWatcher:
        return CatalogWatcher(
            path, self.changes.append, self.errors.append, poll_interval=POLL, current_digest=current_digest
        )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(3.0):
        while not condition():  # noqa: ASYNC110  (the callbacks append to plain lists)
            await asyncio.sleep(0.01)


async def settle() -> None:
    await asyncio.sleep(POLL * 4)


def test_configmap_swap_valid_then_invalid(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path)
    volume.publish(catalog("1"))
    seen = Recorder()

    async def scenario() -> None:
        watcher = seen.watcher(volume.path)
        task = asyncio.create_task(watcher.run())
        try:
            await until(lambda: len(seen.changes) == 1)
            assert seen.changes[0].version == "1"

            volume.publish(catalog("2", limit=20))
            await until(lambda: len(seen.changes) == 2)
            assert seen.changes[1].digest == digest_of(catalog("2", limit=20))
            assert seen.changes[1].plan("free").limits[0].limit == 20

            volume.publish(catalog("3").replace("per: second", "per: fortnight"))
            await until(lambda: len(seen.errors) == 1)
            [issue] = seen.errors[0].issues
            assert issue.file == str(volume.path)
            assert issue.line == 10
            assert issue.value == "fortnight"
            await settle()
            assert len(seen.changes) == 2  # the caller keeps catalog 2
            assert len(seen.errors) == 1  # reported once, not on every poll
            assert watcher.digest == digest_of(catalog("2", limit=20))

            volume.publish(catalog("4"))
            await until(lambda: len(seen.changes) == 3)
            assert seen.changes[2].version == "4"
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_no_change_without_new_content(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path)
    volume.publish(catalog("1"))
    seen = Recorder()

    async def scenario() -> None:
        task = asyncio.create_task(seen.watcher(volume.path, current_digest=digest_of(catalog("1"))).run())
        try:
            await settle()
            os.utime(volume.path, ns=(1, 1))  # a touch
            await settle()
            volume.publish(catalog("1"))  # same content in a new ..data directory
            await settle()
            volume.publish("# only a comment differs\n" + catalog("1"))  # same catalog, same digest
            await settle()
            assert seen.changes == []
            assert seen.errors == []
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_plain_file_edits(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog("1"))
    seen = Recorder()

    async def scenario() -> None:
        watcher = seen.watcher(path)
        await watcher.poll()
        assert [c.version for c in seen.changes] == ["1"]
        path.write_text(catalog("1", limit=100))
        await watcher.poll()
        assert [c.version for c in seen.changes] == ["1", "1"]
        path.write_text("plans: [")
        await watcher.poll()
        assert seen.errors[0].issues[0].message.startswith("YAML syntax error")

    asyncio.run(scenario())


def test_missing_file_is_an_error_only_when_it_persists(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog("1"))
    seen = Recorder()

    async def scenario() -> None:
        watcher = seen.watcher(path)
        await watcher.poll()
        path.unlink()
        await watcher.poll()  # mid-swap: not yet an error
        assert seen.errors == []
        path.write_text(catalog("1"))
        await watcher.poll()
        assert seen.errors == []
        assert len(seen.changes) == 1
        path.unlink()
        await watcher.poll()
        await watcher.poll()
        await watcher.poll()
        assert len(seen.errors) == 1
        assert "missing" in str(seen.errors[0])
        path.write_text(catalog("5"))
        await watcher.poll()
        assert [c.version for c in seen.changes] == ["1", "5"]

    asyncio.run(scenario())


def test_a_failing_callback_does_not_stop_the_watcher(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog("1"))
    versions: list[str] = []

    def on_change(compiled: CompiledCatalog) -> None:
        versions.append(compiled.version)
        raise RuntimeError("boom")

    async def scenario() -> None:
        watcher = CatalogWatcher(path, on_change, lambda e: None, poll_interval=POLL)
        task = asyncio.create_task(watcher.run())
        try:
            await until(lambda: versions == ["1"])
            path.write_text(catalog("2"))
            await until(lambda: versions == ["1", "2"])
        finally:
            task.cancel()

    asyncio.run(scenario())


def deep(depth: int) -> str:
    """A short catalog whose `features` are lists nested ``depth`` deep (1.3 KB at 500)."""
    return catalog("deep").replace("features:\n  read:", "x: " + "[" * depth + "]" * depth + "\nfeatures:\n  read:")


def test_a_pathological_catalog_is_refused_and_the_next_valid_one_loaded(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path)
    volume.publish(catalog("1"))
    seen = Recorder()

    async def scenario() -> None:
        task = asyncio.create_task(seen.watcher(volume.path).run())
        try:
            await until(lambda: len(seen.changes) == 1)
            volume.publish(deep(500))
            await until(lambda: len(seen.errors) == 1)
            [issue] = seen.errors[0].issues
            assert (issue.line, issue.column) == (4, 67)  # the 64th `[`: 65 deep with the top-level mapping
            assert "nested more than 64 deep" in issue.message
            volume.publish(b"\xff\xfe" + catalog("x").encode("utf-16-le"))
            await until(lambda: len(seen.errors) == 2)
            assert "not UTF-8" in str(seen.errors[1])
            volume.publish(catalog("2"))
            await until(lambda: len(seen.changes) == 2)
            assert seen.changes[1].version == "2"
            assert not task.done()
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_a_crash_while_checking_is_reported_and_watching_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog("1"))
    seen = Recorder()

    def crash(text: str, filename: str) -> CompiledCatalog:
        raise RecursionError("maximum recursion depth exceeded")

    async def scenario() -> None:
        watcher = seen.watcher(path)
        with monkeypatch.context() as patch:
            patch.setattr(watcher_module, "compile_catalog_text", crash)
            await watcher.poll()
        [issue] = seen.errors[0].issues
        assert "could not be checked (RecursionError)" in issue.message
        assert "RecursionError: maximum recursion depth exceeded" in caplog.text  # with its traceback
        path.write_text(catalog("2"))
        await watcher.poll()
        assert [c.version for c in seen.changes] == ["2"]

    asyncio.run(scenario())
