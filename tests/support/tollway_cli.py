"""Run the real ``tollway`` CLI against a test Redis, as an operator would."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

TEST_PEPPER = "7e57" * 16


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(redis_url: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    environment = {**os.environ, "TOLLWAY_REDIS_URL": redis_url, "TOLLWAY_PEPPER": TEST_PEPPER, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def create_key(
    redis_url: str, customer: str = "acme", *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    result = run_cli(redis_url, "keys", "create", "--customer", customer, "--json", *extra, env=env)
    assert result.code == 0, result.stderr
    created: dict[str, Any] = result.json()
    return created
