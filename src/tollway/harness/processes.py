"""Subprocesses with a log file, readiness waits and a reliable stop.

``ManagedProcess`` is a context manager and works with ``contextlib.ExitStack``::

    with ExitStack() as stack:
        valkey = stack.enter_context(ManagedProcess([...], log_dir=tmp, name="valkey"))
        valkey.wait_for_tcp("127.0.0.1", port)
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

from tollway.harness.errors import HarnessError, ProcessExitedError, ReadinessTimeoutError

DEFAULT_TAIL_LINES = 40
_POLL_INTERVAL_S = 0.02
_PR_SET_PDEATHSIG = 1


class LogSource(Protocol):
    """Something whose recent log lines can be shown when a test fails."""

    @property
    def name(self) -> str: ...

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str: ...


def tail_file(path: Path, n_lines: int = DEFAULT_TAIL_LINES) -> str:
    """Return the last ``n_lines`` lines of a text file ("" if it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=n_lines))
    except FileNotFoundError:
        return ""


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once in the parent so the forked child only makes one foreign call.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when the forking thread dies (e.g. a killed test run)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup() -> Callable[[], None] | None:
    # PDEATHSIG fires when the forking *thread* exits, and preexec_fn is only safe without other
    # threads, so arm it only from a single-threaded parent (pytest, demo scripts).
    if _PRCTL is None or threading.active_count() != 1:
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    return _die_with_parent


class ManagedProcess:
    """One child process whose stdout and stderr go to ``<log_dir>/<name>.log``.

    ``start`` is called by ``__enter__`` if needed; ``stop`` is idempotent and called by ``__exit__``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_dir: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> None:
        if not argv:
            raise HarnessError("argv must not be empty")
        self._argv = [str(arg) for arg in argv]
        self._name = name or Path(self._argv[0]).name
        self._log_path = Path(log_dir) / f"{self._name}.log"
        self._cwd = cwd
        merged: dict[str, str] = dict(os.environ) if inherit_env else {}
        merged.update(env or {})
        self._env = merged
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def argv(self) -> list[str]:
        return list(self._argv)

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise HarnessError(f"{self._name} has not been started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else None (also None before start)."""
        if self._popen is None:
            return None
        return self._popen.poll()

    @property
    def started(self) -> bool:
        return self._popen is not None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> Self:
        if self._popen is not None:
            raise HarnessError(f"{self._name} was already started (pid {self._popen.pid})")
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a restarted service (same name) keeps one continuous log.
        self._log_handle = self._log_path.open("ab")
        try:
            self._popen = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                preexec_fn=_child_setup(),
            )
        except OSError as exc:
            self._close_log()
            raise HarnessError(f"cannot start {self._name} ({self._argv[0]}): {exc}") from exc
        return self

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return tail_file(self._log_path, n_lines)

    def _failure(self, error_type: type[HarnessError], message: str) -> HarnessError:
        tail = self.log_tail()
        return error_type(f"{self._name}: {message}\n--- last lines of {self._log_path} ---\n{tail}")

    def _require_alive(self, waiting_for: str) -> None:
        if self._popen is None:
            raise HarnessError(f"{self._name} has not been started")
        code = self._popen.poll()
        if code is not None:
            raise self._failure(ProcessExitedError, f"exited with status {code} while {waiting_for}")

    def wait_for(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float = 10.0,
        description: str = "condition",
        interval: float = _POLL_INTERVAL_S,
    ) -> None:
        """Poll ``predicate`` until it is true; fail early if the process exits.

        Exceptions raised by the predicate count as "not yet".
        """
        deadline = time.monotonic() + timeout
        waiting_for = f"waiting for {description}"
        while True:
            self._require_alive(waiting_for)
            # A failing probe (connection refused, parse error...) just means "not ready yet".
            with contextlib.suppress(Exception):
                if predicate():
                    return
            if time.monotonic() >= deadline:
                raise self._failure(ReadinessTimeoutError, f"timed out after {timeout:.1f}s {waiting_for}")
            time.sleep(interval)

    def wait_for_tcp(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Wait until ``host:port`` accepts a TCP connection."""

        def accepts() -> bool:
            with socket.create_connection((host, port), timeout=0.5):
                return True

        self.wait_for(accepts, timeout=timeout, description=f"TCP {host}:{port}")

    def send_signal(self, signum: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Safe to call repeatedly.

        Returns the exit status (None if never started).
        """
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            # A stopped (SIGSTOP) process would never see SIGTERM; wake it first.
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGCONT)
                popen.terminate()
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(timeout=timeout)
        self._close_log()
        return popen.returncode

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> Self:
        if self._popen is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._popen is None else f"pid {self._popen.pid}, rc {self.returncode}"
        return f"ManagedProcess({self._name!r}, {state})"


class ProcessService:
    """A server run as one :class:`ManagedProcess`: delegation shared by the harness's services.
    Subclasses set ``self._process`` and implement ``start``, using :meth:`_start_then` for readiness."""

    _process: ManagedProcess

    @property
    def name(self) -> str:
        return self._process.name

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def _start_then(self, wait_until_ready: Callable[[], None]) -> Self:
        """Start the process and run the readiness wait; a failed wait stops the process again."""
        self._process.start()
        try:
            wait_until_ready()
        except Exception:
            self._process.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        return self._process.stop(timeout)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return self._process.log_tail(n_lines)

    def __enter__(self) -> Self:
        if not self._process.started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Stoppable(Protocol):
    def stop(self, timeout: float = ...) -> object: ...


def stop_all(processes: Iterable[Stoppable], timeout: float = 5.0) -> None:
    """Stop every process, last started first; raise the first error only after trying all."""
    errors: list[BaseException] = []
    for process in reversed(list(processes)):
        try:
            process.stop(timeout)
        except Exception as exc:  # keep stopping the others
            errors.append(exc)
    if errors:
        raise HarnessError(f"{len(errors)} process(es) failed to stop: {errors[0]}") from errors[0]
