"""Header names with underscores never reach the upstream: every Envoy config Tollway ships or generates
refuses them (``headers_with_underscores_action: REJECT_REQUEST``).

CGI, WSGI, PHP and many frameworks read ``-`` and ``_`` in header names as the same character, so a
client's ``x_tollway_customer_id: evil`` would arrive next to the ``x-tollway-customer-id`` Tollway set,
and the upstream could read either. The table test finds every Envoy config in the checkout (files, and
YAML embedded in other YAML such as a ConfigMap) and every config the harness, the benchmark and the
deploy derivation build, and checks each HTTP connection manager: a new config without the setting fails
the suite. The end-to-end tests send such headers through real Envoy to real Tollway.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support import deploy
from tests.support.tollway_cli import create_key
from tollway.bench.scenarios import without_metering
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.envoy_body_meters import with_body_meters
from tollway.harness.valkey import ValkeyServer

REPO = deploy.REPO
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
MARKERS = ("HttpConnectionManager", envoy_config.HCM_FILTER)
SKIPPED_DIRS = {"__pycache__", "node_modules", "build", "dist"}
LOOPBACK = "127.0.0.1"


# --- finding every config -------------------------------------------------------------------------


def _connection_managers(node: Any) -> Iterator[dict[str, Any]]:
    """Every HttpConnectionManager in a parsed config, including configs embedded as YAML strings."""
    if isinstance(node, dict):
        if node.get("@type") == HCM_TYPE:
            yield node
        for value in node.values():
            yield from _connection_managers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _connection_managers(item)
    elif isinstance(node, str) and any(marker in node for marker in MARKERS) and "\n" in node:
        for embedded in yaml.safe_load_all(node):  # e.g. a ConfigMap's `envoy.yaml: |` value
            yield from _connection_managers(embedded)


def _config_files() -> list[Path]:
    """Files of the checkout that hold an Envoy HTTP connection manager (YAML or JSON)."""
    found = []
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO)
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in relative.parts):
            continue
        if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        if any(marker in path.read_text(encoding="utf-8", errors="replace") for marker in MARKERS):
            found.append(path)
    return found


def _rendered(variant: str) -> dict[str, Any]:
    return envoy_config.render(
        envoy_config.template_path(variant),
        listener_port=41000,
        admin_port=41001,
        endpoints={f"tollway_{variant}": [(LOOPBACK, 41002)], "upstream": [(LOOPBACK, 41003)]},
    )


def _generated() -> dict[str, dict[str, Any]]:
    """Every config shape the harness, the benchmark, the demo and the deploy derivation build."""
    configs: dict[str, dict[str, Any]] = {"deploy.pod_envoy_config": deploy.pod_envoy_config()}
    for variant in envoy_config.VARIANTS:
        rendered = _rendered(variant)
        configs[f"{variant}: render"] = rendered
        configs[f"{variant}: without_ext_authz"] = envoy_config.without_ext_authz(rendered)
        configs[f"{variant}: with_direct_response"] = envoy_config.with_direct_response(rendered)
        configs[f"{variant}: bench envoy alone"] = envoy_config.with_direct_response(
            without_metering(envoy_config.without_ext_authz(rendered))
        )
        configs[f"{variant}: bench without metering"] = envoy_config.with_direct_response(without_metering(rendered))
        configs[f"{variant}: with_body_meters"] = with_body_meters(rendered, (LOOPBACK, 41004), ["/v1/reports/"])
    return configs


def _all_configs() -> dict[str, Any]:
    configs: dict[str, Any] = {}
    for path in _config_files():
        text = path.read_text(encoding="utf-8")
        configs[str(path.relative_to(REPO))] = list(yaml.safe_load_all(text))
    configs.update(_generated())
    return configs


ALL_CONFIGS = _all_configs()


def test_the_search_finds_the_shipped_configs() -> None:
    """The table below is only as good as the search: it must see the known configs, and the one
    docker-compose.yml mounts into Envoy."""
    assert {
        "envoy/envoy-http.yaml",
        "envoy/envoy-grpc.yaml",
        "envoy/ext-proc-body-meters.yaml",
        "deploy/envoy/envoy.yaml",
    } <= set(ALL_CONFIGS)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounted = [
        volume.split(":", 1)[0].removeprefix("./")
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if isinstance(volume, str) and volume.startswith("./")
    ]
    envoy_configs = [
        source
        for source in mounted
        if (REPO / source).is_file() and any(m in (REPO / source).read_text() for m in MARKERS)
    ]
    assert envoy_configs, "docker-compose.yml mounts an Envoy config"
    assert set(envoy_configs) <= set(ALL_CONFIGS)


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_every_connection_manager_rejects_underscores_in_header_names(name: str) -> None:
    managers = list(_connection_managers(ALL_CONFIGS[name]))
    assert managers, f"{name}: no HTTP connection manager found"
    for manager in managers:
        options = manager.get("common_http_protocol_options") or {}
        assert options.get("headers_with_underscores_action") == "REJECT_REQUEST", (
            f"{name}: HTTP connection manager {manager.get('stat_prefix')!r} lets header names with '_' through"
        )


def test_a_config_without_the_setting_is_caught() -> None:
    """The check itself: a connection manager without the option, or with ALLOW, is found."""
    for options in (
        {},
        {"headers_with_underscores_action": "ALLOW"},
        {"headers_with_underscores_action": "DROP_HEADER"},
    ):
        cfg = {
            "static_resources": {
                "listeners": [
                    {
                        "filter_chains": [
                            {
                                "filters": [
                                    {"typed_config": {"@type": HCM_TYPE, "common_http_protocol_options": options}}
                                ]
                            }
                        ]
                    }
                ]
            }
        }
        embedded = {"kind": "ConfigMap", "data": {"envoy.yaml": yaml.safe_dump(cfg)}}
        for shape in (cfg, embedded):
            (manager,) = _connection_managers(shape)
            assert manager["common_http_protocol_options"].get("headers_with_underscores_action") != "REJECT_REQUEST"


# --- through real Envoy ---------------------------------------------------------------------------


@dataclass
class Stack:
    protocol: str
    envoy: EnvoyProcess
    client: httpx.Client
    key: str

    def reached(self) -> dict[str, int]:
        """Requests that got past Envoy's codec: to the upstream and to Tollway's check."""
        stats = self.envoy.stats(r"cluster\.(upstream|tollway_http|tollway_grpc)\.upstream_rq_total$")
        return {
            "upstream": stats.get("cluster.upstream.upstream_rq_total", 0),
            "tollway": stats.get(f"cluster.tollway_{self.protocol}.upstream_rq_total", 0),
        }


@pytest.fixture(
    params=[pytest.param("http", marks=pytest.mark.integration), pytest.param("grpc", marks=pytest.mark.integration)]
)
def stack(
    request: pytest.FixtureRequest,
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
) -> Iterator[Stack]:
    protocol = request.param
    tollway = tollway_factory()
    endpoint = tollway.http_endpoint if protocol == "http" else tollway.grpc_endpoint
    envoy = envoy_factory(protocol, endpoints={f"tollway_{protocol}": [endpoint]})
    key = str(create_key(valkey_fresh.url, "acme")["api_key"])
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        yield Stack(protocol, envoy, client, key)


def _assert_refused_before_anything(stack: Stack, headers: dict[str, str]) -> None:
    before = stack.reached()
    response = stack.client.get("/v1/items/7", headers=headers)
    assert response.status_code == 400, (headers, response.status_code, response.text)
    assert stack.reached() == before, "the request reached the upstream or Tollway"


def test_a_spoofed_identity_with_underscores_is_refused_and_never_reaches_the_upstream(stack: Stack) -> None:
    admitted = stack.client.get("/v1/items/7", headers={"x-api-key": stack.key})
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["headers"]["x-tollway-customer-id"] == "acme"

    for spoofed in (
        {"x_tollway_customer_id": "evil"},
        {"X_Tollway_Customer_Id": "evil"},
        {"x_tollway_key_id": "key_forged"},
        {"x_tollway_plan": "enterprise"},
        {"x-tollway_customer-id": "evil"},
    ):
        _assert_refused_before_anything(stack, {"x-api-key": stack.key, **spoofed})
    # A credential in a sibling spelling is refused too, valid key or not, with or without another credential.
    _assert_refused_before_anything(stack, {"x_api_key": stack.key})
    _assert_refused_before_anything(stack, {"authorization": f"Bearer {stack.key}", "x_api_key": "tw_x"})
    rejected = stack.envoy.stats("rejected_with_underscores")
    assert sum(rejected.values()) == 7, rejected

    again = stack.client.get("/v1/items/7", headers={"x-api-key": stack.key})
    assert again.status_code == 200, "Envoy keeps serving after the refusals"


TCHARS = "!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyz"
underscored_names = st.builds(
    lambda head, tail: f"{head}_{tail}",
    st.text(alphabet=TCHARS, max_size=20),
    st.text(alphabet=TCHARS + "_", max_size=20),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=underscored_names, value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-=._", max_size=40))
def test_any_header_name_with_an_underscore_is_refused(stack: Stack, name: str, value: str) -> None:
    _assert_refused_before_anything(stack, {"x-api-key": stack.key, name: value})
