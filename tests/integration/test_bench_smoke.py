"""``python -m tollway.bench`` end to end with a tiny load: the JSON shape, never the numbers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tollway.bench import redis_stats, report, wrk

ROWS = ("A", "B", "H", "C", "Cg", "D")
RATIOS = ("C/H", "Cg/B", "D/H", "D/C", "C/A", "H/A", "B/A")
REDIS_RATES = {"round_trips_per_admitted_request", "checks_per_round_trip", "checks_per_admitted_request"}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_bench_runs_every_row_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "tollway.bench", "--out", str(out), "--duration", "1", "--warmup", "1"]
    argv += ["--connections", "4", "--rounds", "1", "--work-dir", str(tmp_path / "logs")]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
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
    for key in ("C", "Cg", "D"):
        assert set(results["rows"][key]["cpu_us_per_request"]) == {"envoy", "authz", "valkey"}
        assert set(results["rows"][key]["redis"]) == REDIS_RATES
    for key in ("A", "B", "H"):
        assert results["rows"][key]["redis"] is None

    # Row D: every admitted request costs one limiter check, counted by Valkey over the window.
    d_round = results["rows"]["D"]["rounds"][0]
    redis = d_round["redis"]
    assert redis["admitted"] == d_round["ext_authz_checks"]["ok"] > 0
    assert redis["checks"] >= redis["admitted"] * 0.95
    assert redis["round_trips"] > 0
    assert set(redis) == {"round_trips", "checks", "admitted"} | REDIS_RATES
    assert isinstance(results["rows"]["D"]["cpu_us_per_request"]["valkey"], float | int)

    limiter = results["limiter"]
    assert limiter["row"] == "D"
    assert isinstance(limiter["round_trips_per_admitted_request"], float | int)
    assert isinstance(limiter["checks_per_round_trip"], float | int)
    assert isinstance(limiter["valkey_cpu_us_per_request"], float | int)
    assert limiter["round_trips_target"]["max"] == 1.0
    assert isinstance(limiter["round_trips_target"]["met"], bool)
    assert set(limiter["ratios"]) == {"D/H", "D/C"}
    assert "total_reads_processed" in limiter["method"]

    assert tuple(results["ratios"]) == RATIOS
    for value in results["ratios"].values():
        assert isinstance(value, float)
    assert results["targets"]["D/H"]["min"] == 0.60
    assert isinstance(results["targets"]["D/H"]["met"], bool)

    printed = completed.stdout
    assert f"wrk {load['version']}" in printed
    assert "C/H target ≥ 0.85:" in printed
    assert "Cg/B target ≥ 0.90:" in printed
    assert "D/H target ≥ 0.60:" in printed
    assert "Redis round trips per admitted request:" in printed
    assert "checks per round trip:" in printed
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
    assert ratios["D/H"] is None
    assert set(ratios) == set(RATIOS)
    assert report.limiter_summary({}, ratios) is None


def test_round_trips_come_from_valkey_reads_and_evalsha_calls() -> None:
    before = redis_stats.RedisCounters(reads=100, evalsha_calls=40)
    after = redis_stats.RedisCounters(reads=126, evalsha_calls=340)
    usage = redis_stats.usage(before, after, admitted=300)
    assert usage.round_trips == 25  # the closing INFO's own read is not a round trip of Tollway's
    assert usage.checks == 300
    assert usage.round_trips_per_admitted_request == 25 / 300
    assert usage.checks_per_round_trip == 12.0
    assert usage.checks_per_admitted_request == 1.0
    idle = redis_stats.usage(before, redis_stats.RedisCounters(reads=101, evalsha_calls=40), admitted=0)
    assert (idle.round_trips, idle.round_trips_per_admitted_request, idle.checks_per_round_trip) == (0, None, None)
