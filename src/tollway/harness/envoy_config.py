"""Load the Envoy templates in ``envoy/`` and patch them for a local stack.

Patching is structural (on the parsed YAML), never textual: listener and admin ports, the endpoints
of named clusters, and two variants the benchmark needs (no ext_authz; ``direct_response`` routes).
Every function returns a new dict and leaves its input untouched.
"""

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tollway.harness.errors import HarnessError

EnvoyConfig = dict[str, Any]
Endpoint = tuple[str, int]

ENVOY_DIR_ENV = "TOLLWAY_ENVOY_DIR"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
VARIANTS = ("http", "grpc")


def repo_envoy_dir() -> Path:
    """The directory holding the Envoy templates: ``$TOLLWAY_ENVOY_DIR`` or ``<checkout>/envoy``."""
    override = os.environ.get(ENVOY_DIR_ENV)
    # src layout: <repo>/src/tollway/harness/envoy_config.py -> parents[3] is <repo>.
    directory = Path(override) if override else Path(__file__).resolve().parents[3] / "envoy"
    if not directory.is_dir():
        raise HarnessError(
            f"Envoy template directory {directory} not found; set {ENVOY_DIR_ENV} when not running from a checkout"
        )
    return directory


def template_path(variant: str) -> Path:
    """Path of ``envoy-<variant>.yaml`` (variant is "http" or "grpc")."""
    if variant not in VARIANTS:
        raise HarnessError(f"unknown Envoy variant {variant!r}; expected one of {VARIANTS}")
    path = repo_envoy_dir() / f"envoy-{variant}.yaml"
    if not path.is_file():
        raise HarnessError(f"Envoy template {path} not found")
    return path


def load(path: Path) -> EnvoyConfig:
    with Path(path).open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if not isinstance(loaded, dict):
        raise HarnessError(f"{path} is not a YAML mapping")
    return loaded


def write(cfg: Mapping[str, Any], path: Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        yaml.safe_dump(dict(cfg), handle, sort_keys=False)
    return path


def render(
    template: Path,
    *,
    listener_port: int,
    admin_port: int,
    endpoints: Mapping[str, Sequence[Endpoint]],
    listener_name: str = "ingress",
) -> EnvoyConfig:
    """Load ``template`` and set the listener port, admin port and the endpoints of named clusters.

    ``endpoints`` maps a cluster name to its (host, port) list, e.g.
    ``{"tollway_http": [("127.0.0.1", 40001), ("127.0.0.1", 40002)], "upstream": [("127.0.0.1", 40003)]}``.
    Clusters not named keep their template endpoints.
    """
    cfg = load(template)
    set_admin_port(cfg, admin_port)
    set_listener_port(cfg, listener_name, listener_port)
    for cluster_name, cluster_endpoints in endpoints.items():
        set_cluster_endpoints(cfg, cluster_name, cluster_endpoints)
    return cfg


def set_admin_port(cfg: EnvoyConfig, port: int) -> None:
    try:
        cfg["admin"]["address"]["socket_address"]["port_value"] = port
    except (KeyError, TypeError) as exc:
        raise HarnessError("config has no admin.address.socket_address") from exc


def set_listener_port(cfg: EnvoyConfig, listener_name: str, port: int) -> None:
    listener = _find_named(_static(cfg, "listeners"), listener_name, "listener")
    try:
        listener["address"]["socket_address"]["port_value"] = port
    except (KeyError, TypeError) as exc:
        raise HarnessError(f"listener {listener_name!r} has no address.socket_address") from exc


def set_cluster_endpoints(cfg: EnvoyConfig, cluster_name: str, endpoints: Sequence[Endpoint]) -> None:
    if not endpoints:
        raise HarnessError(f"cluster {cluster_name!r}: at least one endpoint is required")
    cluster = _find_named(_static(cfg, "clusters"), cluster_name, "cluster")
    cluster["load_assignment"] = {
        "cluster_name": cluster_name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                    for host, port in endpoints
                ]
            }
        ],
    }


def admin_port(cfg: Mapping[str, Any]) -> int:
    try:
        return int(cfg["admin"]["address"]["socket_address"]["port_value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError("config has no admin port") from exc


def listener_port(cfg: Mapping[str, Any], listener_name: str = "ingress") -> int:
    listener = _find_named(_static(cfg, "listeners"), listener_name, "listener")
    try:
        return int(listener["address"]["socket_address"]["port_value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HarnessError(f"listener {listener_name!r} has no port") from exc


def cluster_names(cfg: Mapping[str, Any]) -> list[str]:
    return [str(cluster["name"]) for cluster in _static(cfg, "clusters")]


def without_ext_authz(cfg: Mapping[str, Any]) -> EnvoyConfig:
    """A copy with the ext_authz HTTP filter removed (Envoy alone, for baselines)."""
    result: EnvoyConfig = copy.deepcopy(dict(cfg))
    removed = 0
    for hcm in _http_connection_managers(result):
        filters = hcm.get("http_filters", [])
        kept = [f for f in filters if f.get("name") != EXT_AUTHZ_FILTER]
        removed += len(filters) - len(kept)
        hcm["http_filters"] = kept
    if removed == 0:
        raise HarnessError(f"config has no {EXT_AUTHZ_FILTER} filter to remove")
    return result


def with_direct_response(cfg: Mapping[str, Any], status: int = 200, body: str = "ok") -> EnvoyConfig:
    """A copy whose routes answer directly (``direct_response``); the upstream cluster goes unused."""
    result: EnvoyConfig = copy.deepcopy(dict(cfg))
    changed = 0
    for hcm in _http_connection_managers(result):
        route_config = hcm.get("route_config")
        if not isinstance(route_config, dict):
            raise HarnessError("only inline route_config is supported")
        for virtual_host in route_config.get("virtual_hosts", []):
            for route in virtual_host.get("routes", []):
                for action in ("route", "redirect", "direct_response"):
                    route.pop(action, None)
                route["direct_response"] = {"status": status, "body": {"inline_string": body}}
                changed += 1
    if changed == 0:
        raise HarnessError("config has no routes")
    return result


def with_check_timeout(cfg: Mapping[str, Any], seconds: float) -> EnvoyConfig:
    """A copy whose ext_authz check may take ``seconds`` (HTTP ``server_uri.timeout`` or gRPC ``timeout``).

    For tests that count exact outcomes on a loaded machine: a check that a stalled host makes slower than the
    deployed 200 ms is a correct 503 in production, but not what such a test measures.
    """
    result: EnvoyConfig = copy.deepcopy(dict(cfg))
    changed = 0
    for hcm in _http_connection_managers(result):
        for http_filter in hcm.get("http_filters", []):
            if http_filter.get("name") != EXT_AUTHZ_FILTER:
                continue
            typed = http_filter.get("typed_config", {})
            service = typed["http_service"]["server_uri"] if "http_service" in typed else typed.get("grpc_service")
            if isinstance(service, dict):
                service["timeout"] = f"{seconds:g}s"
                changed += 1
    if changed == 0:
        raise HarnessError(f"config has no {EXT_AUTHZ_FILTER} filter to set a timeout on")
    return result


def _static(cfg: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    try:
        items = cfg["static_resources"][kind]
    except (KeyError, TypeError) as exc:
        raise HarnessError(f"config has no static_resources.{kind}") from exc
    if not isinstance(items, list):
        raise HarnessError(f"static_resources.{kind} is not a list")
    return items


def _find_named(items: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    known = sorted(str(item.get("name")) for item in items)
    raise HarnessError(f"no {kind} named {name!r} (have {known})")


def _http_connection_managers(cfg: EnvoyConfig) -> Iterator[dict[str, Any]]:
    for listener in _static(cfg, "listeners"):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") == HCM_FILTER:
                    typed_config = network_filter.get("typed_config")
                    if isinstance(typed_config, dict):
                        yield typed_config
