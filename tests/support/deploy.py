"""What ``deploy/envoy/envoy.yaml`` must be: ``envoy/envoy-http.yaml`` turned into the Pod's Envoy config.

The test compares the file with ``pod_envoy_config()``, so a change to the template that is not carried
into deploy/ fails the suite. To rewrite the file after changing the template or the catalog's
``response_json`` meters: ``python -m tests.support.deploy > deploy/envoy/envoy.yaml``.
"""

from pathlib import Path
from typing import Any, Final

import yaml

from tollway.harness import envoy_config
from tollway.harness.envoy_body_meters import with_body_meters

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
POD_ENVOY: Final = DEPLOY / "envoy" / "envoy.yaml"

LOOPBACK: Final = "127.0.0.1"
LISTENER_PORT: Final = 10000
PROBE_PORT: Final = 9902
ADMIN_PORT: Final = 9901
HTTP_PORT: Final = 9191
METERING_PORT: Final = 9194
UPSTREAM: Final = ("upstream", 8080)

HEADER: Final = """\
# The Pod's Envoy (deploy/ and docker-compose.yml), derived from envoy/envoy-http.yaml, which explains
# every setting. Differences: the ingress listener on 0.0.0.0:10000; the body meter (ext_proc) on the
# routes of plans/catalog.yaml's response_json meters, served by Tollway's metering port; the upstream
# is a DNS name (`upstream`: a Service in the Pod's namespace, or the compose service; put your API's
# Service here); and a `probes` listener on 0.0.0.0:9902 that answers only GET /ready from the admin
# API (the admin API itself stays on loopback: it can drain or kill the proxy).
# tests/integration/test_deploy_manifests.py checks this file equals that derivation; regenerate with
#   python -m tests.support.deploy > deploy/envoy/envoy.yaml
"""

_ROUTER: Final = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
_HCM_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


def metered_prefixes(catalog_path: Path = REPO / "plans" / "catalog.yaml") -> list[str]:
    """Envoy route prefixes covering the routes of the features a ``response_json`` meter lists: those
    responses go to the body meter (ext_proc); every other route skips it."""
    catalog = yaml.safe_load(catalog_path.read_text())
    features = catalog["features"]
    prefixes: list[str] = []
    for meter in catalog["meters"].values():
        if meter.get("unit") != "response_json":
            continue
        for feature in meter["features"]:
            for route in features[feature]["routes"]:
                # An Envoy prefix covering the route: its prefix, or its path up to the first template field.
                prefixes.append(route["prefix"] if "prefix" in route else route["path"].split("{", 1)[0])
    # Drop a prefix that a shorter one already covers (/v1/exports/ under /v1/exports).
    unique = sorted(set(prefixes))
    return [p for p in unique if not any(p != q and p.startswith(q) for q in unique)]


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _cluster_endpoint(name: str, address: str, port: int) -> dict[str, Any]:
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(address, port)}}]}]}


def _probes_listener() -> dict[str, Any]:
    routes = [
        {
            "match": {"path": "/ready", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "route": {"cluster": "envoy_admin"},
        },
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": "probes",
        # Like the ingress listener: a header name with '_' is refused (see envoy/envoy-http.yaml).
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "route_config": {"name": "probes", "virtual_hosts": [{"name": "probes", "domains": ["*"], "routes": routes}]},
        "http_filters": [_ROUTER],
    }
    return {
        "name": "probes",
        "address": _socket("0.0.0.0", PROBE_PORT),
        "filter_chains": [{"filters": [{"name": envoy_config.HCM_FILTER, "typed_config": hcm}]}],
    }


def pod_envoy_config() -> dict[str, Any]:
    cfg = envoy_config.load(envoy_config.template_path("http"))
    cfg = with_body_meters(cfg, (LOOPBACK, METERING_PORT), metered_prefixes(), cluster="tollway_metering")
    cfg["admin"]["address"] = _socket(LOOPBACK, ADMIN_PORT)
    listeners = cfg["static_resources"]["listeners"]
    (ingress,) = [listener for listener in listeners if listener["name"] == "ingress"]
    ingress["address"] = _socket("0.0.0.0", LISTENER_PORT)
    listeners.append(_probes_listener())
    clusters = cfg["static_resources"]["clusters"]
    (upstream,) = [cluster for cluster in clusters if cluster["name"] == "upstream"]
    upstream["type"] = "STRICT_DNS"
    upstream["load_assignment"] = _cluster_endpoint("upstream", *UPSTREAM)
    for name, port in (("tollway_http", HTTP_PORT), ("tollway_metering", METERING_PORT)):
        (cluster,) = [cluster for cluster in clusters if cluster["name"] == name]
        cluster["load_assignment"] = _cluster_endpoint(name, LOOPBACK, port)
    clusters.append(
        {
            "name": "envoy_admin",
            "type": "STATIC",
            "connect_timeout": "0.25s",
            "load_assignment": _cluster_endpoint("envoy_admin", LOOPBACK, ADMIN_PORT),
        }
    )
    return cfg


def render() -> str:
    return HEADER + "\n" + yaml.safe_dump(pod_envoy_config(), sort_keys=False, width=120)


if __name__ == "__main__":
    print(render(), end="")
