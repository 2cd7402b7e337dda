"""Run the scenarios: fresh processes per scenario, a probe, a warm-up, then one measured wrk window.

CPU is sampled from ``/proc`` right before and right after the measured window (the warm-up is not
counted) and divided by the requests wrk completed in it; rows with a Valkey also sample its ``INFO``
(round trips and limiter checks, see ``redis_stats``), and the metering row (E) reads Tollway's metering
counters around it and waits for the loader to catch up afterwards (``metering_stats``; the CPU window is
not stretched for that: with continuous load the loader's lag at the window's start and end is alike).
The authorization server's CPU is also split into its main thread (the event loop) and every other
thread (for row E: the embedded ClickHouse's insert threads). With several rounds the scenarios are
interleaved, every other round in reverse order (A B H ... E, E ... H B A, A B H ... E, ...), so slow drift
on the machine affects every row alike and no row always runs right after the same other one.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tollway.bench import cpu, metering_stats, redis_stats, wrk
from tollway.bench.errors import BenchError
from tollway.bench.scenarios import PREPAID_GRANT_MICROS, Header, Scenario, Stack
from tollway.harness.errors import HarnessError
from tollway.harness.processes import LogSource

PROBE_PATH: Final = "/bench"
_PROBE_TIMEOUT_S: Final = 5.0
_EXT_AUTHZ_STATS: Final = "ext_authz"
_LOG_TAIL_LINES: Final = 15
_RATELIMIT_HEADERS: Final = ("ratelimit", "ratelimit-policy")
_AUTHZ_ROLE: Final = "authz"
_REQUESTS_STAT: Final = "http.ingress.downstream_rq_completed"
_ACCESS_LOG_PREFIX: Final = "access_logs.grpc_access_log."


@dataclass(frozen=True, slots=True)
class Options:
    threads: int = 2
    connections: int = 32
    duration_s: int = 8
    warmup_s: int = 2
    rounds: int = 1
    max_errors: int = 10
    """Socket errors, or responses of 400+, tolerated per wrk run before the run is declared broken."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured window of one scenario."""

    scenario: str
    result: wrk.WrkResult
    cpu_us_per_request: dict[str, float | None]
    ext_authz: dict[str, int] | None
    """Envoy's ext_authz counters (ok, denied, error, ...) over the window; None without the filter."""
    redis: redis_stats.RedisUsage | None = None
    """Valkey round trips and limiter checks over the window; None without a Valkey."""
    authz_threads_us_per_request: dict[str, float] | None = None
    """The authorization server's CPU split into ``main`` (its event loop thread) and ``other`` threads."""
    metering: metering_stats.MeteringUsage | None = None
    """What Tollway metered (row E); None for rows without metering."""
    money: dict[str, int] | None = None
    """Row G: admitted requests (all time), the price and the balance burned (checked equal)."""


def probe_response(url: str, headers: Sequence[Header]) -> tuple[int, frozenset[str]]:
    """One GET through Envoy: the HTTP status and the (lower-case) response header names. Error statuses
    are returned, never raised."""
    request = urllib.request.Request(url, headers=dict(headers))  # noqa: S310 - a loopback http URL we built
    try:
        with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S) as response:  # noqa: S310
            response.read()
            return int(response.status), frozenset(name.lower() for name in response.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), frozenset(name.lower() for name in exc.headers)
    except OSError as exc:
        raise BenchError(f"probe GET {url} failed: {exc}") from exc


def probe(url: str, headers: Sequence[Header]) -> int:
    """One GET through Envoy; return the HTTP status (errors are statuses too, never raised)."""
    return probe_response(url, headers)[0]


def check_stack(stack: Stack, key: str) -> None:
    url = stack.envoy.base_url + PROBE_PATH
    status, names = probe_response(url, stack.headers)
    if status != 200:
        what = "with the credential " if stack.needs_credential else ""
        raise BenchError(f"{key}: probe GET {PROBE_PATH} {what}answered {status}, expected 200")
    missing = [name for name in _RATELIMIT_HEADERS if name not in names] if stack.checks_limits else []
    if missing:
        raise BenchError(f"{key}: probe GET {PROBE_PATH} answered 200 without {', '.join(missing)}: no limits checked")
    if stack.needs_credential:
        status = probe(url, ())
        if status != 401:
            raise BenchError(f"{key}: probe GET {PROBE_PATH} without a key answered {status}, expected 401")


def check_errors(key: str, phase: str, result: wrk.WrkResult, max_errors: int) -> None:
    errors = result.errors
    if errors.status > max_errors:
        raise BenchError(
            f"{key}: {phase}: {errors.status} of {result.requests} responses had status >= 400 (allowed {max_errors})"
        )
    if errors.socket > max_errors:
        raise BenchError(
            f"{key}: {phase}: {errors.socket} socket errors (connect {errors.connect}, read {errors.read}, "
            f"write {errors.write}, timeout {errors.timeout}; allowed {max_errors})"
        )


def _ext_authz_counters(stack: Stack) -> dict[str, int]:
    prefix = f"http.ingress.{_EXT_AUTHZ_STATS}."
    stats = stack.envoy.stats(rf"^http\.ingress\.{_EXT_AUTHZ_STATS}\.")
    return {name[len(prefix) :]: value for name, value in stats.items() if name.startswith(prefix)}


def _decisions(stack: Stack) -> int:
    """Checks Tollway answered with a verdict since Envoy started (each wrote one decision row)."""
    counters = _ext_authz_counters(stack)
    return counters.get("ok", 0) + counters.get("denied", 0)


def _metering_sampler(stack: Stack) -> Callable[[], metering_stats.MeteringCounters] | None:
    url = stack.health_url
    if url is None:
        return None
    return lambda: metering_stats.read(url, decisions=_decisions(stack))


def _metering(
    stack: Stack,
    key: str,
    sample: Callable[[], metering_stats.MeteringCounters],
    before: metering_stats.MeteringCounters,
    at_end: metering_stats.MeteringCounters,
    window_requests: int,
) -> metering_stats.MeteringUsage:
    """Wait for the loader to catch up, then what was metered; raises when nothing was."""
    settled, catch_up_s = metering_stats.settle(sample)
    requests_total = stack.envoy.stats(rf"^{re.escape(_REQUESTS_STAT)}$").get(_REQUESTS_STAT, 0)
    access_log_stats = stack.envoy.stats(f"^{re.escape(_ACCESS_LOG_PREFIX)}")
    envoy_log = {name.removeprefix(_ACCESS_LOG_PREFIX): value for name, value in access_log_stats.items()}
    metered = metering_stats.usage(
        before,
        at_end,
        settled,
        catch_up_s=catch_up_s,
        requests_total=requests_total,
        window_requests=window_requests,
        envoy_access_log=dict(sorted(envoy_log.items())),
    )
    metering_stats.check(key, metered)
    return metered


def _thread_split(
    before: tuple[float, float] | None, after: tuple[float, float] | None, requests: int
) -> dict[str, float] | None:
    if before is None or after is None or requests <= 0:
        return None
    main = (after[1] - before[1]) / requests
    # Two reads of clock ticks (10 ms): the difference may come out a hair below zero.
    return {"main": main, "other": max(0.0, (after[0] - before[0]) / requests - main)}


def _require_alive(stack: Stack, key: str) -> None:
    for role, process in stack.processes.items():
        if not process.is_running():
            raise BenchError(f"{key}: the {role} process ({process.name}) exited with status {process.returncode}")


def measure(stack: Stack, scenario: Scenario, options: Options, script: Path) -> Measurement:
    url = stack.envoy.base_url + PROBE_PATH
    check_stack(stack, scenario.key)
    sample_metering = _metering_sampler(stack)
    if sample_metering is not None:
        # The probes' rows open the embedded ClickHouse (and apply its migrations) on the loader's
        # first insert: a one-off start-up cost, paid here rather than inside the warm-up or the window.
        opened, _ = metering_stats.settle(sample_metering)
        if opened.rows_loaded == 0:
            raise BenchError(f"{scenario.key}: the loader loaded none of the probes' rows ({opened.loader_last_error})")

    def load(duration_s: int) -> wrk.WrkResult:
        return wrk.run(
            url,
            threads=options.threads,
            connections=options.connections,
            duration_s=duration_s,
            script=script,
            headers=stack.headers,
        )

    if options.warmup_s > 0:
        check_errors(scenario.key, "warm-up", load(options.warmup_s), options.max_errors)
    _require_alive(stack, scenario.key)
    pids = stack.pids
    authz_pid = pids.get(_AUTHZ_ROLE)
    sampler = redis_stats.RedisSampler(stack.redis_url).open() if stack.redis_url is not None else None
    try:
        metering_before = sample_metering() if sample_metering is not None else None
        stats_before = _ext_authz_counters(stack) if scenario.has_ext_authz else None
        redis_before = sampler.sample() if sampler is not None else None
        threads_before = cpu.main_thread_split(authz_pid) if authz_pid is not None else None
        cpu_before = cpu.sample(pids)
        result = load(options.duration_s)
        cpu_after = cpu.sample(pids)
        threads_after = cpu.main_thread_split(authz_pid) if authz_pid is not None else None
        redis_after = sampler.sample() if sampler is not None else None
        stats_after = _ext_authz_counters(stack) if scenario.has_ext_authz else None
        metering_at_end = sample_metering() if sample_metering is not None else None
    finally:
        if sampler is not None:
            sampler.close()
    check_errors(scenario.key, "measured run", result, options.max_errors)
    ext_authz = None
    if stats_before is not None and stats_after is not None:
        ext_authz = {name: value - stats_before.get(name, 0) for name, value in sorted(stats_after.items())}
        if ext_authz.get("ok", 0) < result.requests * 0.95:
            raise BenchError(
                f"{scenario.key}: Envoy counted {ext_authz.get('ok', 0)} admitted ext_authz checks for "
                f"{result.requests} requests: the authorization server is not in the path"
            )
    usage = None
    if redis_before is not None and redis_after is not None:
        usage = redis_stats.usage(redis_before, redis_after, (ext_authz or {}).get("ok", 0))
        if stack.checks_limits and usage.quota_units < usage.admitted * 0.95:
            raise BenchError(
                f"{scenario.key}: Valkey's quota counters consumed {usage.quota_units} units for "
                f"{usage.admitted} admitted requests: the limiter is not in the path"
            )
    money = _burned(stack, scenario.key) if stack.price_micros else None
    metered = None
    if sample_metering is not None and metering_before is not None and metering_at_end is not None:
        metered = _metering(stack, scenario.key, sample_metering, metering_before, metering_at_end, result.requests)
    return Measurement(
        scenario=scenario.key,
        result=result,
        cpu_us_per_request=cpu.per_request(cpu_before, cpu_after, result.requests),
        ext_authz=ext_authz,
        redis=usage,
        authz_threads_us_per_request=_thread_split(threads_before, threads_after, result.requests),
        metering=metered,
        money=money,
    )


_LEASES_ENDED_S: Final = 0.5
"""Long enough for every capacity lease to end and give back its unused units (lease ≤ 100 ms, swept
every 50 ms)."""


def _burned(stack: Stack, key: str) -> dict[str, int]:
    """Row G: once the leases have given back what they did not hand out, the balance burned in Valkey
    must be exactly every admitted request (the quota counters, warm-up included) × the price."""
    assert stack.redis_url is not None
    time.sleep(_LEASES_ENDED_S)
    sampler = redis_stats.RedisSampler(stack.redis_url).open()
    try:
        admitted = sampler.sample().quota_units
        balance = sampler.prepaid_balance_micros()
    finally:
        sampler.close()
    burned = PREPAID_GRANT_MICROS - balance
    if burned != admitted * stack.price_micros:
        raise BenchError(
            f"{key}: Valkey burned {burned} micro-units of the balance for {admitted} admitted requests at "
            f"{stack.price_micros} each ({admitted * stack.price_micros}): the burn is not exact"
        )
    return {"admitted_requests": admitted, "price_micros": stack.price_micros, "burned_micros": burned}


def _with_logs(error: Exception, logs: Sequence[LogSource]) -> BenchError:
    parts = [str(error)]
    for source in logs:
        tail = source.log_tail(_LOG_TAIL_LINES).strip()
        if tail:
            parts.append(f"--- last lines of {source.name} ---\n{tail}")
    return BenchError("\n".join(parts))


def run_scenario(scenario: Scenario, options: Options, work_dir: Path, script: Path) -> Measurement:
    """Start the scenario's processes, measure once, stop them all (also on errors and Ctrl-C)."""
    logs: Sequence[LogSource] = ()
    with ExitStack() as stack:
        try:
            running = scenario.start(stack, work_dir)
            logs = list(running.processes.values())
            return measure(running, scenario, options, script)
        except (BenchError, HarnessError) as exc:
            raise _with_logs(exc, logs) from exc


def run_all(
    scenarios: Sequence[Scenario],
    options: Options,
    work_dir: Path,
    on_measurement: Callable[[int, Measurement], None] | None = None,
) -> dict[str, list[Measurement]]:
    """Every scenario ``options.rounds`` times, interleaved; measurements grouped by scenario key."""
    script = wrk.write_done_script(work_dir)
    measurements: dict[str, list[Measurement]] = {s.key: [] for s in scenarios}
    for round_index in range(options.rounds):
        for scenario in scenarios if round_index % 2 == 0 else reversed(scenarios):
            measurement = run_scenario(scenario, options, work_dir, script)
            measurements[scenario.key].append(measurement)
            if on_measurement is not None:
                on_measurement(round_index, measurement)
    return measurements
