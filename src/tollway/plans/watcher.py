"""Reload the catalog when its file changes, including Kubernetes ConfigMap volume updates.

Kubernetes mounts a ConfigMap as ``catalog.yaml → ..data/catalog.yaml`` with ``..data`` a symlink
to a timestamped directory, and updates it by swapping ``..data`` with one rename. The watcher polls
the fully resolved file's (path, inode, device, mtime, size); when that changes it reads the bytes
and compares their digest, so a touch or a swap to identical content does nothing. A new valid
catalog whose digest differs from the current one goes to ``on_change``; an invalid one to
``on_error`` once (the caller keeps the catalog it has), and the watcher keeps watching, whatever
went wrong, so the next valid catalog is loaded. Only the first ``MAX_YAML_BYTES + 1`` bytes of a
file are read (a larger file is refused). A file missing on one poll is taken for a swap in
progress; missing on the next poll too, it is an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from tollway.plans.catalog import CompiledCatalog
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.loader import compile_catalog_text, read_yaml_bytes
from tollway.plans.yaml_source import decode_yaml

log = logging.getLogger(__name__)

_Signature = tuple[str, int, int, int, int]
_T = TypeVar("_T")


class CatalogWatcher:
    def __init__(
        self,
        path: Path,
        on_change: Callable[[CompiledCatalog], None],
        on_error: Callable[[CatalogError], None],
        *,
        poll_interval: float = 0.5,
        current_digest: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``current_digest``: the digest of the catalog already in use (no ``on_change`` while it stays the same).

        Without it the first poll reports the file's catalog through ``on_change`` (or ``on_error``).
        """
        self._path = path
        self._on_change = on_change
        self._on_error = on_error
        self._poll_interval = poll_interval
        self._sleep = sleep
        self._digest = current_digest
        self._signature: _Signature | None = None
        self._content: str | None = None  # digest of the last bytes parsed
        self._missing_polls = 0
        self._last_read_error: str | None = None

    @property
    def digest(self) -> str | None:
        """The digest of the last catalog reported through ``on_change`` (or given at construction)."""
        return self._digest

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.poll()
            except Exception:  # never stop watching: the next valid catalog must still be loaded
                log.exception("catalog watcher: polling %s failed", self._path)
            await self._sleep(self._poll_interval)

    async def poll(self) -> None:
        """Look once; report a change or an error through the callbacks."""
        try:
            signature = self._stat()
            if signature == self._signature:
                return
            data, size = await asyncio.to_thread(read_yaml_bytes, Path(signature[0]))
        except FileNotFoundError:
            self._missing_polls += 1
            self._signature = None
            if self._missing_polls == 2:
                self._report_error(f"catalog file is missing: {self._path}", "no such file")
            return
        except OSError as exc:
            self._signature = None
            message = f"cannot read the catalog: {exc.strerror or exc}"
            if message != self._last_read_error:
                self._last_read_error = message
                self._report_error(message, str(self._path))
            return
        self._missing_polls = 0
        self._last_read_error = None
        self._signature = signature
        content = hashlib.sha256(data).hexdigest()
        if content == self._content:
            return
        self._content = content
        try:
            text = decode_yaml(data, str(self._path), size)
            compiled = await asyncio.to_thread(compile_catalog_text, text, str(self._path))
        except CatalogError as exc:
            self._call(self._on_error, exc)
            return
        except Exception as exc:  # a bug in checking: refuse this catalog, keep watching for the next one
            log.exception("catalog watcher: checking %s failed", self._path)
            message = f"the catalog could not be checked ({type(exc).__name__}); see the log"
            self._call(self._on_error, CatalogError([CatalogIssue(str(self._path), 0, 0, message)]))
            return
        if compiled.digest == self._digest:
            return
        self._digest = compiled.digest
        self._call(self._on_change, compiled)

    def _stat(self) -> _Signature:
        resolved = os.path.realpath(self._path)
        st = os.stat(resolved)
        return (resolved, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)

    def _report_error(self, message: str, value: str) -> None:
        self._content = None  # whatever comes back next is parsed afresh
        self._call(self._on_error, CatalogError([CatalogIssue(str(self._path), 0, 0, message, value)]))

    def _call(self, callback: Callable[[_T], None], argument: _T) -> None:
        try:
            callback(argument)
        except Exception:  # a failing callback must not stop the watching
            log.exception("catalog watcher callback %r failed", callback)
