"""PipelineCoalescer against a scripted fake client: batching, NOSCRIPT recovery, failures, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from tollway.ratelimit import LimiterUnavailable, PipelineCoalescer
from tollway.ratelimit.coalescer import DirectRunner


class FakePipe:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.commands: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> FakePipe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def execute_command(self, *args: Any) -> FakePipe:
        self.commands.append(args)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert not raise_on_error
        self.redis.pipelines.append([cmd[-1] for cmd in self.commands])
        self.redis.sent.set()
        await self.redis.gate.wait()
        if self.redis.down:
            raise ConnectionError("connection refused")
        return [self.redis.reply(cmd) for cmd in self.commands]


class FakeRedis:
    """EVALSHA replies ``[last arg]``; unknown scripts answer NOSCRIPT; args listed in ``errors`` fail."""

    def __init__(self, *, loaded: bool = True) -> None:
        self.loaded = loaded
        self.loads = 0
        self.down = False
        self.errors: set[int] = set()
        self.garbage: set[int] = set()
        self.pipelines: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.sent = asyncio.Event()

    def pipeline(self, transaction: bool = True) -> FakePipe:
        assert transaction is False
        return FakePipe(self)

    async def script_load(self, script: str) -> str:
        self.loads += 1
        self.loaded = True
        return "sha"

    async def execute_command(self, *args: Any) -> Any:
        self.pipelines.append([args[-1]])
        if self.down:
            raise ConnectionError("connection refused")
        reply = self.reply(args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def reply(self, cmd: tuple[Any, ...]) -> Any:
        assert cmd[0] == "EVALSHA"
        if not self.loaded:
            return NoScriptError("NOSCRIPT No matching script")
        if cmd[-1] in self.errors:
            return ResponseError("ERR boom")
        if cmd[-1] in self.garbage:
            return "nonsense"
        return [cmd[-1]]


def coalescer(redis: FakeRedis, **kwargs: Any) -> PipelineCoalescer:
    return PipelineCoalescer(cast(Any, redis), "return 1", **kwargs)


async def run_all(c: PipelineCoalescer, n: int) -> list[Any]:
    return await asyncio.gather(*(c.run([f"k{i}"], [i]) for i in range(n)), return_exceptions=True)


def test_checks_of_one_iteration_share_one_pipeline_and_get_their_own_replies() -> None:
    async def main() -> None:
        redis = FakeRedis()
        c = coalescer(redis)
        assert await run_all(c, 10) == [[i] for i in range(10)]
        assert redis.pipelines == [list(range(10))]
        assert (c.checks, c.round_trips) == (10, 1)
        assert await c.run(["k"], [42]) == [42]
        assert await c.run(["k"], [43]) == [43]
        assert (c.checks, c.round_trips) == (12, 3)

    asyncio.run(main())


def test_big_batches_are_split() -> None:
    async def main() -> None:
        redis = FakeRedis()
        c = coalescer(redis, max_batch=4)
        assert await run_all(c, 10) == [[i] for i in range(10)]
        assert redis.pipelines == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert c.round_trips == 3

    asyncio.run(main())


def test_noscript_loads_the_script_once_and_resends() -> None:
    async def main() -> None:
        redis = FakeRedis(loaded=False)
        c = coalescer(redis)
        assert await run_all(c, 5) == [[i] for i in range(5)]
        assert redis.loads == 1
        assert redis.pipelines == [list(range(5)), list(range(5))]
        assert c.round_trips == 2
        assert c.script_loads == 1

    asyncio.run(main())


def test_a_failed_round_trip_fails_every_waiter_with_limiter_unavailable() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.down = True
        c = coalescer(redis)
        results = await run_all(c, 4)
        assert all(isinstance(r, LimiterUnavailable) for r in results)
        assert "connection refused" in str(results[0])
        redis.down = False
        assert await c.run(["k"], [1]) == [1]

    asyncio.run(main())


def test_one_bad_reply_fails_only_its_waiter() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.errors = {1}
        redis.garbage = {2}
        results = await run_all(coalescer(redis), 4)
        assert results[0] == [0]
        assert results[3] == [3]
        assert isinstance(results[1], LimiterUnavailable)
        assert isinstance(results[2], LimiterUnavailable)

    asyncio.run(main())


def test_a_waiter_cancelled_before_the_flush_is_not_sent() -> None:
    async def main() -> None:
        redis = FakeRedis()
        c = coalescer(redis)
        tasks = [asyncio.create_task(c.run([f"k{i}"], [i])) for i in range(3)]
        await asyncio.sleep(0)  # every task has queued its check; the flush is scheduled after them
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert done[0] == [0]
        assert isinstance(done[1], asyncio.CancelledError)
        assert done[2] == [2]
        assert redis.pipelines == [[0, 2]]
        assert c.checks == 2

    asyncio.run(main())


def test_a_waiter_cancelled_in_flight_does_not_break_the_batch() -> None:
    async def main() -> None:
        redis = FakeRedis()
        redis.gate.clear()
        c = coalescer(redis)
        tasks = [asyncio.create_task(c.run([f"k{i}"], [i])) for i in range(3)]
        await redis.sent.wait()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await tasks[1]
        redis.gate.set()
        assert await tasks[0] == [0]
        assert await tasks[2] == [2]
        assert tasks[1].cancelled()
        await c.aclose()

    asyncio.run(main())


def test_direct_runner_one_round_trip_per_check_and_noscript_recovery() -> None:
    async def main() -> None:
        redis = FakeRedis(loaded=False)
        d = DirectRunner(cast(Any, redis), "return 1")
        assert await d.run(["k"], [1]) == [1]
        assert await d.run(["k"], [2]) == [2]
        assert (d.checks, d.round_trips, redis.loads) == (2, 3, 1)
        redis.down = True
        with pytest.raises(LimiterUnavailable):
            await d.run(["k"], [3])

    asyncio.run(main())


class SlowToCleanUpPipe(FakePipe):
    """A pipeline to a hung server whose client, once cancelled, takes a while to close its connection
    (as redis-py may, bounded by its connect timeout) before the cancellation completes."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            raise
        return []


def test_waiters_get_their_answer_when_the_bound_passes_not_after_the_clients_cleanup() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        redis.pipeline = lambda transaction=True: SlowToCleanUpPipe(redis)  # type: ignore[method-assign]
        coalescer = PipelineCoalescer(cast(Any, redis), timeout_s=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LimiterUnavailable, match="no answer within"):
            await coalescer.run(["k"], [1])
        assert loop.time() - started < 0.05 + 0.2  # the cleanup alone takes 0.3 s
        await coalescer.aclose()

    asyncio.run(scenario())
