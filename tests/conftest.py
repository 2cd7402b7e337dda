"""Shared fixtures: local Valkey, chdb, demo upstream, Envoy and Tollway on free loopback ports.

Every process started here is stopped at teardown; when a test fails, the last lines of the logs of
the processes it used are appended to its report.
"""

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.chdb_engine import ChdbDatabase, ChdbEngine
from tests.support.process_logs import attach_log_tails, register_for_session, register_for_test

# A fixed, test-only pepper (32 bytes, hex). Never used outside tests.
from tests.support.tollway_cli import TEST_PEPPER
from tollway.harness import envoy_config
from tollway.harness.demo_upstream import DemoUpstream
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.ports import free_ports
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_log_tails(item, report)
    return report


# --- Valkey -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def valkey(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """One Valkey for the session (no persistence). Tests may stop/start it; `valkey_fresh` restarts it."""
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"))
    register_for_session(request.config, "valkey", server)
    with server:
        yield server


@pytest.fixture
def valkey_fresh(valkey: ValkeyServer) -> ValkeyServer:
    """The session Valkey, running and empty (FLUSHALL) before the test."""
    import redis

    if valkey.is_running():
        valkey.resume()  # in case an earlier test left it paused (SIGSTOP)
    else:
        valkey.start()
    client = redis.Redis(host=valkey.host, port=valkey.port, socket_timeout=2)
    try:
        client.flushall()
    finally:
        client.close()
    return valkey


# --- chdb (embedded ClickHouse) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def chdb_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEngine]:
    engine = ChdbEngine(tmp_path_factory.mktemp("chdb") / "data")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def chdb_client(chdb_engine: ChdbEngine) -> Any:
    """The single clickhouse-connect client on this process's only chdb path."""
    return chdb_engine.client()


@pytest.fixture
def chdb_db(chdb_engine: ChdbEngine, chdb_client: Any) -> Iterator[ChdbDatabase]:
    """A database of its own for this test, dropped afterwards: ``client, database = chdb_db``."""
    database = chdb_engine.create_database()
    try:
        yield database
    finally:
        chdb_engine.drop_database(database.name)


# --- demo upstream --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUpstream]:
    """The echoing demo upstream API (``tollway.demo.upstream``)."""
    server = DemoUpstream(tmp_path_factory.mktemp("upstream"))
    register_for_session(request.config, "upstream", server)
    with server:
        yield server


# --- Envoy ----------------------------------------------------------------------------------------

Endpoints = Mapping[str, Sequence[tuple[str, int]]]
ConfigTransform = Callable[[envoy_config.EnvoyConfig], envoy_config.EnvoyConfig]


class EnvoyFactory(Protocol):
    def __call__(
        self,
        variant: str = "http",
        *,
        endpoints: Endpoints | None = None,
        ext_authz: bool = True,
        direct_response: bool = False,
        transform: ConfigTransform | None = None,
        concurrency: int = 2,
    ) -> EnvoyProcess: ...


@pytest.fixture
def envoy_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EnvoyFactory]:
    """Start Envoy from ``envoy/envoy-<variant>.yaml`` with patched ports and endpoints.

    ``endpoints`` maps cluster names to (host, port) lists. Unless ``direct_response`` is set or the
    caller names it, the ``upstream`` cluster points at the session demo upstream.
    """
    with ExitStack() as stack:
        counter = 0

        def start(
            variant: str = "http",
            *,
            endpoints: Endpoints | None = None,
            ext_authz: bool = True,
            direct_response: bool = False,
            transform: ConfigTransform | None = None,
            concurrency: int = 2,
        ) -> EnvoyProcess:
            nonlocal counter
            counter += 1
            resolved: dict[str, Sequence[tuple[str, int]]] = dict(endpoints or {})
            if "upstream" not in resolved and not direct_response:
                demo: DemoUpstream = request.getfixturevalue("upstream")
                resolved["upstream"] = [demo.endpoint]
            listener_port, admin_port = free_ports(2)
            cfg = envoy_config.render(
                envoy_config.template_path(variant),
                listener_port=listener_port,
                admin_port=admin_port,
                endpoints=resolved,
            )
            if not ext_authz:
                cfg = envoy_config.without_ext_authz(cfg)
            if direct_response:
                cfg = envoy_config.with_direct_response(cfg)
            if transform is not None:
                cfg = transform(cfg)
            envoy = EnvoyProcess(cfg, tmp_path, name=f"envoy-{variant}-{counter}", concurrency=concurrency)
            register_for_test(request.node, envoy)
            stack.callback(envoy.stop)
            return envoy.start()

        yield start


# --- Tollway --------------------------------------------------------------------------------------


class TollwayFactory(Protocol):
    def __call__(
        self, extra_env: Mapping[str, str] | None = None, *, redis_url: str | None = None
    ) -> TollwayServer: ...


@pytest.fixture
def tollway_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TollwayFactory]:
    """Start ``python -m tollway serve`` on free HTTP and gRPC ports (Redis: the session Valkey).

    Returns a TollwayServer (``.http_port``, ``.grpc_port``, ``.process``), stopped at teardown.
    """
    with ExitStack() as stack:
        counter = 0

        def start(extra_env: Mapping[str, str] | None = None, *, redis_url: str | None = None) -> TollwayServer:
            nonlocal counter
            counter += 1
            if redis_url is None:
                server: ValkeyServer = request.getfixturevalue("valkey")
                redis_url = server.url
            tollway = TollwayServer(
                tmp_path,
                redis_url=redis_url,
                pepper=TEST_PEPPER,
                extra_env=extra_env,
                name=f"tollway-{counter}",
            )
            register_for_test(request.node, tollway)
            stack.callback(tollway.stop)
            return tollway.start()

        yield start


# --- Valkey Cluster (the limiter's cluster tests) -----------------------------------------------------

from tollway.harness.valkey_cluster import ValkeyCluster  # noqa: E402


@pytest.fixture(scope="session")
def valkey_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A 3-master Valkey Cluster for the session (no persistence). Tests keep apart by key prefix."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("valkey-cluster"))
    register_for_session(request.config, "valkey_cluster", cluster)
    with cluster:
        yield cluster
