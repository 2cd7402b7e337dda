"""``make demo``: the whole path on loopback with real servers, then everything stopped again.

Starts Valkey, Tollway (ext_authz, with the example plan catalog ``plans/catalog.yaml``), the sample
upstream and Envoy; creates keys and subscribes ``acme-corp`` to the ``free`` plan with the CLI. Then:

- stage 1, who is calling: a good, a spoofed-identity, a mistyped, an unknown, a revoked and no key;
- stage 2, what may they call and how often: a granted route (its RateLimit headers), a route the plan
  does not include, a route no plan grants, a key whose customer has no subscription, and a burst past
  the free plan's per-second limit (the 429, its violated policies, Retry-After and RateLimit headers);
  then money: a prepaid customer's credits burned by the same atomic call (Tollway-Balance on each
  answer), the 402 ``insufficient-credits`` when they run out, a top-up, and the next call admitted;
- stage 3, what was used: Tollway recorded every request (admitted or refused) in its spool, completed
  the admitted ones from Envoy's access log and loaded them into the embedded ClickHouse; the demo
  prints the customer's usage from ClickHouse with ``tollway usage show``;
- stage 4, what it costs: ``initech``, on the priced ``pro`` plan since the start of the month, is
  billed with ``tollway bill``; the demo prints the invoice's lines and the path of its HTML page; then the
  prepaid ``hooli``: its invoice pays the calls from the credits and shows the balance (start, top-ups,
  burned, end), and ``tollway credits reconcile`` finds Redis and the ledger equal;
- stage 5, how SaaS teams bill (``tollway.demo.billing``): a price change published as a new version of
  ``pro`` that re-prices nobody, a new subscriber sold the new version, a migration preview then the
  migration of ``initech`` from its next period; ``soylent``'s free trial on ``startup`` converted early
  and calls packs bought and removed mid-month, its invoice a section each; ``umbrella``'s quarterly
  plan with a coupon carried from last quarter's invoice to this one's; ``stark``'s calls (stage 2)
  crossing its plan's threshold: an interim invoice with ``tollway bill --progressive``, then the month's
  invoice less it;
- notifications: a local webhook receiver, registered with ``tollway webhooks create`` before anything
  else, got every event of the demo as a signed Standard Webhooks delivery (keys created and revoked,
  subscriptions, the free plan's burst limit crossing 80 % and 100 %, hooli's balance running low and
  out); the demo prints them, each signature verified with the ``standardwebhooks`` library;
- last: ``soylent``'s invoice for November, finalized with ``tollway bill --finalize``, as the PDF a
  finance team sends (``tollway.demo.billing.sendable``): its path printed, with its number and due date.

Prints each status and problem; exits non-zero if any answer is not the expected one, or if the usage
table does not hold exactly one row per request sent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tollway.auth import apikey
from tollway.demo import billing, notifications
from tollway.demo.notifications import DemoReceiver
from tollway.harness import envoy_config
from tollway.harness.demo_upstream import DemoUpstream
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.ports import LOOPBACK, free_ports
from tollway.harness.tollway_server import TollwayServer
from tollway.harness.valkey import ValkeyServer

# src/tollway/demo/__main__.py -> the repository root (an editable install, as `make` sets up).
DEFAULT_CATALOG: Final = Path(__file__).resolve().parents[3] / "plans" / "catalog.yaml"
CUSTOMER: Final = "acme-corp"
PAYING: Final = "initech"  # on the priced pro plan, billed in stage 4
INVOICES: Final = Path(".tollway") / "demo-invoices"
UNSUBSCRIBED: Final = "globex"
PREPAID: Final = "hooli"  # prepaid credits on the payg plan, burned at the gateway
PLAN: Final = "free"
BURST_POLICY: Final = "burst"  # the free plan's per-second limit (5 per second)
BURST_MAX_REQUESTS: Final = 12
_SHOWN_HEADERS: Final = ("retry-after", "ratelimit-policy", "ratelimit")
_BALANCE_FIELD: Final = "tollway-balance"  # on admits of prepaid plans
_LABEL_WIDTH: Final = 44
EXPECTED_EVENTS: Final = (
    "key.created",
    "key.revoked",
    "subscription.changed",
    "limit.threshold_crossed",
    "balance.low",
    "balance.exhausted",
)
"""What the demo's receiver must have got by the end (each verified)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def problem(self) -> str:
        """The problem type's last path segment or fragment (``invalid-api-key``, ``quota-exceeded``), or ""
        for a non-problem answer."""
        kind = self.body.get("type")
        return re.split(r"[/#]", kind)[-1] if isinstance(kind, str) else ""

    def seen(self, header: str) -> object:
        """A header as the upstream saw it (the echo body), for an admitted request."""
        headers = self.body.get("headers", {})
        return headers.get(header) if isinstance(headers, dict) else None


@dataclass(frozen=True)
class Case:
    label: str
    method: str
    path: str
    headers: dict[str, str]
    status: int
    problem: str = ""  # the expected problem type slug of a refusal
    show_limits: bool = False  # print the RateLimit headers of the answer
    paid: bool = False  # a call of a paying customer (plan `plan`)
    plan: str = "pro"
    hidden: tuple[str, ...] = ()  # headers the upstream must not see


def call(url: str, headers: dict[str, str], method: str = "GET") -> Answer:
    data = b"" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, raw, received = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, received = error.code, error.read(), error.headers
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"text": raw.decode("utf-8", "replace")}
    shown = {name: received[name] for name in (*_SHOWN_HEADERS, _BALANCE_FIELD) if received.get(name) is not None}
    return Answer(status, body if isinstance(body, dict) else {"value": body}, shown)


def tollway_cli(env: dict[str, str], *args: str) -> Any:
    print(f"  $ tollway {' '.join(args)}")
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args, "--json"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"tollway {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def outcome(answer: Answer) -> str:
    if answer.status == 200:
        parts = [f"customer={answer.seen('x-tollway-customer-id')}", f"key={answer.seen('x-tollway-key-id')}"]
        plan = answer.seen("x-tollway-plan")
        if plan is not None:
            parts += [f"plan={plan}", f"feature={answer.seen('x-tollway-feature')}"]
        return "upstream saw " + " ".join(parts)
    return f"{answer.body.get('title', '?')} ({answer.problem or 'no problem type'})"


def paying_headers(created: dict[str, object]) -> dict[str, str]:
    return {"authorization": f"Bearer {created['api_key']}"}


def verdict(answer: Answer, status: int, problem: str, paid: bool = False, plan: str = "pro") -> str | None:
    """None if the answer is the expected one, else what was expected."""
    if paid:
        return None if answer.status == status and answer.seen("x-tollway-plan") == plan else f"wanted {status}"
    if answer.status != status:
        return f"wanted {status}" + (f" {problem}" if problem else "")
    if problem and answer.problem != problem:
        return f"wanted problem {problem}"
    if status == 200 and answer.seen("x-tollway-customer-id") != CUSTOMER:
        return f"wanted the upstream to see customer {CUSTOMER}"
    if status == 200 and answer.seen("x-tollway-plan") != PLAN:
        return f"wanted the upstream to see plan {PLAN}"
    return None


def show_headers(answer: Answer) -> None:
    for name, value in answer.headers.items():
        print(f"  {'':<{_LABEL_WIDTH}}         {name}: {value}")


SENT: list[int] = []  # one entry per request the demo sent through Envoy


def run_cases(base_url: str, cases: list[Case]) -> int:
    failures = 0
    print(f"  {'request':<{_LABEL_WIDTH}} {'status':<7} outcome")
    for case in cases:
        answer = call(base_url + case.path, case.headers, case.method)
        SENT.append(answer.status)
        wrong = verdict(answer, case.status, case.problem, case.paid, case.plan)
        seen = [name for name in case.hidden if answer.seen(name) is not None]
        if wrong is None and seen:
            wrong = f"the upstream saw {', '.join(seen)}"
        if case.show_limits and answer.status == 200 and "ratelimit" not in answer.headers:
            wrong = "wanted RateLimit headers on the answer"
        failures += wrong is not None
        mark = "ok" if wrong is None else f"UNEXPECTED, {wrong}"
        print(f"  {case.label:<{_LABEL_WIDTH}} {answer.status:<7} {outcome(answer)}  [{mark}]")
        if case.show_limits:
            show_headers(answer)
    return failures


def refused_by_envoy(base_url: str, label: str, headers: dict[str, str]) -> int:
    """A request Envoy itself refuses (a header name with an underscore, which CGI-style upstreams would
    read as the x-tollway-* identity): it never reaches Tollway, so it has no usage row (not in SENT)."""
    answer = call(base_url + "/v1/items", headers)
    wrong = answer.status != 400
    mark = "ok" if not wrong else "UNEXPECTED, wanted 400 from Envoy"
    print(f"  {label:<{_LABEL_WIDTH}} {answer.status:<7} refused by Envoy before any check  [{mark}]")
    return int(wrong)


def burst(base_url: str, headers: dict[str, str]) -> int:
    """Requests to a granted route until the free plan's per-second limit refuses one; 0 if as expected."""
    path = "/v1/items"
    print(f"  GET {path} as fast as possible (the free plan allows 5 per second):")
    statuses: list[int] = []
    refused: Answer | None = None
    for _ in range(BURST_MAX_REQUESTS):
        answer = call(base_url + path, headers)
        SENT.append(answer.status)
        statuses.append(answer.status)
        if answer.status != 200:
            refused = answer
            break
    print(f"  statuses in order: {' '.join(map(str, statuses))}")
    if refused is None:
        print(f"  [UNEXPECTED, no refusal in {BURST_MAX_REQUESTS} requests]")
        return 1
    violated = refused.body.get("violated-policies")
    problems = []
    if refused.status != 429 or refused.problem != "quota-exceeded":
        problems.append(f"wanted 429 quota-exceeded, got {refused.status} {refused.problem}")
    if not isinstance(violated, list) or BURST_POLICY not in violated:
        problems.append(f"wanted {BURST_POLICY!r} among the violated policies")
    if len(statuses) > 6:
        problems.append("wanted the refusal by the 6th request")
    missing = [name for name in _SHOWN_HEADERS if name not in refused.headers]
    if missing:
        problems.append(f"missing headers {', '.join(missing)}")
    mark = "ok" if not problems else "UNEXPECTED, " + "; ".join(problems)
    label = f"request {len(statuses)} of the burst"
    print(f"  {label:<{_LABEL_WIDTH}} {refused.status:<7} {outcome(refused)}  [{mark}]")
    print(f"  {'':<{_LABEL_WIDTH}}         violated-policies: {json.dumps(violated)}")
    print(f"  {'':<{_LABEL_WIDTH}}         detail: {refused.body.get('detail')}")
    show_headers(refused)
    return 1 if problems else 0


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    print(f"  $ tollway {' '.join(args)}")
    return subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, capture_output=True, text=True, check=False
    )


def show_prepaid(env: dict[str, str], month: str) -> int:
    """The prepaid customer's period: the grants' ledger entries written into the demo's ClickHouse, the
    invoice (credits applied, the balance section), and the reconciliation of Redis with the ledger."""
    failures = 0
    synced = run_cli(env, "credits", "sync", "--customer", PREPAID)
    print("\n".join(f"  {line}" for line in synced.stdout.splitlines()))
    failures += synced.returncode != 0
    done = run_cli(env, "bill", "--period", month, "--customer", PREPAID, "--out", str(INVOICES))
    if done.returncode != 0 or not done.stdout.strip():
        print(f"  [UNEXPECTED, tollway bill failed] {done.stderr.strip()}")
        return failures + 1
    invoice_id = done.stdout.split()[0]
    document = json.loads((INVOICES / f"{invoice_id}.json").read_text())
    for line in document["lines"]:
        print(f"  {line['description']:<52} {line['quantity'] or '':>14} {line['amount']:>10}")
    print(f"  {'total':<52} {'':>14} {document['total']:>10} {document['currency']}")
    balance = document.get("balance")
    if not balance:
        print("  [UNEXPECTED, the invoice has no balance section]")
        return failures + 1
    print(f"  prepaid balance ({balance['unit']}):")
    for line in balance["lines"]:
        print(f"    {line['description']:<50} {line['amount']:>14}")
    print(f"  invoice page: {(INVOICES / f'{invoice_id}.html').resolve()}")
    reconciled = run_cli(env, "credits", "reconcile", "--customer", PREPAID)
    print("\n".join(f"  {line}" for line in reconciled.stdout.splitlines()))
    if reconciled.returncode != 0:
        print(f"  [UNEXPECTED, reconcile found a difference] {reconciled.stderr.strip()}")
        failures += 1
    return failures


def prepaid(base_url: str, env: dict[str, str], catalog: Path, key: str) -> int:
    """Stage 2, money: a prepaid customer's credits are burned by the same atomic call that checks its
    limits; the request they cannot cover is refused with 402, and a top-up admits the next one."""
    headers = {"authorization": f"Bearer {key}"}
    failures = 0

    def calls(expected: list[tuple[int, str]]) -> None:
        nonlocal failures
        for status, problem in expected:
            answer = call(base_url + "/v1/items/7", headers)
            SENT.append(answer.status)
            wrong = answer.status != status or (problem and answer.problem != problem)
            wrong = wrong or (status == 200 and _BALANCE_FIELD not in answer.headers)
            failures += bool(wrong)
            told = (
                f"Tollway-Balance: {answer.headers.get(_BALANCE_FIELD)}"
                if answer.status == 200
                else f"{answer.body.get('title')} ({answer.problem}): balance {answer.body.get('balance')}, "
                f"price {answer.body.get('price')} {answer.body.get('unit')}"
            )
            mark = "ok" if not wrong else f"UNEXPECTED, wanted {status} {problem}".rstrip()
            print(f"  {'GET /v1/items/7 (' + PREPAID + ', payg)':<{_LABEL_WIDTH}} {answer.status:<7} {told}  [{mark}]")

    units = ("--unit", "credits", "--catalog", str(catalog))
    tollway_cli(env, "credits", "grant", PREPAID, "3", *units, "--reason", "welcome credits")
    calls([(200, ""), (200, ""), (200, ""), (402, "insufficient-credits")])
    tollway_cli(env, "credits", "grant", PREPAID, "100", *units, "--reason", "top-up")
    calls([(200, "")])
    left = tollway_cli(env, "credits", "balance", PREPAID)
    print(f"  balance of {PREPAID}: {left.get('balance')} {left.get('unit', 'credits')}")
    return failures


def show_invoice(env: dict[str, str], month: str) -> int:
    """Bill the paying customer's period with ``tollway bill``; print the invoice lines and its HTML page."""
    args = ["bill", "--period", month, "--customer", PAYING, "--out", str(INVOICES)]
    print(f"  $ tollway {' '.join(args)}")
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        print(f"  [UNEXPECTED, tollway bill failed] {done.stderr.strip()}")
        return 1
    invoice_id = done.stdout.split()[0]
    document = json.loads((INVOICES / f"{invoice_id}.json").read_text())
    for line in document["lines"]:
        print(f"  {line['description']:<52} {line['quantity'] or '':>14} {line['amount']:>10}")
    print(f"  {'total':<52} {'':>14} {document['total']:>10} {document['currency']}")
    print(f"  invoice page: {(INVOICES / f'{invoice_id}.html').resolve()}")
    return 0


def show_usage(envoy: EnvoyProcess, tollway: TollwayServer, env: dict[str, str]) -> int:
    """Stop Tollway (its loader drains the spool into ClickHouse on the way out), then read the usage table."""
    time.sleep(0.5)  # Envoy flushes its access log every 200 ms
    envoy.stop()  # no more requests or log entries
    tollway.stop()
    print(f"  $ tollway usage show --customer {CUSTOMER}")
    shown = subprocess.run(
        [sys.executable, "-m", "tollway", "usage", "show", "--customer", CUSTOMER],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print("\n".join(f"  {line}" for line in shown.stdout.splitlines()))
    records = tollway_cli(env, "usage", "show")
    rows = sum(int(r["requests"]) for r in records)
    if shown.returncode != 0 or rows != len(SENT):
        print(f"  [UNEXPECTED, {rows} usage rows for {len(SENT)} requests] {shown.stderr.strip()}")
        return 1
    print(f"  {rows} usage rows for {len(SENT)} requests: exactly one each, admitted and refused alike  [ok]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tollway.demo", description=__doc__)
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http", help="ext_authz protocol")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="plan catalog (default: %(default)s)")
    args = parser.parse_args(argv)
    catalog: Path = args.catalog
    if not catalog.is_file():
        parser.error(f"no plan catalog at {catalog} (run from a checkout, or pass --catalog)")
    started = time.monotonic()
    pepper = os.urandom(32).hex()  # a fresh pepper per demo run; keys die with it

    with tempfile.TemporaryDirectory(prefix="tollway-demo-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        print(f"Tollway demo: real Envoy, Valkey and Tollway (ext_authz over {args.protocol}) on loopback\n")
        valkey = stack.enter_context(ValkeyServer(work).start())
        metering_env = {
            "TOLLWAY_SPOOL_DIR": str(work / "spool"),
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{work / 'chdb'}",
        }
        # The demo's webhook receiver is on loopback over http: allowed only by these development settings.
        webhook_env = {"TOLLWAY_WEBHOOKS_ALLOW_HTTP": "true", "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true"}
        tollway = TollwayServer(
            work,
            redis_url=valkey.url,
            pepper=pepper,
            extra_env={"TOLLWAY_CATALOG": str(catalog), **metering_env, **webhook_env},
        ).start()
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
            endpoints={
                authz_cluster: [authz_endpoint],
                "upstream": [upstream.endpoint],
                "tollway_metering": [tollway.metering_endpoint],
            },
        )
        envoy = EnvoyProcess(config, work).start()
        stack.callback(envoy.stop)
        print(f"  valkey   {valkey.url}")
        print(
            f"  tollway  http {LOOPBACK}:{tollway.http_port}, grpc {LOOPBACK}:{tollway.grpc_port}, "
            f"metering {LOOPBACK}:{tollway.metering_port}"
        )
        print(f"  usage    spool {work / 'spool'} -> embedded ClickHouse {work / 'chdb'}")
        print(f"  catalog  {catalog}")
        print(f"  upstream {upstream.url}")
        print(f"  envoy    {envoy.base_url} (admin {LOOPBACK}:{envoy.admin_port})\n")

        env = {
            **os.environ,
            "TOLLWAY_REDIS_URL": valkey.url,
            "TOLLWAY_PEPPER": pepper,
            **webhook_env,
            **billing.SELLER_ENV,
        }
        receiver = DemoReceiver().start()
        stack.callback(receiver.stop)
        endpoint = notifications.register(env, receiver)
        print(f"  webhooks {receiver.url} (endpoint {endpoint}: every event, signed; the receiver verifies)\n")
        good = tollway_cli(env, "keys", "create", "--customer", CUSTOMER)
        doomed = tollway_cli(env, "keys", "create", "--customer", CUSTOMER, "--env", "test")
        tollway_cli(env, "keys", "revoke", str(doomed["key_id"]))
        stranger = tollway_cli(env, "keys", "create", "--customer", UNSUBSCRIBED)
        tollway_cli(env, "subscriptions", "set", "--customer", CUSTOMER, "--plan", PLAN, "--catalog", str(catalog))
        month = time.strftime("%Y-%m", time.gmtime())
        paying = tollway_cli(env, "keys", "create", "--customer", PAYING)
        tollway_cli(
            env, "subscriptions", "set", "--customer", PAYING, "--plan", "pro", "--start", f"{month}-01T00:00:00Z"
        )
        hooli = tollway_cli(env, "keys", "create", "--customer", PREPAID)
        tollway_cli(env, "subscriptions", "set", "--customer", PREPAID, "--plan", "payg", "--catalog", str(catalog))
        now = datetime.now(UTC)
        stark = billing.subscribe(env, catalog, now)  # stage 5's customers; stark calls in stage 2
        print()

        good_key = str(good["api_key"])
        bearer = {"authorization": f"Bearer {good_key}"}
        typo = good_key[:12] + ("x" if good_key[12] != "x" else "y") + good_key[13:]
        spoofed = {"x-api-key": good_key, "x-tollway-customer-id": "mallory", "x-tollway-plan": "enterprise"}
        print("Stage 1: who is calling? (GET /v1/items, a route the free plan grants)")
        failures = run_cases(
            envoy.base_url,
            [
                Case("good key", "GET", "/v1/items", bearer, 200),
                Case("good key, spoofed x-tollway-* headers", "GET", "/v1/items", spoofed, 200),
                Case(
                    "good key and a 2nd key (both stripped)",
                    "GET",
                    "/v1/items",
                    {**bearer, "x-api-key": str(stranger["api_key"])},
                    200,
                    hidden=("x-api-key", "authorization"),
                ),
                Case("mistyped key", "GET", "/v1/items", {"authorization": f"Bearer {typo}"}, 401, "malformed-api-key"),
                Case(
                    "unknown key",
                    "GET",
                    "/v1/items",
                    {"authorization": f"Bearer {apikey.generate('live').text}"},
                    401,
                    "invalid-api-key",
                ),
                Case("revoked key", "GET", "/v1/items", {"authorization": f"Bearer {doomed['api_key']}"}, 401),
                Case("no key", "GET", "/v1/items", {}, 401, "missing-credentials"),
            ],
        )
        failures += refused_by_envoy(
            envoy.base_url, "good key, spoofed x_tollway_customer_id", {**bearer, "x_tollway_customer_id": "mallory"}
        )
        print(f"\nStage 2: what may {CUSTOMER} (plan {PLAN}: items-read and search) call, and how often?")
        failures += run_cases(
            envoy.base_url,
            [
                Case("GET /v1/items/42 (items-read: granted)", "GET", "/v1/items/42", bearer, 200, show_limits=True),
                Case(
                    "POST /v1/items (items-write: not in free)",
                    "POST",
                    "/v1/items",
                    bearer,
                    403,
                    "feature-not-entitled",
                ),
                Case(
                    "GET /v1/admin/users (admin: not in free)",
                    "GET",
                    "/v1/admin/users",
                    bearer,
                    403,
                    "feature-not-entitled",
                ),
                Case("GET /v1/billing (no plan grants it)", "GET", "/v1/billing", bearer, 403, "route-not-granted"),
                Case(
                    f"GET /v1/items, key of {UNSUBSCRIBED} (no plan)",
                    "GET",
                    "/v1/items",
                    {"authorization": f"Bearer {stranger['api_key']}"},
                    403,
                    "no-subscription",
                ),
            ],
        )
        print()
        time.sleep(1.1)  # let the per-second window empty, so the burst starts from zero
        failures += burst(envoy.base_url, bearer)
        print()
        print(f"  keys on record: {len(tollway_cli(env, 'keys', 'list'))} (secrets are never listed)")
        print(f"\n  {PAYING} (plan pro) calls the API:")
        failures += run_cases(
            envoy.base_url,
            [
                Case(f"GET /v1/items/{n} ({PAYING})", "GET", f"/v1/items/{n}", paying_headers(paying), 200, paid=True)
                for n in (1, 2, 3)
            ]
            + [Case(f"GET /v1/search ({PAYING})", "GET", "/v1/search?q=x", paying_headers(paying), 200, paid=True)],
        )
        customer, plan = billing.PROGRESSIVE
        print(f"\n  {customer} (plan {plan}, invoiced as it goes in stage 5) calls the API:")
        failures += run_cases(
            envoy.base_url,
            [
                Case(
                    f"GET /v1/items/{n} ({customer})",
                    "GET",
                    f"/v1/items/{n}",
                    paying_headers(stark),
                    200,
                    paid=True,
                    plan=plan,
                )
                for n in range(1, billing.PROGRESSIVE_CALLS + 1)
            ],
        )
        print(f"\n  {PREPAID} (plan payg) prepays in credits, 1 credit per call, burned at the gateway:")
        # The demo's embedded ClickHouse belongs to the running server (one process per chdb path), so the
        # grants write their ledger entries to a scratch one; `tollway credits sync` writes them into the
        # demo's once the server has stopped (with a ClickHouse server, the grant writes them at once).
        scratch = {**env, "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{work / 'ledger-scratch'}"}
        failures += prepaid(envoy.base_url, scratch, catalog, str(hooli["api_key"]))
        # The dispatcher runs in the Tollway process that loads usage: let it deliver before Stage 3 stops it.
        receiver.wait_for(EXPECTED_EVENTS)
        print(f"\nStage 3: what was used? ({len(SENT)} requests sent through Envoy)")
        failures += show_usage(envoy, tollway, {**env, **metering_env})
        print(f"\nStage 4: what does it cost? ({PAYING}, plan pro, {month})")
        failures += show_invoice({**env, **metering_env, "TOLLWAY_CATALOG": str(catalog)}, month)
        print(f"\n  {PREPAID} (plan payg, prepaid in credits), {month}:")
        failures += show_prepaid({**env, **metering_env, "TOLLWAY_CATALOG": str(catalog)}, month)
        print("\nStage 5: how SaaS teams bill: plan versions, trials, add-ons, coupons, progressive invoicing")
        failures += billing.run({**env, **metering_env}, catalog, work, INVOICES, now)
        print("\nNotifications: the events the demo's webhook receiver got (Standard Webhooks, signed)")
        failures += notifications.show(receiver, EXPECTED_EVENTS)
        print("\nThe invoice a finance team sends: finalized, numbered, as a PDF")
        published = {**env, **metering_env, "TOLLWAY_CATALOG": str(work / billing.PUBLISHED)}
        failures += billing.sendable(published, INVOICES)
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; every process it started is stopped.")
    if failures:
        print(f"{failures} answer(s) were not the expected ones.", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
