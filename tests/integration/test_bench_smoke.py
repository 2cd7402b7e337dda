"""``python -m tollway.bench`` end to end with a tiny load: the JSON shape, never the numbers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tollway.bench import (
    billing_throughput,
    loader_throughput,
    metering_stats,
    redis_stats,
    report,
    scenarios,
    webhook_throughput,
    wrk,
)
from tollway.bench.errors import BenchError
from tollway.harness import envoy_config

ROWS = ("A", "B", "H", "C", "Cg", "D", "Dn", "G", "F", "E")
RATIOS = ("C/H", "Cg/B", "D/H", "D/C", "E/D", "F/D", "G/D", "C/A", "H/A", "B/A", "E/A", "Dn/D")
REDIS_RATES = {"round_trips_per_admitted_request", "checks_per_round_trip", "checks_per_admitted_request"}
LOADER_ROWS = 3000
BILLING_ROWS = 20_000
BILLING_KEYS = {
    "rows",
    "seconds",
    "rows_per_s",
    "aggregation_s",
    "pricing_s",
    "query_s",
    "queries",
    "parts",
    "warm_seconds",
    "warm_rows_per_s",
    "customers",
    "invoices_priced",
    "generate_s",
    "store_s",
    "target",
}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_bench_runs_every_row_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "tollway.bench", "--out", str(out), "--duration", "1", "--warmup", "1"]
    argv += ["--connections", "4", "--rounds", "1", "--work-dir", str(tmp_path / "logs")]
    argv += ["--loader-rows", str(LOADER_ROWS), "--billing-rows", str(BILLING_ROWS), "--webhook-events", "500"]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
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
            assert set(row["authz_threads_us_per_request"]) == {"main", "other"}
        if key != "E":
            assert row["metering"] is None
    money = results["rows"]["G"]["rounds"][0]["money"]
    assert money["burned_micros"] == money["admitted_requests"] * money["price_micros"] > 0
    for key in ("C", "Cg", "D", "G", "F", "E"):
        metering_process = {"metering"} if key == "E" else set()  # `tollway meter` beside `tollway serve`
        assert set(results["rows"][key]["cpu_us_per_request"]) == {"envoy", "authz", "valkey"} | metering_process
        assert set(results["rows"][key]["redis"]) == REDIS_RATES
    for key in ("A", "B", "H"):
        assert results["rows"][key]["redis"] is None

    # Row D: every admitted request is counted by the limiter in Valkey (a check is one request, or a
    # capacity lease of many: the quota counter's growth over the window is what must match).
    d_round = results["rows"]["D"]["rounds"][0]
    redis = d_round["redis"]
    assert redis["admitted"] == d_round["ext_authz_checks"]["ok"] > 0
    assert redis["quota_units"] >= redis["admitted"] * 0.95
    assert 0 < redis["checks"] <= redis["admitted"]
    assert redis["round_trips"] > 0
    assert set(redis) == {"round_trips", "checks", "admitted", "quota_units"} | REDIS_RATES
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

    # Row E: D plus metering; every request was recorded twice (decision row, access-log row) and loaded.
    e_round = results["rows"]["E"]["rounds"][0]
    assert e_round["redis"]["quota_units"] >= e_round["redis"]["admitted"] * 0.95
    metered = e_round["metering"]
    assert metered["window"]["requests"] == e_round["requests"]
    assert metered["requests_total"] > e_round["requests"]  # probes and warm-up too
    assert metered["decision_rows"] >= metered["requests_total"] * 0.95
    assert metered["access_log_rows"] >= metered["requests_total"] * 0.9
    assert metered["rows_read"] >= metered["decision_rows"] + metered["access_log_rows"]
    # A decision row whose response row is in the same batch is not inserted: ~1 row per request.
    assert 0.9 <= metered["rows_loaded_per_request"] <= 2.2
    assert metered["loader_failures"] == 0
    assert metered["spool_bytes"] > 0
    assert metered["envoy_access_log"]["logs_written"] > 0
    summary = results["metering"]
    assert (summary["row"], summary["baseline"]) == ("E", "D")
    assert summary["rows_loaded"] == metered["rows_loaded"]
    assert set(summary["extra_cpu_us_per_request"]) == {
        "envoy",
        "authz",
        "authz_main_thread",
        "authz_other_threads",
        "metering_process",
        "valkey",
    }
    assert summary["extra_cpu_us_per_request"]["metering_process"] > 0
    assert set(summary["ratios"]) == {"E/D", "E/A"}

    # The loader's throughput, measured apart from wrk.
    loader = results["loader"]
    assert loader["rows"] == LOADER_ROWS
    assert loader["rows_per_s"] > 0
    assert loader["seconds"] > 0
    assert loader["batch_bytes"] == loader_throughput.BATCH_BYTES
    assert loader["batches"] >= 1
    assert len(loader["rss_after_each_batch_mib"]) == loader["batches"]
    assert isinstance(loader["rss_growth_mib"], float | int)
    assert loader["requests_in_table"] == loader["rows_by_version"]["1"]
    assert loader["target"]["min_rows_per_s"] == 100_000
    assert isinstance(loader["target"]["met"], bool)
    assert results["targets"]["loader_rows_per_s"]["met"] == loader["target"]["met"]

    # The billing run over generated usage, measured apart from wrk.
    billing = results["billing"]
    assert set(billing) >= BILLING_KEYS
    assert (billing["rows"], billing["customers"]) == (BILLING_ROWS, billing_throughput.DEFAULT_CUSTOMERS)
    assert billing["invoices_priced"] == billing["customers"]
    assert billing["target"]["min_rows_per_s"] == 10_000_000
    assert results["targets"]["billing_rows_per_s"]["met"] == billing["target"]["met"]

    webhooks = results["webhooks"]
    assert (webhooks["events"], webhooks["delivered"], webhooks["received"]) == (500, 500, 500)
    assert results["targets"]["webhooks_per_s"]["met"] == webhooks["target"]["met"]

    assert tuple(results["ratios"]) == RATIOS
    for name, value in results["ratios"].items():
        if name.split("/")[0] not in scenarios.PENDING_KEYS:  # a row not run by default has no ratio
            assert isinstance(value, float)
    assert results["targets"]["D/H"]["min"] == 0.60
    assert isinstance(results["targets"]["D/H"]["met"], bool)
    assert results["targets"]["E/D"]["min"] == 0.90
    assert isinstance(results["targets"]["E/D"]["met"], bool)
    assert results["targets"]["F/D"]["min"] == 0.95
    assert isinstance(results["targets"]["F/D"]["met"], bool)
    assert results["targets"]["G/D"]["min"] == 0.90
    assert isinstance(results["targets"]["G/D"]["met"], bool)

    # Row F: row D with a bearer token; every admitted request still counted by the limiter.
    f_round = results["rows"]["F"]["rounds"][0]
    assert f_round["redis"]["admitted"] == f_round["ext_authz_checks"]["ok"] > 0
    assert f_round["redis"]["quota_units"] >= f_round["redis"]["admitted"] * 0.95

    printed = completed.stdout
    assert f"wrk {load['version']}" in printed
    assert "C/H target ≥ 0.85:" in printed
    assert "Cg/B target ≥ 0.90:" in printed
    assert "D/H target ≥ 0.60:" in printed
    assert "Redis round trips per admitted request:" in printed
    assert "checks per round trip:" in printed
    assert "E/D target ≥ 0.90:" in printed
    assert "F/D target ≥ 0.95:" in printed
    assert "Metering, row E" in printed
    assert "Loader throughput" in printed
    assert "Billing throughput" in printed
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


def test_a_ratio_pairs_the_rounds_measured_together() -> None:
    """Machine drift between rounds moves both rows of a round: the ratio is the median of the rounds'
    own ratios (0.95, 0.96, 0.75 -> 0.95), not the ratio of the medians (60 / 80 = 0.75)."""
    d = {"requests_per_s": 80.0, "rounds": [{"requests_per_s": r} for r in (100.0, 50.0, 80.0)]}
    g = {"requests_per_s": 60.0, "rounds": [{"requests_per_s": r} for r in (95.0, 48.0, 60.0)]}
    assert report.ratios({"D": d, "G": g})["G/D"] == 0.95
    assert report.ratios_of_medians({"D": d, "G": g})["G/D"] == 0.75
    # A round that measured nothing on one side is left out of the pairing.
    g["rounds"][0]["requests_per_s"] = 0.0
    assert report.ratios({"D": d, "G": g})["G/D"] == round((0.96 + 0.75) / 2, 4)


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


def test_only_the_metering_row_keeps_envoys_access_log_and_authz_metadata() -> None:
    def hcms(cfg: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            network_filter["typed_config"]
            for listener in cfg["static_resources"]["listeners"]
            for chain in listener["filter_chains"]
            for network_filter in chain["filters"]
            if network_filter["name"] == envoy_config.HCM_FILTER
        ]

    def metadata_from_headers(cfg: dict[str, Any]) -> list[object]:
        return [
            f["typed_config"]
            .get("http_service", {})
            .get("authorization_response", {})
            .get("dynamic_metadata_from_headers")
            for hcm in hcms(cfg)
            for f in hcm["http_filters"]
            if f["name"] == envoy_config.EXT_AUTHZ_FILTER
        ]

    for variant in envoy_config.VARIANTS:
        template = envoy_config.load(envoy_config.template_path(variant))
        assert all(h.get("access_log") for h in hcms(template)), f"the {variant} template streams its access log"
        stripped = scenarios.without_metering(template)
        assert [h.get("access_log") for h in hcms(stripped)] == [None]
        assert metadata_from_headers(stripped) == [None]
        assert all(h.get("access_log") for h in hcms(template)), "the input is left untouched"
        assert envoy_config.cluster_names(stripped) == envoy_config.cluster_names(template)
    http_template = envoy_config.load(envoy_config.template_path("http"))
    assert metadata_from_headers(http_template) != [None], "the product config keeps the metadata for metering"


def test_loader_rows_are_realistic_usage_rows() -> None:
    lines = loader_throughput.usage_rows(2000, seed=3)
    assert len(lines) == 2000
    rows = [json.loads(line) for line in lines]
    versions = {row["version"] for row in rows}
    assert versions == {1, 2}
    assert len({row["customer_id"] for row in rows}) > 10
    assert len({row["route"] for row in rows}) > 3
    assert {row["outcome"] for row in rows} == {"admitted", "refused"}
    completed = [row for row in rows if row["version"] == 2]
    assert all(row["status"] > 0 and "response_bytes" in row["meters"] for row in completed)
    decided = {row["request_id"] for row in rows if row["version"] == 1}
    assert {row["request_id"] for row in completed} <= decided  # a response row completes a decided request
    again = [json.loads(line) for line in loader_throughput.usage_rows(2000, seed=3)]
    assert [row["request_id"] for row in again] == [row["request_id"] for row in rows]  # seeded


def test_webhook_result_carries_its_target() -> None:
    assert report.webhooks_json(None) is None
    met = report.webhooks_json({"webhooks_per_s": 2500.0})
    assert met is not None
    assert met["target"] == {"min_per_s": 2_000, "met": True}
    missed = report.webhooks_json({"webhooks_per_s": 1500.0})
    assert missed is not None
    assert missed["target"]["met"] is False


@pytest.mark.integration
def test_webhook_run_delivers_every_event_to_the_receiver(tmp_path: Path) -> None:
    result = webhook_throughput.measure(tmp_path, 400)
    assert (result["events"], result["delivered"], result["received"], result["pending_after"]) == (400, 400, 400, 0)
    assert result["webhooks_per_s"] > 0
    assert result["rss_growth_mib"] >= 0


def test_the_alerts_row_declares_levels_on_every_limit_and_quota(tmp_path: Path) -> None:
    import yaml

    plan = yaml.safe_load(scenarios.alerts_catalog(tmp_path).read_text())["plans"][scenarios.BENCH_PLAN]
    rules = [*plan["limits"], *plan["quotas"]]
    assert len(rules) == 3
    assert all(rule["alerts"] == [50, 80, 100] for rule in rules)
    assert "Dn" in scenarios.SCENARIO_KEYS
    assert "Dn" in scenarios.DEFAULT_KEYS
    assert report.TARGETS["Dn/D"] == 0.95


def test_loader_result_carries_its_target() -> None:
    assert report.loader_json(None) is None
    met = report.loader_json({"rows_per_s": 150_000.0})
    assert met is not None
    assert met["target"] == {"min_rows_per_s": 100_000, "met": True}
    missed = report.loader_json({"rows_per_s": 50_000.0})
    assert missed is not None
    assert missed["target"]["met"] is False


@pytest.mark.integration
def test_billing_run_prices_every_customer_from_generated_usage(tmp_path: Path) -> None:
    result = billing_throughput.measure(tmp_path, BILLING_ROWS, customers=500)
    assert result["rows"] == BILLING_ROWS
    assert result["requests"] + result["duplicate_decision_rows"] == BILLING_ROWS
    assert 0 < result["duplicate_decision_rows"] < BILLING_ROWS // 50  # about 1 %
    assert (result["customers"], result["customers_with_usage"], result["invoices_priced"]) == (500, 500, 500)
    # FINAL counts a request once; refused, 5xx and 429 requests are not billed.
    assert result["billed_requests"] == result["billable_requests_in_table"] < result["requests"]
    assert result["seconds"] > 0
    assert result["rows_per_s"] > 0
    assert result["aggregation_s"] + result["pricing_s"] == pytest.approx(result["seconds"], abs=0.002)
    assert 0 < result["query_s"] <= result["aggregation_s"]
    # One customer in three on pro, a plan with two versions; of those, one in four each: legacy pro, pro@1
    # migrated to pro@2 mid-month (two parts), sold at pro@2, migrated from the next period. Customers
    # 1, 4, 7, ... 499 (167) are on pro, the k-th of them (k = 0..166) in cohort k % 4: 42, 42, 42, 41.
    assert result["cohorts"] == {
        "pro-2": 42,
        "pro-legacy": 42,
        "pro-migrated": 42,
        "pro-next": 41,
        "scale": 166,
        "starter": 167,
    }
    # The 42 pro-2 customers subscribed 7 days before the month with a 14-day free trial on pro@2:trial,
    # ending 7 days into it (two parts); the 166 scale customers bought 3 seats (an add-on) mid-month.
    assert result["phases"] == {"pro@2:trial": 42}
    assert result["addons"] == {"seats": 166}
    assert result["plan_parts"] == 500 + 42 + 42
    # One scan for the month (the migration and the trial's end cut the periods in SQL, each part sums
    # its own plan's meters). The trial's part is free and the seats are flat fees: nothing more is asked.
    assert result["queries"] == 1
    assert result["warm_seconds"] > 0
    assert result["generate_s"] > 0
    assert result["store_s"] > 0
    billing = report.billing_json(result)
    assert billing is not None
    assert set(billing) >= BILLING_KEYS
    rendered = "\n".join(report.render_billing(billing))
    assert "Billing throughput (20,000 usage rows, 500 customers" in rendered
    assert "target ≥ 10,000,000" in rendered
    assert "usage queries" in rendered
    assert "dataset: 167 customers on the versioned plan pro (42 migrated pro@1 → pro@2 mid-month: 584" in rendered
    assert "; 42 ending a free trial in the month; 166 add-on spans bought mid-month" in rendered


def test_billing_result_carries_its_target() -> None:
    assert report.billing_json(None) is None
    met = report.billing_json({"rows_per_s": 12_000_000.0})
    assert met is not None
    assert met["target"] == {"min_rows_per_s": 10_000_000, "met": True}
    missed = report.billing_json({"rows_per_s": 5_000_000.0})
    assert missed is not None
    assert missed["target"]["met"] is False


def test_metering_settles_once_every_written_row_is_loaded() -> None:
    samples = iter(
        [
            metering_stats.MeteringCounters(10, 4, 100, 1, 0, "", decisions=10),
            metering_stats.MeteringCounters(20, 10, 200, 2, 0, "", decisions=10),
        ]
    )
    last = metering_stats.MeteringCounters(20, 10, 200, 2, 0, "", decisions=10)
    settled, seconds = metering_stats.settle(lambda: next(samples, last), timeout_s=10)
    assert settled == last
    assert settled.backlog == 0
    assert seconds < 5

    idle = metering_stats.MeteringCounters(0, 0, 0, 0, 0, "", decisions=5)
    nothing, _ = metering_stats.settle(lambda: idle, timeout_s=0.3)
    usage = metering_stats.usage(
        idle, idle, nothing, catch_up_s=0.3, requests_total=5, window_requests=5, envoy_access_log={}
    )
    with pytest.raises(BenchError, match="loaded no usage row"):
        metering_stats.check("E", usage)
