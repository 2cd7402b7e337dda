"""Run the demo upstream (``python -m tollway.demo.upstream``) as a managed process."""

import sys
from pathlib import Path
from typing import Self

from tollway.harness.ports import LOOPBACK, free_port
from tollway.harness.processes import ManagedProcess, ProcessService


class DemoUpstream(ProcessService):
    """The echoing sample API on a loopback port."""

    def __init__(
        self, work_dir: Path, *, port: int | None = None, name: str = "upstream", served_log: Path | None = None
    ) -> None:
        self._port = port if port is not None else free_port()
        argv = [sys.executable, "-m", "tollway.demo.upstream", "--host", LOOPBACK, "--port", str(self._port)]
        if served_log is not None:
            argv += ["--served-log", str(served_log)]
        self._process = ManagedProcess(argv, log_dir=Path(work_dir), name=name)

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> tuple[str, int]:
        return (LOOPBACK, self._port)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    def start(self, timeout: float = 10.0) -> Self:
        return self._start_then(lambda: self._process.wait_for_tcp(LOOPBACK, self._port, timeout=timeout))
