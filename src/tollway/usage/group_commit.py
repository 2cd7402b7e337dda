"""Group commit: the decision rows of one event-loop tick reach the spool in one ``write(2)``, and the
verdicts of that tick go out only after it.

The recorder stages rows (``SpoolWriter.stage``); a server that is about to send a verdict hands the send
to :meth:`GroupCommit.after_commit`. The first such call in a tick schedules one commit at the end of the
tick (``call_soon`` runs after every callback already ready, which includes every check the limiter's
batch just resolved), so a row is in the kernel before its verdict leaves, as without grouping, at one
system call per tick instead of one per request. Verdicts keep their order. A server that cannot defer
its send (gRPC returns the response from the handler) calls :meth:`commit_now`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tollway.usage.spool import SpoolWriter

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, spool: SpoolWriter) -> None:
        self._spool = spool
        self._waiting: list[Callable[[], None]] = []
        self._scheduled = False

    def after_commit(self, send: Callable[[], None]) -> None:
        """Run ``send`` once every row staged so far is written: now if none is waiting."""
        if not self._spool.staged and not self._waiting:
            send()
            return
        self._waiting.append(send)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def commit_now(self) -> None:
        """Write what is staged now (for a verdict that is about to be returned)."""
        self._write()

    def _write(self) -> None:
        try:
            self._spool.commit()
        except OSError as exc:
            # The verdicts already decided still go out; new requests are refused while the spool is
            # marked full (fail closed), so at most one tick's rows are lost to a failing disk.
            log.error("usage spool write failed (%s): refusing new requests until it recovers", exc)
            self._spool.mark_failed()

    def _commit(self) -> None:
        self._scheduled = False
        self._write()
        waiting, self._waiting = self._waiting, []
        for send in waiting:
            send()
