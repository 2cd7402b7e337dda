"""Send the script calls of one event-loop iteration to Redis as one pipeline.

Every check is one EVALSHA, atomic on its own; checks that arrive in the same loop iteration are queued
and flushed by a ``loop.call_soon`` callback as ONE ``pipeline(transaction=False)`` (split into batches
of at most ``max_batch``), so N concurrent requests cost one round trip instead of N. Each waiter gets
its own reply. The pipeline runs in a task of its own, never in a waiter, so a waiter cancelled by its
caller's ``asyncio.timeout`` cannot break the batch for the others: if it was cancelled before the batch
left, its check is not sent (nothing consumed); if after, its reply is dropped (its units stay counted:
a timed-out request may use capacity, it can never exceed a limit).

``EVALSHA`` is sent directly (a ``register_script`` object in a pipeline costs a ``SCRIPT EXISTS``
round trip every time); a ``NOSCRIPT`` reply (e.g. after a Redis restart) loads the script once and
resends only those checks. Any failure reaches every waiter of the batch as ``LimiterUnavailable``.

Works with ``redis.asyncio.Redis`` and ``redis.asyncio.cluster.RedisCluster`` (whose pipeline splits
the batch by node: one check's keys share a hash tag, so each check still goes to one slot). Bound the
time with the client's socket timeout and the caller's ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import NoScriptError, RedisError

from tollway.ratelimit.errors import LimiterUnavailable
from tollway.ratelimit.script import SCRIPT
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 256

Reply = list[int]


class ScriptRunner(Protocol):
    """Runs the limiter script; ``checks`` and ``round_trips`` count calls and Redis round trips."""

    @property
    def checks(self) -> int: ...

    @property
    def round_trips(self) -> int: ...

    async def run(self, keys: Sequence[str], args: Sequence[int | str]) -> Reply: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Pending:
    keys: Sequence[str]
    args: Sequence[int | str]
    future: asyncio.Future[Reply]


def _unavailable(exc: BaseException) -> LimiterUnavailable:
    return LimiterUnavailable(f"{type(exc).__name__}: {exc}")


def _reply(raw: Any) -> Reply:
    if isinstance(raw, list) and all(type(x) is int for x in raw):
        return raw
    raise LimiterUnavailable(f"unexpected reply from the limiter script: {raw!r:.200}")


class PipelineCoalescer:
    """Coalesces concurrent ``run`` calls into pipelines of EVALSHA. Use from one event loop."""

    def __init__(
        self,
        redis: RedisClient,
        script: str = SCRIPT,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s`` bounds each batch (one timer per pipeline, not one per check): past it, every
        waiter of the batch gets :class:`LimiterUnavailable`."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._redis = redis
        self._timeout = timeout_s
        self._script = script
        self._sha = hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._checks = 0
        self._round_trips = 0
        self.script_loads = 0
        self.observe: Callable[[float, bool], None] | None = None
        """Called after each batch with its round-trip seconds and whether Redis answered (metrics)."""

    @property
    def checks(self) -> int:
        """Script calls sent (a check cancelled before its batch left is not counted)."""
        return self._checks

    @property
    def round_trips(self) -> int:
        """Pipelines executed (on a cluster, one pipeline fans out to the nodes in parallel)."""
        return self._round_trips

    async def run(self, keys: Sequence[str], args: Sequence[int | str]) -> Reply:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Pending(keys, args, future))
        return await future

    def _flush(self) -> None:
        batch = [p for p in self._pending if not p.future.done()]
        self._pending = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(batch), self._max_batch):
            chunk = batch[start : start + self._max_batch]
            self._checks += len(chunk)
            task = loop.create_task(self._send(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, chunk: Sequence[_Pending]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in chunk:
                pipe.execute_command("EVALSHA", self._sha, len(p.keys), *p.keys, *p.args)
            replies = await pipe.execute(raise_on_error=False)
        self._round_trips += 1
        return list(replies)

    async def _send(self, chunk: list[_Pending]) -> None:
        started = time.perf_counter()
        answered = False
        # The waiters get their answer when the bound passes, not once the client has cleaned up after the
        # cancelled pipeline (closing its connection may take a while more): a check's deadline holds.
        expire = (
            asyncio.get_running_loop().call_later(
                self._timeout, self._fail, chunk, LimiterUnavailable(f"no answer within {self._timeout} s")
            )
            if self._timeout is not None
            else None
        )
        try:
            async with asyncio.timeout(self._timeout):
                answered = await self._send_within(chunk)
        except TimeoutError:
            self._fail(chunk, LimiterUnavailable(f"no answer within {self._timeout} s"))
        finally:
            if expire is not None:
                expire.cancel()
            if self.observe is not None:
                self.observe(time.perf_counter() - started, answered)

    async def _send_within(self, chunk: list[_Pending]) -> bool:
        """Send one batch and settle its waiters; whether Redis answered."""
        try:
            replies = await self._execute(chunk)
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                await self._redis.script_load(self._script)
                self.script_loads += 1
                again = await self._execute([chunk[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
            for p, raw in zip(chunk, replies, strict=True):
                if p.future.done():
                    continue
                if isinstance(raw, BaseException):
                    p.future.set_exception(_unavailable(raw))
                    continue
                try:
                    p.future.set_result(_reply(raw))
                except LimiterUnavailable as exc:
                    p.future.set_exception(exc)
            return True
        except (RedisError, OSError) as exc:
            self._fail(chunk, exc)
            return False
        except Exception as exc:  # never leave a waiter hanging, whatever went wrong
            log.exception("limiter pipeline failed unexpectedly")
            self._fail(chunk, exc)
            return False
        finally:
            self._fail(chunk, LimiterUnavailable("the limiter batch ended without a reply"))

    @staticmethod
    def _fail(chunk: Sequence[_Pending], exc: BaseException) -> None:
        for p in chunk:
            if not p.future.done():
                p.future.set_exception(exc if isinstance(exc, LimiterUnavailable) else _unavailable(exc))

    async def aclose(self) -> None:
        """Wait for the batches in flight (their waiters get their replies)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class DirectRunner:
    """One EVALSHA round trip per check, no coalescing (for comparison, and for callers that want it)."""

    def __init__(self, redis: RedisClient, script: str = SCRIPT, *, timeout_s: float | None = None) -> None:
        self._redis = redis
        self._timeout = timeout_s
        self._script = script
        self._sha = hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()
        self._checks = 0
        self._round_trips = 0

    @property
    def checks(self) -> int:
        return self._checks

    @property
    def round_trips(self) -> int:
        return self._round_trips

    async def _evalsha(self, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        self._round_trips += 1
        return await self._redis.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)

    async def run(self, keys: Sequence[str], args: Sequence[int | str]) -> Reply:
        self._checks += 1
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    raw = await self._evalsha(keys, args)
                except NoScriptError:
                    await self._redis.script_load(self._script)
                    raw = await self._evalsha(keys, args)
        except TimeoutError as exc:
            raise LimiterUnavailable(f"no answer within {self._timeout} s") from exc
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return _reply(raw)

    async def aclose(self) -> None:
        return None
