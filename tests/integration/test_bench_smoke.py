"""``python -m tollway.bench`` end to end with a tiny load: the JSON shape, never the numbers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tollway.bench import report, wrk

ROWS = ("A", "B", "H", "C", "Cg")
RATIOS = ("C/H", "Cg/B", "C/A", "H/A", "B/A")


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_bench_runs_every_row_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "tollway.bench", "--out", str(out), "--duration", "1", "--warmup", "1"]
    argv += ["--connections", "4", "--rounds", "1", "--work-dir", str(tmp_path / "logs")]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    results = json.loads(out.read_text(encoding="utf-8"))
    assert {"generated_at", "load_generator", "envoy", "machine", "rows", "ratios"} <= set(results)
    load = results["load_generator"]
    assert load["name"] == "wrk"
    assert load["version"]
    assert (load["threads"], load["connections"], load["duration_s"]) == (2, 4, 1)
    assert results["envoy"]["concurrency"] == 2
    assert results["envoy"]["version"]
    assert results["machine"]["cpus"] >= 1
    assert results["machine"]["python"]

    assert tuple(results["rows"]) == ROWS
    for key, row in results["rows"].items():
        assert row["description"]
        assert row["requests"] > 0
        assert row["requests_per_s"] > 0
        assert row["errors"]["total"] <= 10
        assert row["latency_ms"]["p50"] is not None
        assert row["latency_ms"]["p99"] >= row["latency_ms"]["p50"]
        cpu = row["cpu_us_per_request"]
        assert isinstance(cpu["envoy"], float | int)
        if key != "A":
            assert isinstance(cpu["authz"], float | int)
            assert row["rounds"][0]["ext_authz_checks"]["ok"] > 0
    assert set(results["rows"]["C"]["cpu_us_per_request"]) == {"envoy", "authz", "valkey"}

    assert tuple(results["ratios"]) == RATIOS
    for value in results["ratios"].values():
        assert isinstance(value, float)

    printed = completed.stdout
    assert f"wrk {load['version']}" in printed
    assert "C/H target ≥ 0.85:" in printed
    assert "Cg/B target ≥ 0.90:" in printed
    assert "Bearer" not in printed + completed.stderr  # the API key is only ever a wrk header argument


def test_wrk_result_line_is_parsed() -> None:
    line = (
        f"{wrk.RESULT_MARKER}"
        '{"requests":2000,"duration_us":2000000,"bytes":1,'
        '"errors":{"connect":0,"read":1,"write":0,"timeout":2,"status":3},'
        '"latency_us":{"min":10,"mean":50.5,"p50":40,"p90":80,"p99":120,"p999":300,"max":900}}'
    )
    result = wrk.parse_result(f"Running 2s test\n{line}\n")
    assert result.requests_per_s == 1000.0
    assert result.latency_us["p99"] == 120.0
    assert (result.errors.socket, result.errors.status, result.errors.total) == (3, 3, 6)


def test_ratios_of_rows_not_run_are_null() -> None:
    ratios = report.ratios({"A": {"requests_per_s": 100.0}, "H": {"requests_per_s": 40.0}})
    assert ratios["H/A"] == 0.4
    assert ratios["C/H"] is None
    assert set(ratios) == set(RATIOS)
