"""The supervisor of background tasks: a failure is logged with its exception and the task restarted with
back-off; a task that returns is done; cancellation (shutdown) ends it."""

import asyncio
import logging

import pytest

from tollway.supervision import start_supervised, supervise


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def test_a_failing_task_is_logged_and_restarted_with_back_off(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 7:
            raise RuntimeError(f"boom {len(runs)}")

    caplog.set_level(logging.INFO, "tollway.supervision")
    asyncio.run(supervise("watcher", flaky, sleep=clock.sleep, monotonic=clock.monotonic))
    assert len(runs) == 8  # seven failures, then a run that finished its work
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 7
    assert failures[0].getMessage() == "background task 'watcher' failed; restart 1 in 0.5 s"
    assert failures[0].exc_info is not None
    assert str(failures[0].exc_info[1]) == "boom 1"
    assert "RuntimeError: boom 7" in caplog.text  # the traceback is in the log


def test_back_off_starts_over_after_a_healthy_run() -> None:
    clock = Clock()
    runs = 0

    async def fails_late_once() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ValueError("quick failure")
        if runs == 4:
            clock.now += 120  # ran healthily for two minutes, then failed
            raise ValueError("late failure")

    asyncio.run(supervise("sweeper", fails_late_once, sleep=clock.sleep, monotonic=clock.monotonic))
    assert clock.sleeps == [0.5, 1.0, 2.0, 0.5]


def test_the_exceptions_behind_a_silent_death_are_restarted_too() -> None:
    """RecursionError and MemoryError are Exceptions: the catalog watcher died of the first."""
    clock = Clock()
    errors: list[BaseException] = [RecursionError("deep"), MemoryError(), KeyError("k")]

    async def dies() -> None:
        if errors:
            raise errors.pop(0)

    asyncio.run(supervise("x", dies, sleep=clock.sleep, monotonic=clock.monotonic))
    assert errors == []
    assert len(clock.sleeps) == 3


def test_cancellation_ends_a_supervised_task_without_a_restart() -> None:
    started = 0

    async def forever() -> None:
        nonlocal started
        started += 1
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = start_supervised("follower", forever)
        await asyncio.sleep(0.01)
        assert task.get_name() == "follower"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert started == 1

    asyncio.run(scenario())


def test_a_restarted_task_keeps_running_in_real_time(caplog: pytest.LogCaptureFixture) -> None:
    """Through the event loop, with the real sleep: the task is back after its first delay."""
    attempts = 0
    back = asyncio.Event()

    async def fails_once() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("gone")
        back.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = asyncio.create_task(supervise("loader", fails_once, first_delay_s=0.01))
        await asyncio.wait_for(back.wait(), 5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert "background task 'loader' failed" in caplog.text
