"""``python -m tollway.bench``: measure every row, print the table and ratios, write the JSON."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

from tollway.bench import billing_throughput, loader_throughput, report, runner, scenarios, webhook_throughput, wrk
from tollway.bench.errors import BenchError
from tollway.harness.envoy import envoy_binary
from tollway.harness.errors import HarnessError

_BUDGET_S: Final = 300.0
_STARTUP_ESTIMATE_S: Final = 2.0  # per scenario: Valkey, Tollway, CLI calls, Envoy, probe (~1 s measured)
_METERING_ESTIMATE_S: Final = 4.0  # row E: the embedded ClickHouse opening, the loader catching up
_LOADER_ROWS_PER_S_ESTIMATE: Final = 40_000  # rows generated, spooled and loaded per second of wall time
_BILLING_ROWS_PER_S_ESTIMATE: Final = 500_000  # rows generated (most of it), aggregated, priced, twice
_WEBHOOKS_PER_S_ESTIMATE: Final = 2_000  # events emitted, queued and delivered per second of wall time
_BILLING_STARTUP_ESTIMATE_S: Final = 10.0  # engine, merges settling, pricing and storing 10,000 invoices


def envoy_version() -> str:
    completed = subprocess.run(
        [str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"/(\d+\.\d+\.\d+)/", completed.stdout + completed.stderr)
    if match is None:
        raise BenchError(f"cannot read Envoy's version from {completed.stdout.strip()!r}")
    return match.group(1)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tollway.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results file")
    parser.add_argument("--duration", type=_positive, default=8, help="measured seconds per row (default 8)")
    parser.add_argument("--warmup", type=_non_negative, default=2, help="warm-up seconds, not measured (default 2)")
    parser.add_argument("--connections", type=_positive, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=_positive, default=2, help="wrk threads (default 2)")
    parser.add_argument("--rounds", type=_positive, default=1, help="rounds, interleaved; medians are reported")
    parser.add_argument("--max-errors", type=_non_negative, default=10, help="tolerated errors per wrk run")
    parser.add_argument(
        "--scenarios",
        default=",".join(scenarios.DEFAULT_KEYS),
        help=f"comma-separated rows to run (default {','.join(scenarios.DEFAULT_KEYS)}; "
        f"also: {','.join(sorted(scenarios.PENDING_KEYS))})",
    )
    parser.add_argument(
        "--loader",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the loader's throughput, spool to embedded ClickHouse (default: on)",
    )
    parser.add_argument(
        "--loader-rows",
        type=_positive,
        default=loader_throughput.DEFAULT_ROWS,
        help=f"usage rows for the loader measurement (default {loader_throughput.DEFAULT_ROWS:,})",
    )
    parser.add_argument(
        "--billing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure billing over generated usage: aggregation and pricing (default: on)",
    )
    parser.add_argument(
        "--billing-rows",
        type=_positive,
        default=billing_throughput.DEFAULT_ROWS,
        help=f"usage rows for the billing measurement (default {billing_throughput.DEFAULT_ROWS:,}; "
        f"{billing_throughput.DEFAULT_CUSTOMERS:,} customers)",
    )
    parser.add_argument(
        "--webhooks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the webhook dispatcher delivering to a local receiver (default: on)",
    )
    parser.add_argument(
        "--webhook-events",
        type=_positive,
        default=webhook_throughput.DEFAULT_EVENTS,
        help=f"events for the webhook measurement (default {webhook_throughput.DEFAULT_EVENTS:,})",
    )
    parser.add_argument("--work-dir", type=Path, help="keep process logs here (default: a temporary directory)")
    return parser


def _terminate_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through every ExitStack, stopping what was started

    signal.signal(signal.SIGTERM, handler)


def _progress(round_index: int, measurement: runner.Measurement) -> None:
    result = measurement.result
    cpu = ", ".join(f"{role} {v:.1f}" for role, v in measurement.cpu_us_per_request.items() if v is not None)
    print(
        f"  round {round_index + 1} {measurement.scenario:<3} {result.requests_per_s:>10,.0f} req/s  "
        f"p50 {result.latency_us['p50'] / 1000:.2f} ms  p99 {result.latency_us['p99'] / 1000:.2f} ms  "
        f"CPU µs/req: {cpu}",
        flush=True,
    )


def _loader_progress(result: Mapping[str, object]) -> None:
    print(
        f"  loader  {result['rows_per_s']:>12,.0f} rows/s  {result['rows']:,} rows in {result['seconds']} s  "
        f"{result['batches']} batches  peak RSS +{result['rss_growth_mib']} MiB",
        flush=True,
    )


def _billing_progress(result: Mapping[str, object]) -> None:
    print(
        f"  billing {result['rows_per_s']:>12,.0f} rows/s  {result['rows']:,} rows in {result['seconds']} s  "
        f"(aggregation {result['aggregation_s']} s, pricing {result['pricing_s']} s)  "
        f"{result['invoices_priced']:,} invoices",
        flush=True,
    )


def _webhooks_progress(result: Mapping[str, object]) -> None:
    print(
        f"  webhooks {result['webhooks_per_s']:>11,.0f} deliveries/s  {result['events']:,} events in "
        f"{result['seconds']} s  {result['cpu_us_per_delivery']} CPU µs each  peak RSS +{result['rss_growth_mib']} MiB",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    selected = scenarios.select([k.strip() for k in args.scenarios.split(",") if k.strip()])
    options = runner.Options(
        threads=args.threads,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
        rounds=args.rounds,
        max_errors=args.max_errors,
    )
    wrk_version = wrk.wrk_version()
    envoy = envoy_version()
    estimate = options.rounds * len(selected) * (options.duration_s + options.warmup_s + _STARTUP_ESTIMATE_S)
    estimate += options.rounds * _METERING_ESTIMATE_S * sum(s.key == "E" for s in selected)
    if args.loader:
        estimate += args.loader_rows / _LOADER_ROWS_PER_S_ESTIMATE + _STARTUP_ESTIMATE_S
    if args.billing:
        estimate += args.billing_rows / _BILLING_ROWS_PER_S_ESTIMATE + _BILLING_STARTUP_ESTIMATE_S
    if args.webhooks:
        estimate += args.webhook_events / _WEBHOOKS_PER_S_ESTIMATE + _STARTUP_ESTIMATE_S
    loader_text = f" + loader throughput ({args.loader_rows:,} rows)" if args.loader else ""
    if args.webhooks:
        loader_text += f" + webhook throughput ({args.webhook_events:,} events)"
    if args.billing:
        loader_text += f" + billing throughput ({args.billing_rows:,} rows)"
    print(
        f"tollway bench: wrk {wrk_version} -t{options.threads} -c{options.connections}, "
        f"{options.duration_s} s after {options.warmup_s} s warm-up, {options.rounds} round(s) of "
        f"{' '.join(s.key for s in selected)}{loader_text}; Envoy {envoy} x{scenarios.ENVOY_CONCURRENCY} "
        f"workers; about {estimate:.0f} s",
        flush=True,
    )
    if estimate > _BUDGET_S:
        print(f"  warning: this run will take longer than {_BUDGET_S:.0f} s", flush=True)

    keep = args.work_dir is not None
    work_dir = Path(args.work_dir) if keep else Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    succeeded = False
    loader: dict[str, object] | None = None
    billing: dict[str, object] | None = None
    webhooks: dict[str, object] | None = None
    try:
        measurements = runner.run_all(selected, options, work_dir, on_measurement=_progress)
        if args.loader:
            loader = loader_throughput.measure(work_dir, args.loader_rows)
            _loader_progress(loader)
        if args.billing:
            billing = billing_throughput.measure(work_dir, args.billing_rows)
            _billing_progress(billing)
        if args.webhooks:
            webhooks = webhook_throughput.measure(work_dir, args.webhook_events)
            _webhooks_progress(webhooks)
        succeeded = True
    finally:
        if keep or not succeeded:
            print(f"process logs: {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    results = report.build(
        options=options,
        scenarios=selected,
        measurements=measurements,
        generated_at=generated_at,
        wall_time_s=time.monotonic() - started,
        wrk_version=wrk_version,
        envoy_version=envoy,
        envoy_concurrency=scenarios.ENVOY_CONCURRENCY,
        machine={
            "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        loader=loader,
        billing=billing,
        webhooks=webhooks,
    )
    print()
    print(report.render(results))
    report.write(results, args.out)
    print(f"\nwrote {args.out} (wall time {results['wall_time_s']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _terminate_on_sigterm()
    try:
        return run(args)
    except (BenchError, HarnessError) as exc:
        print(f"tollway bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tollway bench: interrupted; all started processes were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
