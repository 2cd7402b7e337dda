"""Turn measurements into ``bench-results.json`` and a readable table with the ratios and targets."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tollway.bench.redis_stats import RedisUsage
from tollway.bench.runner import Measurement, Options
from tollway.bench.scenarios import Scenario

Json = dict[str, Any]

# numerator, denominator (requests/s)
RATIOS: Final = (("C", "H"), ("Cg", "B"), ("D", "H"), ("D", "C"), ("C", "A"), ("H", "A"), ("B", "A"))
TARGETS: Final = {"C/H": 0.85, "Cg/B": 0.90, "D/H": 0.60}
LIMITER_ROW: Final = "D"
ROUND_TRIPS_TARGET_MAX: Final = 1.0
_ROLES: Final = ("envoy", "authz", "valkey")
_REDIS_RATES: Final = ("round_trips_per_admitted_request", "checks_per_round_trip", "checks_per_admitted_request")
ROUND_TRIP_METHOD: Final = (
    "Valkey INFO sampled right before and after the measured window on a connection opened beforehand: "
    "checks = cmdstat_evalsha calls (one EVALSHA per limiter check); round trips = total_reads_processed "
    "minus the closing INFO's own read (a client sends a pipeline in one write, so a coalesced pipeline of "
    "k EVALSHAs is one read). An upper bound: a pipeline over Valkey's 16 KiB read buffer takes several "
    "reads, and Tollway's key and subscription cache refreshes (about one lookup a second) count too. "
    "Admitted requests = Envoy's ext_authz.ok over the same window."
)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _redis_json(usage: RedisUsage | None) -> Json | None:
    if usage is None:
        return None
    return {
        "round_trips": usage.round_trips,
        "checks": usage.checks,
        "admitted": usage.admitted,
        "round_trips_per_admitted_request": _round(usage.round_trips_per_admitted_request, 4),
        "checks_per_round_trip": _round(usage.checks_per_round_trip, 3),
        "checks_per_admitted_request": _round(usage.checks_per_admitted_request, 4),
    }


def _round_json(measurement: Measurement) -> Json:
    result = measurement.result
    latency = result.latency_us
    return {
        "requests_per_s": round(result.requests_per_s, 1),
        "latency_ms": {p: round(latency[p] / 1000, 3) for p in ("p50", "p90", "p99", "max")},
        "requests": result.requests,
        "duration_s": round(result.duration_s, 3),
        "errors": {
            "connect": result.errors.connect,
            "read": result.errors.read,
            "write": result.errors.write,
            "timeout": result.errors.timeout,
            "status": result.errors.status,
        },
        "cpu_us_per_request": {role: _round(v, 2) for role, v in measurement.cpu_us_per_request.items()},
        "ext_authz_checks": measurement.ext_authz,
        "redis": _redis_json(measurement.redis),
    }


def row(scenario: Scenario, measurements: Sequence[Measurement]) -> Json:
    """One table row: medians over rounds (errors are summed); each round is kept under ``rounds``."""
    rounds = [_round_json(m) for m in measurements]
    roles = [r for r in _ROLES if any(r in m.cpu_us_per_request for m in measurements)]
    errors = {name: sum(r["errors"][name] for r in rounds) for name in rounds[0]["errors"]}
    redis_rounds = [r["redis"] for r in rounds if r["redis"] is not None]
    redis = (
        {rate: _round(_median([r[rate] for r in redis_rounds]), 4) for rate in _REDIS_RATES} if redis_rounds else None
    )
    return {
        "description": scenario.description,
        "requests_per_s": _round(_median([m.result.requests_per_s for m in measurements]), 1),
        "latency_ms": {
            p: _round(_median([m.result.latency_us[p] / 1000 for m in measurements]), 3) for p in ("p50", "p99")
        },
        "requests": round(statistics.median([m.result.requests for m in measurements])),
        "errors": {**errors, "total": sum(errors.values())},
        "cpu_us_per_request": {
            role: _round(_median([m.cpu_us_per_request.get(role) for m in measurements]), 2) for role in roles
        },
        "redis": redis,
        "rounds": rounds,
    }


def ratios(rows: Mapping[str, Json]) -> dict[str, float | None]:
    """requests/s ratios; None when a side was not run (or measured nothing)."""
    out: dict[str, float | None] = {}
    for top, bottom in RATIOS:
        numerator = rows.get(top, {}).get("requests_per_s")
        denominator = rows.get(bottom, {}).get("requests_per_s")
        out[f"{top}/{bottom}"] = round(numerator / denominator, 4) if numerator and denominator else None
    return out


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def limiter_summary(rows: Mapping[str, Json], computed: Mapping[str, float | None]) -> Json | None:
    """Row D's limiter figures (medians over rounds) and the round-trip target; None if D was not run."""
    data = rows.get(LIMITER_ROW)
    if data is None:
        return None
    redis = data.get("redis") or {}
    per_request = redis.get("round_trips_per_admitted_request")
    return {
        "row": LIMITER_ROW,
        "round_trips_per_admitted_request": per_request,
        "checks_per_round_trip": redis.get("checks_per_round_trip"),
        "checks_per_admitted_request": redis.get("checks_per_admitted_request"),
        "valkey_cpu_us_per_request": data["cpu_us_per_request"].get("valkey"),
        "round_trips_target": {
            "max": ROUND_TRIPS_TARGET_MAX,
            "met": None if per_request is None else per_request <= ROUND_TRIPS_TARGET_MAX,
            "coalesced": None if per_request is None else per_request < 1.0,
        },
        "ratios": {name: computed.get(name) for name in ("D/H", "D/C")},
        "method": ROUND_TRIP_METHOD,
    }


def build(
    *,
    options: Options,
    scenarios: Sequence[Scenario],
    measurements: Mapping[str, Sequence[Measurement]],
    generated_at: str,
    wall_time_s: float,
    wrk_version: str,
    envoy_version: str,
    envoy_concurrency: int,
    machine: Json,
) -> Json:
    rows = {s.key: row(s, measurements[s.key]) for s in scenarios if measurements.get(s.key)}
    computed = ratios(rows)
    limiter = limiter_summary(rows, computed)
    return {
        "generated_at": generated_at,
        "wall_time_s": round(wall_time_s, 1),
        "load_generator": {
            "name": "wrk",
            "version": wrk_version,
            "threads": options.threads,
            "connections": options.connections,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "rounds": options.rounds,
        },
        "envoy": {"version": envoy_version, "concurrency": envoy_concurrency},
        "machine": machine,
        "notes": (
            "All routes are Envoy direct_response. CPU us/request = (utime+stime of the process over the "
            "measured window, warm-up excluded) / requests completed in that window. Every process shares "
            "the same CPUs as wrk, so requests/s is a box limit; CPU per request carries over. Row D's plan "
            "never refuses (limits of 10^9), so every request costs one limiter check."
        ),
        "rows": rows,
        "ratios": computed,
        "targets": {name: {"min": target, "met": _met(computed.get(name), target)} for name, target in TARGETS.items()},
        "limiter": limiter,
    }


def write(results: Json, path: Path) -> None:
    Path(path).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render(results: Json) -> str:
    load = results["load_generator"]
    envoy = results["envoy"]
    machine = results["machine"]
    rounds = load["rounds"]
    lines = [
        f"Load generator: wrk {load['version']}, -t{load['threads']} -c{load['connections']}, "
        f"{load['duration_s']} s measured after {load['warmup_s']} s warm-up, "
        f"{rounds} round{'s' if rounds != 1 else ''}{' (medians)' if rounds > 1 else ''}",
        f"Envoy {envoy['version']} --concurrency {envoy['concurrency']}; "
        f"{machine['cpus']} CPUs; Python {machine['python']}",
        "",
        f"{'row':<4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'requests':>11}{'errors':>8}"
        f"{'CPU µs/req: envoy':>19}{'python':>8}{'valkey':>8}{'RT/req':>8}  description",
    ]
    for key, data in results["rows"].items():
        cpu = data["cpu_us_per_request"]
        redis = data.get("redis") or {}
        lines.append(
            f"{key:<4}{_num(data['requests_per_s'], ',.0f'):>10}{_num(data['latency_ms']['p50'], '.2f'):>9}"
            f"{_num(data['latency_ms']['p99'], '.2f'):>9}{data['requests']:>11,}{data['errors']['total']:>8}"
            f"{_num(cpu.get('envoy'), '.1f'):>19}{_num(cpu.get('authz'), '.1f'):>8}{_num(cpu.get('valkey'), '.1f'):>8}"
            f"{_num(redis.get('round_trips_per_admitted_request'), '.3f'):>8}  {data['description']}"
        )
    lines += ["", "Ratios of requests/s:"]
    lines += [f"  {name:<5} {_num(value, '.3f')}" for name, value in results["ratios"].items()]
    lines.append("")
    for name, target in results["targets"].items():
        met = target["met"]
        verdict = "not measured" if met is None else ("met" if met else "not met")
        value = results["ratios"].get(name)
        lines.append(f"{name} target ≥ {target['min']:.2f}: {verdict} ({_num(value, '.3f')})")
    limiter = results.get("limiter")
    if limiter is not None:
        lines += ["", *render_limiter(limiter)]
    return "\n".join(lines)


def render_limiter(limiter: Json) -> list[str]:
    target = limiter["round_trips_target"]
    met = target["met"]
    if met is None:
        verdict = "not measured"
    elif not met:
        verdict = "not met"
    else:
        verdict = "met, < 1: checks are coalesced" if target["coalesced"] else "met, but not below 1: no coalescing"
    return [
        f"Limiter, row {limiter['row']} (one check per admitted request; counted by Valkey, RT = round trips):",
        f"  Redis round trips per admitted request: {_num(limiter['round_trips_per_admitted_request'], '.3f')} "
        f"(target ≤ {target['max']:.0f}: {verdict})",
        f"  checks per round trip: {_num(limiter['checks_per_round_trip'], '.2f')}; "
        f"checks per admitted request: {_num(limiter['checks_per_admitted_request'], '.3f')}",
        f"  Valkey CPU per request: {_num(limiter['valkey_cpu_us_per_request'], '.1f')} µs; "
        + ", ".join(f"{name} {_num(value, '.3f')}" for name, value in limiter["ratios"].items()),
        "  method: INFO total_reads_processed (round trips, an upper bound) and cmdstat_evalsha (checks) "
        "around the window; see bench-results.json limiter.method",
    ]
