"""Add response-body metering (Envoy ext_proc → ``tollway.extproc.body_meter``) to an Envoy config.

``with_body_meters`` is the structural version of ``envoy/ext-proc-body-meters.yaml``: it adds

* the ``envoy.filters.http.ext_proc`` filter after ext_authz (so ext_authz's dynamic metadata exists
  when the response passes through) and before the router;
* its gRPC cluster, with ``http2_protocol_options`` (without them the config validates, yet every call
  fails);
* one route per metered path prefix, placed before the existing routes and forwarding like the route
  that served that prefix before, with ext_proc left enabled;
* ``ExtProcPerRoute {disabled: true}`` on every pre-existing route (the catch-all included), so the
  expensive per-request gRPC stream is opened only for the metered prefixes.

Like ``envoy_config``, every function returns a new dict and leaves its input untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from tollway.extproc.metadata import METERS_NAMESPACE
from tollway.harness.envoy_config import (
    EXT_AUTHZ_FILTER,
    HCM_FILTER,
    Endpoint,
    EnvoyConfig,
    set_cluster_endpoints,
)
from tollway.harness.errors import HarnessError

EXT_PROC_FILTER: Final = "envoy.filters.http.ext_proc"
ROUTER_FILTER: Final = "envoy.filters.http.router"
BODY_METER_CLUSTER: Final = "tollway_body_meters"
EXT_AUTHZ_NAMESPACE: Final = EXT_AUTHZ_FILTER
MESSAGE_TIMEOUT: Final = "0.2s"

_EXT_PROC_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_PER_ROUTE_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_HTTP_OPTIONS_KEY: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP_OPTIONS_TYPE: Final = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def ext_proc_filter(
    cluster: str = BODY_METER_CLUSTER,
    message_timeout: str = MESSAGE_TIMEOUT,
    *,
    send_response_headers: bool = False,
) -> dict[str, Any]:
    """The HTTP filter entry (see ``envoy/ext-proc-body-meters.yaml`` for why each field is set).

    The body is STREAMED (the buffered modes break large responses in Envoy 1.40); the response headers are
    skipped, the status code and request id travel as attributes with the first body message.
    ``send_response_headers`` adds a headers message first, so the server can see content type and length
    and tell Envoy (``mode_override``) not to send the body of a response it will not meter.
    """
    return {
        "name": EXT_PROC_FILTER,
        "typed_config": {
            "@type": _EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
            "failure_mode_allow": True,
            "message_timeout": message_timeout,
            "processing_mode": {
                "request_header_mode": "SKIP",
                "response_header_mode": "SEND" if send_response_headers else "SKIP",
                "request_body_mode": "NONE",
                "response_body_mode": "STREAMED",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            "response_attributes": ["response.code", "request.id"],
            "metadata_options": {
                "forwarding_namespaces": {"untyped": [EXT_AUTHZ_NAMESPACE]},
                "receiving_namespaces": {"untyped": [METERS_NAMESPACE]},
            },
        },
    }


def ext_proc_cluster(endpoints: Sequence[Endpoint], name: str = BODY_METER_CLUSTER) -> dict[str, Any]:
    """A STATIC HTTP/2 cluster for the body-meter gRPC server (one endpoint per server process)."""
    if not endpoints:
        raise HarnessError(f"cluster {name!r}: at least one endpoint is required")
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS_KEY: {
                "@type": _HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in endpoints
                    ]
                }
            ],
        },
    }


def per_route(*, disabled: bool) -> dict[str, Any]:
    """``typed_per_filter_config`` entry for one route."""
    if disabled:
        return {EXT_PROC_FILTER: {"@type": _PER_ROUTE_TYPE, "disabled": True}}
    return {EXT_PROC_FILTER: {"@type": _PER_ROUTE_TYPE, "overrides": {}}}


def with_body_meters(
    cfg: Mapping[str, Any],
    ext_proc_endpoint: Endpoint | Sequence[Endpoint],
    metered_prefixes: Sequence[str],
    *,
    cluster: str = BODY_METER_CLUSTER,
    message_timeout: str = MESSAGE_TIMEOUT,
    send_response_headers: bool = False,
) -> EnvoyConfig:
    """A copy of ``cfg`` that sends the responses of ``metered_prefixes`` (and only those) to ext_proc.

    ``ext_proc_endpoint`` is one (host, port) or a list of them. Each prefix is a plain Envoy route
    ``prefix`` (``/v1/reports/``), matched after Envoy's path normalisation; it must be served by an
    existing prefix route (normally the catch-all ``/``), whose action it copies. ``cluster`` names the
    gRPC cluster: added if the config lacks it; if it exists (e.g. ``tollway_metering``, the metering
    server that also hosts the access-log stream) it must speak HTTP/2 and gets ``ext_proc_endpoint``.
    """
    endpoints = _endpoints(ext_proc_endpoint)
    prefixes = list(dict.fromkeys(metered_prefixes))
    if not prefixes or any(not p.startswith("/") for p in prefixes):
        raise HarnessError(f"metered prefixes must be non-empty paths starting with '/': {metered_prefixes!r}")
    result: EnvoyConfig = copy.deepcopy(dict(cfg))
    managers = list(_http_connection_managers(result))
    if not managers:
        raise HarnessError("config has no http_connection_manager")
    entry = ext_proc_filter(cluster, message_timeout, send_response_headers=send_response_headers)
    for hcm in managers:
        _insert_filter(hcm, copy.deepcopy(entry))
        _add_routes(hcm, prefixes)
    clusters = result.setdefault("static_resources", {}).setdefault("clusters", [])
    existing = [c for c in clusters if c.get("name") == cluster]
    if not existing:
        clusters.append(ext_proc_cluster(endpoints, cluster))
    elif not _speaks_http2(existing[0]):
        raise HarnessError(f"cluster {cluster!r} has no http2_protocol_options: gRPC calls to it would all fail")
    else:
        set_cluster_endpoints(result, cluster, endpoints)
    return result


def _speaks_http2(cluster: Mapping[str, Any]) -> bool:
    options = cluster.get("typed_extension_protocol_options", {}).get(_HTTP_OPTIONS_KEY, {})
    explicit = options.get("explicit_http_config", {})
    return "http2_protocol_options" in explicit or "http2_protocol_options" in cluster


def _endpoints(value: Endpoint | Sequence[Endpoint]) -> list[Endpoint]:
    if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
        return [(value[0], value[1])]
    endpoints: list[Endpoint] = []
    for item in value:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise HarnessError(f"expected (host, port) endpoints, got {value!r}")
        host, port = item
        endpoints.append((str(host), int(port)))
    return endpoints


def _insert_filter(hcm: dict[str, Any], entry: dict[str, Any]) -> None:
    filters: list[dict[str, Any]] = hcm.setdefault("http_filters", [])
    names = [f.get("name") for f in filters]
    if EXT_PROC_FILTER in names:
        raise HarnessError(f"config already has a {EXT_PROC_FILTER} filter")
    if ROUTER_FILTER not in names:
        raise HarnessError(f"config has no {ROUTER_FILTER} filter")
    # After ext_authz when there is one (its metadata is then set before the response comes back);
    # always before the router, which must stay last.
    position = names.index(EXT_AUTHZ_FILTER) + 1 if EXT_AUTHZ_FILTER in names else names.index(ROUTER_FILTER)
    filters.insert(min(position, names.index(ROUTER_FILTER)), entry)


def _add_routes(hcm: dict[str, Any], prefixes: Sequence[str]) -> None:
    route_config = hcm.get("route_config")
    if not isinstance(route_config, dict):
        raise HarnessError("only inline route_config is supported")
    virtual_hosts = route_config.get("virtual_hosts", [])
    if not virtual_hosts:
        raise HarnessError("config has no virtual hosts")
    for virtual_host in virtual_hosts:
        existing: list[dict[str, Any]] = virtual_host.get("routes", [])
        metered = [_metered_route(prefix, existing) for prefix in prefixes]
        for route in existing:
            route.setdefault("typed_per_filter_config", {}).update(per_route(disabled=True))
        virtual_host["routes"] = metered + existing


def _metered_route(prefix: str, existing: Sequence[dict[str, Any]]) -> dict[str, Any]:
    for route in existing:
        match = route.get("match", {})
        serving = match.get("prefix")
        if isinstance(serving, str) and prefix.startswith(serving) and len(match) == 1:
            metered = {key: copy.deepcopy(value) for key, value in route.items() if key not in ("match", "name")}
            metered["match"] = {"prefix": prefix}
            metered["typed_per_filter_config"] = {
                **metered.get("typed_per_filter_config", {}),
                **per_route(disabled=False),
            }
            return metered
    raise HarnessError(f"no existing prefix route serves {prefix!r}: nothing to copy the action from")


def _http_connection_managers(cfg: EnvoyConfig) -> Iterator[dict[str, Any]]:
    for listener in cfg.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for network_filter in chain.get("filters", []):
                if network_filter.get("name") == HCM_FILTER:
                    typed_config = network_filter.get("typed_config")
                    if isinstance(typed_config, dict):
                        yield typed_config
