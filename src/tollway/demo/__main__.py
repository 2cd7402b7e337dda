"""``make demo``: the whole path on loopback with real servers, then everything stopped again.

Starts Valkey, Tollway (ext_authz), the sample upstream and Envoy; creates keys with the CLI; sends
requests with a good, a mistyped, an unknown, a revoked and no key (and a spoofed identity header);
prints each status and problem title. Exits non-zero if any answer is not the expected one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tollway.auth import apikey
from tollway.harness import envoy_config
from tollway.harness.demo_upstream import DemoUpstream
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]


def call(url: str, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"text": raw.decode("utf-8", "replace")}
    return Answer(status, body if isinstance(body, dict) else {"value": body})


def tollway_cli(env: dict[str, str], *args: str) -> dict[str, object]:
    print(f"  $ tollway {' '.join(args)}")
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args, "--json"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"tollway {' '.join(args)} failed: {done.stderr.strip()}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollway.demo", description=__doc__)
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http", help="ext_authz protocol")
    args = parser.parse_args(argv)
    started = time.monotonic()
    pepper = os.urandom(32).hex()  # a fresh pepper per demo run; keys die with it

    with tempfile.TemporaryDirectory(prefix="tollway-demo-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        print(f"Tollway demo: real Envoy, Valkey and Tollway (ext_authz over {args.protocol}) on loopback\n")
        valkey = stack.enter_context(ValkeyServer(work).start())
        tollway = TollwayServer(work, redis_url=valkey.url, pepper=pepper).start()
        stack.callback(tollway.stop)
        upstream = DemoUpstream(work).start()
        stack.callback(upstream.stop)
        listener, admin = free_ports(2)
        authz_cluster, authz_endpoint = (
            ("tollway_http", tollway.http_endpoint)
            if args.protocol == "http"
            else ("tollway_grpc", tollway.grpc_endpoint)
        )
        config = envoy_config.render(
            envoy_config.template_path(args.protocol),
            listener_port=listener,
            admin_port=admin,
            endpoints={authz_cluster: [authz_endpoint], "upstream": [upstream.endpoint]},
        )
        envoy = EnvoyProcess(config, work).start()
        stack.callback(envoy.stop)
        print(f"  valkey   {valkey.url}")
        print(f"  tollway  http {LOOPBACK}:{tollway.http_port}, grpc {LOOPBACK}:{tollway.grpc_port}")
        print(f"  upstream {upstream.url}")
        print(f"  envoy    {envoy.base_url} (admin {LOOPBACK}:{envoy.admin_port})\n")

        env = {**os.environ, "TOLLWAY_REDIS_URL": valkey.url, "TOLLWAY_PEPPER": pepper}
        good = tollway_cli(env, "keys", "create", "--customer", "acme-corp")
        doomed = tollway_cli(env, "keys", "create", "--customer", "acme-corp", "--env", "test")
        tollway_cli(env, "keys", "revoke", str(doomed["key_id"]))
        print()

        good_key = str(good["api_key"])
        typo = good_key[:12] + ("x" if good_key[12] != "x" else "y") + good_key[13:]
        cases: list[tuple[str, dict[str, str], int]] = [
            ("good key", {"authorization": f"Bearer {good_key}"}, 200),
            ("good key, spoofed identity", {"x-api-key": good_key, "x-tollway-customer-id": "mallory"}, 200),
            ("mistyped key", {"authorization": f"Bearer {typo}"}, 401),
            ("unknown key", {"authorization": f"Bearer {apikey.generate('live').text}"}, 401),
            ("revoked key", {"authorization": f"Bearer {doomed['api_key']}"}, 401),
            ("no key", {}, 401),
        ]
        failures = 0
        print(f"  {'request':<28} {'status':<7} outcome")
        for label, headers, expected in cases:
            answer = call(f"{envoy.base_url}/v1/hello", headers)
            if answer.status == 200:
                seen = answer.body.get("headers", {})
                assert isinstance(seen, dict)
                outcome = (
                    f"upstream saw customer={seen.get('x-tollway-customer-id')} key={seen.get('x-tollway-key-id')}"
                )
            else:
                outcome = f"{answer.body.get('title', '?')}  ({answer.body.get('type', 'no problem type')})"
            mark = "ok" if answer.status == expected else f"UNEXPECTED, wanted {expected}"
            failures += answer.status != expected
            print(f"  {label:<28} {answer.status:<7} {outcome}  [{mark}]")
        print(f"\n  keys on record: {len(tollway_cli(env, 'keys', 'list'))} (secrets are never listed)")
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; every process it started is stopped.")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
