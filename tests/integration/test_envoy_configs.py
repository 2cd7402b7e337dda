"""The Envoy templates in envoy/ are valid Envoy 1.40 configs, before and after harness patching."""

from pathlib import Path
from typing import Any

import pytest

from tollway.harness import envoy_config
from tollway.harness.envoy import validate
from tollway.harness.errors import HarnessError

TEMPLATES = sorted(envoy_config.repo_envoy_dir().rglob("*.yaml"))
LOOPBACK = "127.0.0.1"


def _ext_authz(cfg: dict[str, Any]) -> dict[str, Any]:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (authz,) = [f for f in hcm["http_filters"] if f["name"] == envoy_config.EXT_AUTHZ_FILTER]
    return dict(authz["typed_config"])


def _cluster(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    (cluster,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == name]
    return dict(cluster)


def _endpoints(cfg: dict[str, Any], name: str) -> list[tuple[str, int]]:
    lb_endpoints = _cluster(cfg, name)["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in lb_endpoints
    ]


def _rendered(variant: str) -> dict[str, Any]:
    return envoy_config.render(
        envoy_config.template_path(variant),
        listener_port=41000,
        admin_port=41001,
        endpoints={
            f"tollway_{variant}": [(LOOPBACK, 41002), (LOOPBACK, 41003)],
            "upstream": [(LOOPBACK, 41004)],
        },
    )


@pytest.mark.integration
@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_passes_envoy_validate(template: Path) -> None:
    ok, output = validate(template)
    assert ok, output


@pytest.mark.integration
@pytest.mark.parametrize("variant", envoy_config.VARIANTS)
@pytest.mark.parametrize(
    "shape", ["rendered", "without_ext_authz", "direct_response", "envoy_alone_direct", "check_timeout"]
)
def test_rendered_variant_passes_envoy_validate(variant: str, shape: str, tmp_path: Path) -> None:
    cfg = _rendered(variant)
    if shape == "check_timeout":
        cfg = envoy_config.with_check_timeout(cfg, 2.5)
    if shape in ("without_ext_authz", "envoy_alone_direct"):
        cfg = envoy_config.without_ext_authz(cfg)
    if shape in ("direct_response", "envoy_alone_direct"):
        cfg = envoy_config.with_direct_response(cfg, status=204, body="")
    ok, output = validate(envoy_config.write(cfg, tmp_path / f"{variant}-{shape}.yaml"))
    assert ok, output


def test_both_variants_exist() -> None:
    names = {path.name for path in TEMPLATES}
    assert {"envoy-http.yaml", "envoy-grpc.yaml"} <= names


@pytest.mark.parametrize("variant", envoy_config.VARIANTS)
def test_templates_fail_closed_with_503_in_200ms(variant: str) -> None:
    authz = _ext_authz(envoy_config.load(envoy_config.template_path(variant)))
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": 503}
    service = authz["http_service"]["server_uri"] if variant == "http" else authz["grpc_service"]
    assert service["timeout"] == "0.2s"
    allowed = authz["allowed_headers"]["patterns"]
    assert {"exact": "x-api-key"} in allowed
    assert {"exact": "x-request-id"} in allowed
    assert {"prefix": "x-tollway-"} in allowed


@pytest.mark.parametrize("variant", envoy_config.VARIANTS)
def test_a_longer_check_timeout_changes_only_the_copy(variant: str) -> None:
    cfg = _rendered(variant)
    longer = envoy_config.with_check_timeout(cfg, 2.5)
    service = (
        _ext_authz(longer)["http_service"]["server_uri"] if variant == "http" else _ext_authz(longer)["grpc_service"]
    )
    assert service["timeout"] == "2.5s"
    original = _ext_authz(cfg)["http_service"]["server_uri"] if variant == "http" else _ext_authz(cfg)["grpc_service"]
    assert original["timeout"] == "0.2s"
    with pytest.raises(HarnessError):
        envoy_config.with_check_timeout(envoy_config.without_ext_authz(cfg), 2.5)


def test_http_template_sends_original_path_and_filters_response_headers() -> None:
    cfg = envoy_config.load(envoy_config.template_path("http"))
    service = _ext_authz(cfg)["http_service"]
    assert service["path_prefix"] in ("", None)
    assert service["server_uri"]["cluster"] == "tollway_http"
    response = service["authorization_response"]
    assert response["allowed_upstream_headers"]["patterns"] == [{"prefix": "x-tollway-"}]
    assert response["dynamic_metadata_from_headers"]["patterns"] == [{"prefix": "x-tollway-"}]
    on_refusal = {p["exact"] for p in response["allowed_client_headers"]["patterns"]}
    assert on_refusal == {
        "www-authenticate",
        "content-type",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "x-request-id",
    }
    on_success = {p["exact"] for p in response["allowed_client_headers_on_success"]["patterns"]}
    assert on_success == {"ratelimit", "ratelimit-policy", "tollway-usage", "tollway-cost", "tollway-balance"}


def test_grpc_template_speaks_http2_to_the_auth_cluster() -> None:
    """Without HTTP/2 options the gRPC config still validates, yet every Check fails."""
    cfg = envoy_config.load(envoy_config.template_path("grpc"))
    authz = _ext_authz(cfg)
    assert authz["transport_api_version"] == "V3"
    assert authz["include_peer_certificate"] is False
    assert authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "tollway_grpc"
    options = _cluster(cfg, "tollway_grpc")["typed_extension_protocol_options"]
    http_options = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http_options["explicit_http_config"]


def test_render_patches_ports_and_endpoints_without_touching_the_template() -> None:
    template = envoy_config.template_path("http")
    before = template.read_text()
    cfg = _rendered("http")
    assert envoy_config.listener_port(cfg) == 41000
    assert envoy_config.admin_port(cfg) == 41001
    assert _endpoints(cfg, "tollway_http") == [(LOOPBACK, 41002), (LOOPBACK, 41003)]
    assert _endpoints(cfg, "upstream") == [(LOOPBACK, 41004)]
    assert template.read_text() == before


def test_render_rejects_unknown_cluster() -> None:
    with pytest.raises(HarnessError, match="no cluster named 'nope'"):
        envoy_config.render(
            envoy_config.template_path("http"),
            listener_port=1,
            admin_port=2,
            endpoints={"nope": [(LOOPBACK, 3)]},
        )


def test_variants_are_copies() -> None:
    cfg = _rendered("http")
    alone = envoy_config.without_ext_authz(cfg)
    direct = envoy_config.with_direct_response(cfg, status=200, body="ok")
    assert _ext_authz(cfg)  # the original keeps its filter
    hcm = alone["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    route = direct["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]["routes"][0]
    assert route["direct_response"] == {"status": 200, "body": {"inline_string": "ok"}}
    assert "route" not in route
    with pytest.raises(HarnessError):
        envoy_config.without_ext_authz(alone)


def test_envoy_dir_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(envoy_config.ENVOY_DIR_ENV, str(tmp_path))
    assert envoy_config.repo_envoy_dir() == tmp_path
    with pytest.raises(HarnessError, match="not found"):
        envoy_config.template_path("http")
