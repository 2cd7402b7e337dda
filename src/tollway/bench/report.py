"""Turn measurements into ``bench-results.json`` and a readable table with the ratios and targets."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tollway.bench.metering_stats import MeteringUsage
from tollway.bench.redis_stats import RedisUsage
from tollway.bench.runner import Measurement, Options
from tollway.bench.scenarios import Scenario

Json = dict[str, Any]

# numerator, denominator (requests/s)
RATIOS: Final = (
    ("C", "H"),
    ("Cg", "B"),
    ("D", "H"),
    ("D", "C"),
    ("E", "D"),
    ("F", "D"),
    ("G", "D"),
    ("C", "A"),
    ("H", "A"),
    ("B", "A"),
    ("E", "A"),
    ("Dn", "D"),
)
TARGETS: Final = {"C/H": 0.85, "Cg/B": 0.90, "D/H": 0.60, "E/D": 0.90, "F/D": 0.95, "G/D": 0.90, "Dn/D": 0.95}
LIMITER_ROW: Final = "D"
METERING_ROW: Final = "E"
METERING_BASELINE: Final = "D"
LOADER_TARGET_ROWS_PER_S: Final = 100_000
BILLING_TARGET_ROWS_PER_S: Final = 10_000_000
WEBHOOKS_TARGET_PER_S: Final = 2_000
ROUND_TRIPS_TARGET_MAX: Final = 1.0
_ROLES: Final = ("envoy", "authz", "metering", "valkey")
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
        "quota_units": usage.quota_units,
    }


def _threads_json(split: Mapping[str, float] | None) -> Json | None:
    return None if split is None else {name: round(value, 2) for name, value in split.items()}


def _metering_json(usage: MeteringUsage | None) -> Json | None:
    return None if usage is None else usage.to_json()


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
        "authz_threads_us_per_request": _threads_json(measurement.authz_threads_us_per_request),
        "ext_authz_checks": measurement.ext_authz,
        "redis": _redis_json(measurement.redis),
        "metering": _metering_json(measurement.metering),
        "money": measurement.money,
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
    thread_rounds = [r["authz_threads_us_per_request"] for r in rounds if r["authz_threads_us_per_request"]]
    threads = (
        {part: _round(_median([t[part] for t in thread_rounds]), 2) for part in ("main", "other")}
        if thread_rounds
        else None
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
        "authz_threads_us_per_request": threads,
        "redis": redis,
        "metering": metering_row([m.metering for m in measurements if m.metering is not None]),
        "rounds": rounds,
    }


def metering_row(usages: Sequence[MeteringUsage]) -> Json | None:
    """A metered row's counts over all its rounds (totals; the window's rows per request is a median)."""
    if not usages:
        return None
    requests_total = sum(u.requests_total for u in usages)
    rows_loaded = sum(u.rows_loaded for u in usages)
    return {
        "requests_total": requests_total,
        "decision_rows": sum(u.decisions for u in usages),
        "access_log_rows": sum(u.access_log_rows for u in usages),
        "rows_loaded": rows_loaded,
        "rows_loaded_per_request": round(rows_loaded / requests_total, 4) if requests_total else None,
        "window_rows_loaded_per_request": _round(_median([u.window_rows_loaded_per_request for u in usages]), 4),
        "backlog_rows_at_window_end": max(u.backlog_rows_at_window_end for u in usages),
        "catch_up_s": round(max(u.catch_up_s for u in usages), 2),
        "spool_bytes": max(u.spool_bytes for u in usages),
        "loader_failures": sum(u.loader_failures for u in usages),
    }


def ratios(rows: Mapping[str, Json]) -> dict[str, float | None]:
    """requests/s ratios; None when a side was not run (or measured nothing).

    With several rounds a ratio is the median of the rounds' own ratios (round i of the top row over round
    i of the bottom row, measured seconds apart), not the ratio of the two rows' medians: on a shared
    machine whose speed drifts between rounds, pairing cancels the drift that both rows of a round saw
    (``ratios_of_medians`` keeps the other figure)."""
    out: dict[str, float | None] = {}
    for top, bottom in RATIOS:
        paired = [
            a / b
            for a, b in zip(_round_rates(rows.get(top, {})), _round_rates(rows.get(bottom, {})), strict=False)
            if a and b
        ]
        if paired:
            out[f"{top}/{bottom}"] = round(statistics.median(paired), 4)
            continue
        numerator = rows.get(top, {}).get("requests_per_s")
        denominator = rows.get(bottom, {}).get("requests_per_s")
        out[f"{top}/{bottom}"] = round(numerator / denominator, 4) if numerator and denominator else None
    return out


def ratios_of_medians(rows: Mapping[str, Json]) -> dict[str, float | None]:
    """requests/s ratios of the rows' medians over rounds (None when a side was not run)."""
    out: dict[str, float | None] = {}
    for top, bottom in RATIOS:
        numerator = rows.get(top, {}).get("requests_per_s")
        denominator = rows.get(bottom, {}).get("requests_per_s")
        out[f"{top}/{bottom}"] = round(numerator / denominator, 4) if numerator and denominator else None
    return out


def _round_rates(row: Json) -> list[float]:
    """requests/s of each round of a row, in round order (empty: not run, or no rounds kept)."""
    return [float(r.get("requests_per_s") or 0.0) for r in row.get("rounds", ())]


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


def metering_summary(rows: Mapping[str, Json], computed: Mapping[str, float | None]) -> Json | None:
    """Row E against row D: what metering costs per request, by process (and Python thread); None if E was
    not run."""
    data = rows.get(METERING_ROW)
    if data is None or data.get("metering") is None:
        return None
    baseline = rows.get(METERING_BASELINE)

    def extra(values: Mapping[str, Any] | None, base: Mapping[str, Any] | None, name: str) -> float | None:
        mine = (values or {}).get(name)
        theirs = (base or {}).get(name)
        return None if mine is None or theirs is None else round(mine - theirs, 2)

    cpu = data["cpu_us_per_request"]
    base_cpu = baseline["cpu_us_per_request"] if baseline is not None else None
    threads = data.get("authz_threads_us_per_request")
    base_threads = baseline.get("authz_threads_us_per_request") if baseline is not None else None
    return {
        "row": METERING_ROW,
        "baseline": METERING_BASELINE,
        **data["metering"],
        "extra_cpu_us_per_request": {
            "envoy": extra(cpu, base_cpu, "envoy"),
            "authz": extra(cpu, base_cpu, "authz"),
            "authz_main_thread": extra(threads, base_threads, "main"),
            "authz_other_threads": extra(threads, base_threads, "other"),
            "metering_process": cpu.get("metering"),
            "valkey": extra(cpu, base_cpu, "valkey"),
        },
        "ratios": {name: computed.get(name) for name in ("E/D", "E/A")},
    }


def loader_json(result: Mapping[str, Any] | None) -> Json | None:
    """The loader throughput measurement (``loader_throughput``) with its target."""
    if result is None:
        return None
    rate = result.get("rows_per_s")
    return {
        **result,
        "target": {"min_rows_per_s": LOADER_TARGET_ROWS_PER_S, "met": _met(rate, LOADER_TARGET_ROWS_PER_S)},
    }


def billing_json(result: Mapping[str, Any] | None) -> Json | None:
    """The billing throughput measurement (``billing_throughput``) with its target."""
    if result is None:
        return None
    rate = result.get("rows_per_s")
    return {
        **result,
        "target": {"min_rows_per_s": BILLING_TARGET_ROWS_PER_S, "met": _met(rate, BILLING_TARGET_ROWS_PER_S)},
    }


def webhooks_json(result: Mapping[str, Any] | None) -> Json | None:
    """The webhook dispatcher measurement (``webhook_throughput``) with its target."""
    if result is None:
        return None
    rate = result.get("webhooks_per_s")
    return {**result, "target": {"min_per_s": WEBHOOKS_TARGET_PER_S, "met": _met(rate, WEBHOOKS_TARGET_PER_S)}}


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
    loader: Mapping[str, Any] | None = None,
    billing: Mapping[str, Any] | None = None,
    webhooks: Mapping[str, Any] | None = None,
) -> Json:
    rows = {s.key: row(s, measurements[s.key]) for s in scenarios if measurements.get(s.key)}
    computed = ratios(rows)
    limiter = limiter_summary(rows, computed)
    loader_result = loader_json(loader)
    targets = {name: {"min": target, "met": _met(computed.get(name), target)} for name, target in TARGETS.items()}
    if loader_result is not None:
        targets["loader_rows_per_s"] = {"min": LOADER_TARGET_ROWS_PER_S, "met": loader_result["target"]["met"]}
    billing_result = billing_json(billing)
    if billing_result is not None:
        targets["billing_rows_per_s"] = {"min": BILLING_TARGET_ROWS_PER_S, "met": billing_result["target"]["met"]}
    webhooks_result = webhooks_json(webhooks)
    if webhooks_result is not None:
        targets["webhooks_per_s"] = {"min": WEBHOOKS_TARGET_PER_S, "met": webhooks_result["target"]["met"]}
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
            "All routes are Envoy direct_response. Rounds run the rows interleaved, every other round in "
            "reverse order; a ratio is the median over rounds of the ratio of the two rows measured in the same "
            "round (`ratios_of_medians`: the ratio of the rows' medians). "
            "CPU us/request = (utime+stime of the process over the "
            "measured window, warm-up excluded) / requests completed in that window. Every process shares "
            "the same CPUs as wrk, so requests/s is a box limit; CPU per request carries over. Row D's plan "
            "never refuses (limits of 10^9), so every request costs one limiter check; row F is row D with a "
            "bearer JWT (verified once, then served from the token cache) instead of the API key. The authorization "
            "server's CPU is split into its main thread (event loop) and its other threads. Envoy's gRPC "
            "access log (the product config's metering stream), and the ext_authz dynamic metadata only it "
            "reads, are removed from every row but E, the only row with a server for it, so no row pays for "
            "Envoy reconnecting to a dead log server or for metadata nobody reads. Row E "
            "runs Tollway as deployed with metering: `tollway serve` checks and writes each decision row to "
            "the spool, and `tollway meter` (CPU column `meter`) takes Envoy's access log and loads the spool "
            "into an embedded ClickHouse (chdb) in the work directory; its rows loaded are read from the "
            "metering process's /healthz once the loader has caught up after the window (about 2 rows "
            "written per request, a decision row and an access-log row). The loader throughput "
            "(`loader`) drains a pre-written spool into a fresh chdb in a subprocess of its own. The billing "
            "throughput (`billing`) generates a month of usage in a fresh chdb (not timed) and times the "
            "usage aggregation (`usage FINAL`) and pricing of every customer, as `tollway bill` does; "
            "storing the invoices is timed apart (`store_s`). The webhook throughput (`webhooks`, key "
            "`webhooks_per_s`) emits events into a fresh Valkey's outboxes and times the dispatcher, in a "
            "subprocess of its own, until each is delivered to a local receiver process (signatures made, "
            "not verified there) and settled."
        ),
        "rows": rows,
        "ratios": computed,
        "ratios_of_medians": ratios_of_medians(rows),
        "targets": targets,
        "limiter": limiter,
        "metering": metering_summary(rows, computed),
        "loader": loader_result,
        "billing": billing_result,
        "webhooks": webhooks_result,
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
        f"{'CPU µs/req: envoy':>19}{'python':>8}{'meter':>7}{'valkey':>8}{'RT/req':>8}  description",
    ]
    for key, data in results["rows"].items():
        cpu = data["cpu_us_per_request"]
        redis = data.get("redis") or {}
        lines.append(
            f"{key:<4}{_num(data['requests_per_s'], ',.0f'):>10}{_num(data['latency_ms']['p50'], '.2f'):>9}"
            f"{_num(data['latency_ms']['p99'], '.2f'):>9}{data['requests']:>11,}{data['errors']['total']:>8}"
            f"{_num(cpu.get('envoy'), '.1f'):>19}{_num(cpu.get('authz'), '.1f'):>8}"
            f"{_num(cpu.get('metering'), '.1f'):>7}{_num(cpu.get('valkey'), '.1f'):>8}"
            f"{_num(redis.get('round_trips_per_admitted_request'), '.3f'):>8}  {data['description']}"
        )
    lines += ["", "Ratios of requests/s (median of the rounds' own ratios; in brackets: ratio of the medians):"]
    medians = results.get("ratios_of_medians", {})
    lines += [
        f"  {name:<5} {_num(value, '.3f')}  ({_num(medians.get(name), '.3f')})"
        for name, value in results["ratios"].items()
    ]
    lines.append("")
    for name, target in results["targets"].items():
        if name not in results["ratios"]:
            continue
        value = results["ratios"].get(name)
        lines.append(f"{name} target ≥ {target['min']:.2f}: {_verdict(target['met'])} ({_num(value, '.3f')})")
    for key, data in results["rows"].items():
        burns = [r["money"] for r in data.get("rounds", ()) if r.get("money")]
        if burns:
            last = burns[-1]
            lines += [
                "",
                f"Row {key}: the balance burned in Valkey equals admitted requests × price in every round "
                f"(last: {last['admitted_requests']:,} × {last['price_micros']} = {last['burned_micros']:,} micro-USD)",
            ]
    limiter = results.get("limiter")
    if limiter is not None:
        lines += ["", *render_limiter(limiter)]
    metering = results.get("metering")
    if metering is not None:
        lines += ["", *render_metering(metering)]
    loader = results.get("loader")
    if loader is not None:
        lines += ["", *render_loader(loader)]
    billing = results.get("billing")
    if billing is not None:
        lines += ["", *render_billing(billing)]
    webhooks = results.get("webhooks")
    if webhooks is not None:
        lines += ["", *render_webhooks(webhooks)]
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "not met")


def render_metering(metering: Json) -> list[str]:
    extra = metering["extra_cpu_us_per_request"]
    ratios_text = ", ".join(f"{name} {_num(value, '.3f')}" for name, value in metering["ratios"].items())
    return [
        f"Metering, row {metering['row']} (decision rows from the checking process + Envoy's gRPC access log → "
        "spool → loader → embedded ClickHouse, in `tollway meter`):",
        f"  rows loaded {metering['rows_loaded']:,} for {metering['requests_total']:,} requests "
        f"({_num(metering['rows_loaded_per_request'], '.3f')} per request; decision rows "
        f"{metering['decision_rows']:,}, access-log rows {metering['access_log_rows']:,}); {ratios_text}",
        f"  during the window: {_num(metering['window_rows_loaded_per_request'], '.3f')} rows loaded per request; "
        f"backlog at its end {metering['backlog_rows_at_window_end']:,} rows, caught up "
        f"{metering['catch_up_s']:.1f} s later; loader failures {metering['loader_failures']}",
        f"  extra CPU per request over row {metering['baseline']}: envoy {_num(extra['envoy'], '+.1f')} µs, "
        f"python {_num(extra['authz'], '+.1f')} µs (main thread {_num(extra['authz_main_thread'], '+.1f')}, "
        f"other threads {_num(extra['authz_other_threads'], '+.1f')}), metering process "
        f"{_num(extra.get('metering_process'), '+.1f')} µs, valkey {_num(extra['valkey'], '+.1f')} µs",
    ]


def render_loader(loader: Json) -> list[str]:
    target = loader["target"]
    return [
        f"Loader throughput ({loader['rows']:,} rows from the spool into embedded ClickHouse, one process):",
        f"  {_num(loader['rows_per_s'], ',.0f')} rows/s in {loader['seconds']:.2f} s "
        f"(target ≥ {target['min_rows_per_s']:,}: {_verdict(target['met'])}); "
        f"{loader['batches']} batches of ≤ {loader['batch_bytes'] / (1 << 20):.0f} MiB; "
        f"peak RSS +{loader['rss_growth_mib']:.1f} MiB (from {loader['rss_before_mib']:.0f} MiB)",
    ]


def render_webhooks(webhooks: Json) -> list[str]:
    target = webhooks["target"]
    return [
        f"Webhook throughput ({webhooks['events']:,} events, outbox → dispatcher → local receiver, one process):",
        f"  {_num(webhooks['webhooks_per_s'], ',.0f')} deliveries/s in {webhooks['seconds']:.2f} s "
        f"(target ≥ {target['min_per_s']:,}: {_verdict(target['met'])}); {webhooks['cpu_us_per_delivery']} CPU µs "
        f"per delivery; ≤ {webhooks['max_in_flight']} in flight; peak RSS +{webhooks['rss_growth_mib']:.1f} MiB",
    ]


def render_billing(billing: Json) -> list[str]:
    target = billing["target"]
    store = billing.get("store_s")
    stored = "not timed" if store is None else f"{store:.2f} s"
    return [
        f"Billing throughput ({billing['rows']:,} usage rows, {billing['customers']:,} customers, month "
        f"{billing['month']}; aggregation in embedded ClickHouse + pricing, one process):",
        f"  {_num(billing['rows_per_s'], ',.0f')} rows/s in {billing['seconds']:.2f} s "
        f"(target ≥ {target['min_rows_per_s']:,}: {_verdict(target['met'])}); "
        f"{billing['invoices_priced']:,} invoices priced",
        f"  aggregation {billing['aggregation_s']:.2f} s ({billing['queries']} usage queries "
        f"{billing['query_s']:.2f} s in ClickHouse, over {billing['parts']} parts), pricing "
        f"{billing['pricing_s']:.2f} s; run again warm: {billing['warm_seconds']:.2f} s "
        f"({_num(billing['warm_rows_per_s'], ',.0f')} rows/s)",
        f"  not counted: generating the rows {billing['generate_s']:.2f} s; storing the invoices {stored}",
        *_billing_dataset(billing),
    ]


def _billing_dataset(billing: Json) -> list[str]:
    """Who the customers are (a result written before plan versions were in the dataset has no cohorts)."""
    cohorts = billing.get("cohorts")
    if not cohorts:
        return []
    versioned = sum(n for name, n in cohorts.items() if name.startswith("pro"))
    # A result written before phases and add-ons were in the dataset has neither.
    trials = sum((billing.get("phases") or {}).values())
    addons = sum((billing.get("addons") or {}).values())
    extra = f"; {trials:,} ending a free trial in the month" if trials else ""
    extra += f"; {addons:,} add-on spans bought mid-month" if addons else ""
    return [
        f"  dataset: {versioned:,} customers on the versioned plan pro ({cohorts.get('pro-migrated', 0):,} migrated "
        f"pro@1 → pro@2 mid-month: {billing['plan_parts']:,} plan parts priced){extra}"
    ]


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
        f"Limiter, row {limiter['row']} (counted by Valkey; a check is one request, or a capacity lease of many; "
        "RT = round trips):",
        f"  Redis round trips per admitted request: {_num(limiter['round_trips_per_admitted_request'], '.3f')} "
        f"(target ≤ {target['max']:.0f}: {verdict})",
        f"  checks per round trip: {_num(limiter['checks_per_round_trip'], '.2f')}; "
        f"checks per admitted request: {_num(limiter['checks_per_admitted_request'], '.3f')}",
        f"  Valkey CPU per request: {_num(limiter['valkey_cpu_us_per_request'], '.1f')} µs; "
        + ", ".join(f"{name} {_num(value, '.3f')}" for name, value in limiter["ratios"].items()),
        "  method: INFO total_reads_processed (round trips, an upper bound) and cmdstat_evalsha (checks) "
        "around the window; see bench-results.json limiter.method",
    ]
