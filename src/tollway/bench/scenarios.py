"""The benchmark rows and how to start each one's processes (and only those) on fresh loopback ports.

Every Envoy here runs the repository's template with all routes turned into ``direct_response``, so
the numbers are Envoy plus the authorization path and nothing upstream. Row D runs Tollway with the
bench catalog (``catalog.yaml`` beside this module): the bench customer is subscribed to a plan that
grants ``GET /bench`` through a feature, with two rate limits and a monthly quota that never refuse.
Row F is row D authenticated with an OAuth bearer token (a JWT from a throwaway issuer with a static key,
``bench_token``) instead of an API key: the same token on every request, so it measures the cached-token
path. Row E is row D with stage 3 on, as deployed: ``TOLLWAY_SPOOL_DIR`` for the checking ``tollway serve``
(decision rows), and ``tollway meter`` beside it taking Envoy's gRPC access log and loading the spool into
an embedded ClickHouse (chdb) in the work directory.

The access log is part of the product's Envoy config, but only row E has a server for it: every other
row removes it from the connection manager, and with it the ext_authz dynamic metadata that only the
access log reads (``without_metering``, as a deployment without metering would), so no row pays for
Envoy retrying a dead log server, and row E's cost over row D is exactly what metering adds.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tollway.bench.bench_token import bench_issuer
from tollway.bench.errors import BenchError
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.ports import LOOPBACK, free_port, free_ports
from tollway.harness.processes import ManagedProcess
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

Header = tuple[str, str]

ENVOY_CONCURRENCY: Final = 2
_CLI_TIMEOUT_S: Final = 30.0
BENCH_CATALOG: Final = Path(__file__).with_name("catalog.yaml")
BENCH_PLAN: Final = "bench"
PREPAID_PLAN: Final = "bench-prepaid"  # row G
PREPAID_PRICE_MICROS: Final = 100  # 0.0001 USD per request (the bench catalog's bench-prepaid plan)
PREPAID_GRANT: Final = "1000000000"  # USD: a balance no run can exhaust
PREPAID_GRANT_MICROS: Final = 10**15
BENCH_CUSTOMER: Final = "bench"
_CLUSTER_FOR_VARIANT: Final = {"http": "tollway_http", "grpc": "tollway_grpc"}
METERING_CLUSTER: Final = "tollway_metering"
METERING_DATABASE: Final = "tollway"


@dataclass(slots=True)
class Stack:
    """One scenario's running processes: what wrk targets and which pids to account CPU to."""

    envoy: EnvoyProcess
    processes: dict[str, ManagedProcess]
    """Role (``envoy``, ``authz``, ``valkey``) to process; CPU is accounted per role."""
    headers: tuple[Header, ...] = ()
    """Sent on every request (the API key, or row F's bearer token, for Tollway rows)."""
    needs_credential: bool = False
    """True when a request without ``headers`` must be refused (401): proves the check is in the path."""
    checks_limits: bool = False
    """True when every admitted request costs one limiter check (stage 2): an admitted probe must carry
    the RateLimit headers, and Valkey must count about one EVALSHA per admitted request."""
    price_micros: int = 0
    """Row G: what each admitted request burns from the prepaid balance (micro-units of USD); after the
    run, the balance burned in Valkey must equal the admitted requests (the quota counters) × this."""
    redis_url: str | None = None
    """The Valkey behind the authorization server, sampled around the window (round trips, checks)."""
    health_url: str | None = None
    """Tollway's ``/healthz`` when it meters (row E): its metering counters are read around the window."""

    @property
    def pids(self) -> dict[str, int]:
        return {role: process.pid for role, process in self.processes.items()}


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    description: str
    start: Callable[[ExitStack, Path], Stack]
    has_ext_authz: bool = True


def without_metering(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy without stage 3's parts, for rows that do not meter: every HTTP connection manager's
    ``access_log`` (no server listens for the stream, and Envoy would keep reconnecting to it) and the
    ext_authz ``dynamic_metadata_from_headers`` (the metadata only the access log reads)."""
    result: dict[str, Any] = copy.deepcopy(cfg)
    for listener in result.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                typed_config = network_filter.get("typed_config")
                if network_filter.get("name") != envoy_config.HCM_FILTER or not isinstance(typed_config, dict):
                    continue
                typed_config.pop("access_log", None)
                for http_filter in typed_config.get("http_filters", []):
                    if http_filter.get("name") == envoy_config.EXT_AUTHZ_FILTER:
                        service = http_filter.get("typed_config", {}).get("http_service", {})
                        service.get("authorization_response", {}).pop("dynamic_metadata_from_headers", None)
    return result


def _envoy(
    stack: ExitStack,
    work_dir: Path,
    name: str,
    variant: str,
    authz: tuple[str, int] | None,
    metering: tuple[str, int] | None = None,
) -> EnvoyProcess:
    """Start Envoy on ``variant``'s template: ext_authz pointing at ``authz``, or removed when None; the
    access log streaming to ``metering``, or removed when None."""
    listener_port, admin_port = free_ports(2)
    endpoints = {_CLUSTER_FOR_VARIANT[variant]: [authz]} if authz is not None else {}
    if metering is not None:
        endpoints[METERING_CLUSTER] = [metering]
    config = envoy_config.render(
        envoy_config.template_path(variant), listener_port=listener_port, admin_port=admin_port, endpoints=endpoints
    )
    if authz is None:
        config = envoy_config.without_ext_authz(config)
    if metering is None:
        config = without_metering(config)
    config = envoy_config.with_direct_response(config)
    envoy = EnvoyProcess(config, work_dir, name=name, concurrency=ENVOY_CONCURRENCY)
    stack.callback(envoy.stop)  # registered before start: a start that fails half-way is still cleaned up
    envoy.start()
    return envoy


def _python_server(stack: ExitStack, work_dir: Path, name: str, module: str) -> tuple[ManagedProcess, int]:
    """Start ``python -m <module> --port N`` and wait until it accepts connections."""
    port = free_port()
    process = ManagedProcess(
        [sys.executable, "-m", module, "--host", LOOPBACK, "--port", str(port)], log_dir=work_dir, name=name
    )
    stack.callback(process.stop)
    process.start()
    process.wait_for_tcp(LOOPBACK, port, timeout=15.0)
    return process, port


def start_envoy_alone(stack: ExitStack, work_dir: Path) -> Stack:
    envoy = _envoy(stack, work_dir, "envoy-A", "http", None)
    return Stack(envoy=envoy, processes={"envoy": envoy.process})


def _start_noop(stack: ExitStack, work_dir: Path, key: str, variant: str, module: str) -> Stack:
    server, port = _python_server(stack, work_dir, f"noop-{variant}", module)
    envoy = _envoy(stack, work_dir, f"envoy-{key}", variant, (LOOPBACK, port))
    return Stack(envoy=envoy, processes={"envoy": envoy.process, "authz": server})


def start_noop_grpc(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_noop(stack, work_dir, "B", "grpc", "tollway.bench.noop_grpc")


def start_noop_http(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_noop(stack, work_dir, "H", "http", "tollway.bench.noop_http")


def _tollway_cli(redis_url: str, pepper: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m tollway <args>`` against ``redis_url`` (``env``: more settings); return its stdout
    (which may hold a secret: never echoed, and neither is argv)."""
    env = {**os.environ, "TOLLWAY_REDIS_URL": redis_url, "TOLLWAY_PEPPER": pepper, **(env or {})}
    what = f"`tollway {' '.join(args[:2])}`"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "tollway", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} did not finish within {exc.timeout:.0f}s") from exc
    if completed.returncode != 0:
        raise BenchError(f"{what} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


def create_key(redis_url: str, pepper: str, customer: str = BENCH_CUSTOMER) -> str:
    """Create an API key with the ``tollway keys`` CLI and return the secret (never printed)."""
    stdout = _tollway_cli(redis_url, pepper, "keys", "create", "--customer", customer, "--json")
    try:
        secret = json.loads(stdout)["api_key"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError("`tollway keys create --json` printed no api_key") from exc
    if not isinstance(secret, str) or not secret:
        raise BenchError("`tollway keys create --json` printed an empty api_key")
    return secret


def subscribe(redis_url: str, pepper: str, customer: str, plan: str, catalog: Path) -> None:
    """Subscribe ``customer`` to ``plan`` with the ``tollway subscriptions`` CLI (checked against ``catalog``)."""
    args = ("subscriptions", "set", "--customer", customer, "--plan", plan, "--catalog", str(catalog), "--json")
    _tollway_cli(redis_url, pepper, *args)


def fund(redis_url: str, pepper: str, work_dir: Path, key: str) -> None:
    """Row G's balance: one grant the run cannot exhaust (its ledger entry goes to a throwaway embedded
    ClickHouse in the work directory)."""
    ledger = Path(tempfile.mkdtemp(prefix=f"ledger-{key}-", dir=work_dir)).resolve()
    args = ("credits", "grant", BENCH_CUSTOMER, PREPAID_GRANT, "--unit", "USD", "--catalog", str(BENCH_CATALOG))
    _tollway_cli(redis_url, pepper, *args, env={"TOLLWAY_CLICKHOUSE_DSN": f"chdb://{ledger / 'chdb'}"})


def metering_env(work_dir: Path, key: str) -> dict[str, str]:
    """Stage 3 for one run: a fresh spool and a fresh embedded ClickHouse (one chdb path per process) in
    the work directory, loaded by the loader inside ``tollway serve``."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"metering-{key}-", dir=work_dir)).resolve()
    return {
        "TOLLWAY_SPOOL_DIR": str(run_dir / "spool"),
        "TOLLWAY_LOADER": "auto",
        "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{run_dir / 'chdb'}",
        "TOLLWAY_CLICKHOUSE_DATABASE": METERING_DATABASE,
    }


def _start_tollway(
    stack: ExitStack,
    work_dir: Path,
    key: str,
    variant: str,
    *,
    entitled: bool = False,
    metered: bool = False,
    token: bool = False,
    prepaid: bool = False,
    alerts: bool = False,
) -> Stack:
    """Valkey, ``tollway serve`` and Envoy; ``entitled`` adds stage 2 (the bench catalog and a subscription),
    ``alerts`` alert thresholds on every limit and quota of the plan and a webhook dispatcher beside,
    ``metered`` stage 3 (spool, loader into chdb, Envoy's access log to Tollway's metering port), ``token``
    authenticates with a bearer JWT instead of the API key."""
    valkey = ValkeyServer(work_dir, name=f"valkey-{key}")
    stack.callback(valkey.stop)
    valkey.start()
    pepper = secrets.token_hex(32)  # a fresh throwaway pepper per run; never printed
    catalog = alerts_catalog(work_dir) if alerts else BENCH_CATALOG
    extra_env = {"TOLLWAY_CATALOG": str(catalog)} if entitled else {}
    meter: TollwayServer | None = None
    if metered:
        # Two processes, as deployed: `tollway meter` (access log, loader) beside a `tollway serve` that only
        # checks, and writes every decision row to the same spool before answering.
        extra_env.update(metering_env(work_dir, key))
        meter = TollwayServer(
            work_dir, redis_url=valkey.url, pepper="", extra_env=extra_env, name=f"tollway-meter-{key}", command="meter"
        )
        stack.callback(meter.stop)
        meter.start()
        extra_env.update({"TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"})
    bearer = None
    if token:
        issuers, bearer = bench_issuer(Path(tempfile.mkdtemp(prefix=f"issuer-{key}-", dir=work_dir)), BENCH_CUSTOMER)
        extra_env["TOLLWAY_JWT_ISSUERS"] = str(issuers)
    tollway = TollwayServer(work_dir, redis_url=valkey.url, pepper=pepper, extra_env=extra_env, name=f"tollway-{key}")
    stack.callback(tollway.stop)
    tollway.start()
    api_key = create_key(valkey.url, pepper)
    if entitled:
        subscribe(valkey.url, pepper, BENCH_CUSTOMER, PREPAID_PLAN if prepaid else BENCH_PLAN, catalog)
    if prepaid:
        fund(valkey.url, pepper, work_dir, key)
    authz = tollway.http_endpoint if variant == "http" else tollway.grpc_endpoint
    metering = meter.metering_endpoint if meter is not None else None
    envoy = _envoy(stack, work_dir, f"envoy-{key}", variant, authz, metering)
    valkey_process = valkey.process
    if valkey_process is None:  # start() succeeded, so this cannot happen
        raise BenchError("valkey has no process after start")
    processes = {"envoy": envoy.process, "authz": tollway.process, "valkey": valkey_process}
    if meter is not None:
        processes["metering"] = meter.process
    if alerts:
        processes["dispatcher"] = _dispatcher(stack, work_dir, key, valkey.url, pepper)
    return Stack(
        envoy=envoy,
        processes=processes,
        headers=(("Authorization", f"Bearer {bearer or api_key}"),),
        needs_credential=True,
        checks_limits=entitled,
        price_micros=PREPAID_PRICE_MICROS if prepaid else 0,
        redis_url=valkey.url,
        health_url=f"http://{LOOPBACK}:{meter.admin_port}/healthz" if meter is not None else None,
    )


ALERT_LEVELS: Final = (50, 80, 100)


def alerts_catalog(work_dir: Path) -> Path:
    """Row D's catalog with ``alerts: [50, 80, 100]`` (percent) on each limit and quota of its plan: every
    check also evaluates the thresholds in the limiter script (none is crossed: the limits are never near)."""
    import yaml

    document = yaml.safe_load(BENCH_CATALOG.read_text(encoding="utf-8"))
    plan = document["plans"][BENCH_PLAN]
    for rule in [*plan.get("limits", []), *plan.get("quotas", [])]:
        rule["alerts"] = list(ALERT_LEVELS)
    path = Path(work_dir) / "catalog-alerts.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _dispatcher(stack: ExitStack, work_dir: Path, key: str, redis_url: str, pepper: str) -> ManagedProcess:
    """``tollway dispatch`` (deliveries only: ClickHouse is not part of this row) on the row's Valkey, with
    the row's pepper (it opens the endpoints' sealed secrets)."""
    env = {
        "TOLLWAY_REDIS_URL": redis_url,
        "TOLLWAY_PEPPER": pepper,
        "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TOLLWAY_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "tollway", "dispatch", "--no-history"]
    process = ManagedProcess(argv, log_dir=Path(work_dir), name=f"dispatcher-{key}", env=env)
    stack.callback(process.stop)
    process.start()
    return process


def start_tollway_alerts(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "Dn", "http", entitled=True, alerts=True)


def start_tollway_http(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "C", "http")


def start_tollway_grpc(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "Cg", "grpc")


def start_tollway_entitled(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "D", "http", entitled=True)


def start_tollway_token(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "F", "http", entitled=True, token=True)


def start_tollway_prepaid(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "G", "http", entitled=True, prepaid=True)


def start_tollway_metered(stack: ExitStack, work_dir: Path) -> Stack:
    return _start_tollway(stack, work_dir, "E", "http", entitled=True, metered=True)


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("A", "Envoy alone: no ext_authz filter, direct_response", start_envoy_alone, has_ext_authz=False),
    Scenario("B", "Envoy + gRPC ext_authz -> no-op grpc.aio server (uvloop) answering OK", start_noop_grpc),
    Scenario("H", "Envoy + HTTP ext_authz -> no-op server on Tollway's HTTP stack answering 200", start_noop_http),
    Scenario("C", "Envoy + HTTP ext_authz -> tollway serve, API key auth (Valkey)", start_tollway_http),
    Scenario("Cg", "Envoy + gRPC ext_authz -> tollway serve, API key auth (Valkey)", start_tollway_grpc),
    Scenario(
        "D",
        "Envoy + HTTP ext_authz -> tollway serve, API key + plan: route, 2 rate limits, monthly quota (Valkey)",
        start_tollway_entitled,
    ),
    Scenario(
        "Dn",
        "D with alert thresholds (50/80/100 %) on every limit and quota and a webhook dispatcher running",
        start_tollway_alerts,
    ),
    Scenario(
        "G",
        "D with its plan prepaid: 0.0001 USD per request burned from a balance in the same script call",
        start_tollway_prepaid,
    ),
    Scenario(
        "F",
        "D authenticated with a cached OAuth bearer token (ES256 JWT) instead of an API key",
        start_tollway_token,
    ),
    Scenario(
        "E",
        "D + metering: decision rows to the spool, Envoy's gRPC access log, loader into embedded ClickHouse",
        start_tollway_metered,
    ),
)
SCENARIO_KEYS: Final = tuple(s.key for s in SCENARIOS)
PENDING_KEYS: Final[frozenset[str]] = frozenset()
"""Rows not run by default (none now)."""
DEFAULT_KEYS: Final = tuple(k for k in SCENARIO_KEYS if k not in PENDING_KEYS)


def select(keys: Sequence[str]) -> list[Scenario]:
    """Scenarios by key, in the canonical order; unknown keys are an error."""
    unknown = sorted(set(keys) - set(SCENARIO_KEYS))
    if unknown:
        raise BenchError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIO_KEYS)}")
    return [s for s in SCENARIOS if s.key in keys]
