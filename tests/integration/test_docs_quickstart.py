"""docs/authentication.md's shell blocks run as written, in order, and do what the text says."""

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXED_PORTS = (6379, 8080, 9191, 9192, 9193, 9901, 10000)  # the quickstart uses the configs' default ports


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    busy = [p for p in FIXED_PORTS if port_in_use(p)]
    if busy:
        pytest.skip(f"quickstart ports in use: {busy}")
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "docs" / "authentication.md").read_text(), re.S)
    script = tmp_path / "quickstart.sh"
    script.write_text("set -e\n" + "\n".join(blocks))
    done = subprocess.run(["bash", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert out.count('"x-tollway-customer-id":"acme-corp"') == 3  # bearer, x-api-key, during the overlap
    assert '"title":"Malformed API key"' in out
    assert '"title":"Revoked API key"' in out
    assert "Store the key now" in out
    deadline = time.monotonic() + 10  # `kill` returns before the processes have exited
    while busy := [p for p in FIXED_PORTS if port_in_use(p)]:
        assert time.monotonic() < deadline, f"the quickstart left something on ports {busy}"
        time.sleep(0.1)
