"""The money part of ``/tollway/v1/usage`` through real Envoy (issue 14, items 4 and 7): a prepaid caller
sees their live balance, grants and burn per day (equal to what Valkey and ClickHouse hold); a
spend-capped caller sees the period's spend against the cap, and lowers it for themselves with
``PATCH``: the gate refuses at exactly the request that would cross their cap, in every process."""

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import create_key, run_cli
from tollway.cli import credits as credits_cli
from tollway.cli.main import build_parser
from tollway.credits.grants import decode_all
from tollway.credits.units import from_micros
from tollway.harness.envoy import EnvoyProcess
from tollway.harness.valkey import ValkeyServer
from tollway.settings import Settings
from tollway.warehouse.migrations import Migrator

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "usage" / "money.yaml"
USAGE = "/tollway/v1/usage"
ITEM = "/v1/items/7"
PATCH_JSON = {"content-type": "application/merge-patch+json"}
ZONE = "America/New_York"


def subscribe(valkey: ValkeyServer, customer: str, plan: str) -> dict[str, str]:
    key = str(create_key(valkey.url, customer)["api_key"])
    done = run_cli(
        valkey.url, "subscriptions", "set", "--customer", customer, "--plan", plan, "--timezone", ZONE, "--json"
    )
    assert done.code == 0, done.stderr
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def ledger(chdb_db: ChdbDatabase) -> ChdbDatabase:
    """The test's embedded ClickHouse, migrated: where grants write their ledger entries."""
    Migrator(chdb_db.client, chdb_db.name).migrate()
    return chdb_db


def grant(valkey: ValkeyServer, db: ChdbDatabase, customer: str, *argv: str) -> None:
    """``tollway credits grant`` in this process (its ledger in the test's own embedded ClickHouse)."""
    args = build_parser().parse_args(["credits", "grant", customer, *argv, "--catalog", str(CATALOG)])
    settings_ = Settings(redis_url=valkey.url)  # type: ignore[call-arg]
    assert asyncio.run(credits_cli.run(args, settings_, ledger=credits_cli.DirectLedger(db.client, db.name))) == 0


@pytest.fixture
def store(valkey_fresh: ValkeyServer) -> Iterator["redis.Redis[str]"]:
    client: redis.Redis[str] = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    yield client
    client.close()


def usage_stack(
    tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory, tmp_path: Path, checkers: int = 0
) -> EnvoyProcess:
    """One Tollway that meters, loads into an embedded ClickHouse and serves the usage endpoint, and
    ``checkers`` more that only answer checks."""
    main = tollway_factory(
        {
            "TOLLWAY_CATALOG": str(CATALOG),
            "TOLLWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "TOLLWAY_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}",
            "TOLLWAY_LOADER_INSERT_INTERVAL_S": "0.2",
        }
    )
    others = [tollway_factory({"TOLLWAY_CATALOG": str(CATALOG)}) for _ in range(checkers)]
    return envoy_factory(
        "http",
        endpoints={
            "tollway_http": [main.http_endpoint, *(t.http_endpoint for t in others)],
            "tollway_metering": [main.metering_endpoint],
            "tollway_usage": [main.usage_endpoint],
        },
    )


def report_when(client: httpx.Client, auth: dict[str, str], ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        response = client.get(USAGE, headers=auth)
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        if ready(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


DOC = Path(__file__).resolve().parents[2] / "docs" / "entitlements.md"


def documented() -> dict[str, Any]:
    """The example of docs/entitlements.md's money members."""
    block = DOC.read_text().split("<!-- usage-money-example -->", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    example: dict[str, Any] = json.loads(block)
    return example


def shape(value: Any) -> Any:
    """Member names and JSON types, recursively (a list: its first item's shape)."""
    if isinstance(value, dict):
        return {name: shape(member) for name, member in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def held_balance(store: "redis.Redis[str]", customer: str) -> Decimal:
    return from_micros(sum(g.remaining for g in decode_all(store.hgetall(f"tw:cr:{{{customer}}}"))))


def spent_in_redis(store: "redis.Redis[str]", customer: str) -> Decimal:
    [key] = store.keys(f"tw:sp:{{{customer}}}:*")
    return from_micros(int(store.get(key) or 0))


def test_a_caller_sees_balance_grants_burn_per_day_and_spend_equal_to_the_stores(
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    ledger: ChdbDatabase,
    store: "redis.Redis[str]",
    tmp_path: Path,
) -> None:
    envoy = usage_stack(tollway_factory, envoy_factory, tmp_path)
    prepaid = subscribe(valkey_fresh, "prepaid-co", "prepaid")
    capped = subscribe(valkey_fresh, "capped-co", "capped")
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    expires_at = expires.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    grant(valkey_fresh, ledger, "prepaid-co", "10.00", "--id", "main", "--reason", "top-up")
    grant(valkey_fresh, ledger, "prepaid-co", "2.00", "--id", "promo", "--priority", "-1",
          "--expires-at", expires.isoformat())  # fmt: skip
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        report_when(client, prepaid, lambda d: True)  # the embedded ClickHouse is open and migrated
        assert [client.get(ITEM, headers=prepaid).status_code for _ in range(5)] == [200] * 5
        assert [client.get(ITEM, headers=capped).status_code for _ in range(2)] == [200] * 2

        # Loaded (the burn) and settled: units a capacity lease took ahead stay out of the live balance
        # until the lease ends and the sweep gives them back (a lease period, more while the process is
        # busy loading), so the page can show the 5 rows while a lease still holds the 6th request's price.
        document = report_when(
            client,
            prepaid,
            lambda d: d["balance"]["burn_per_day"][-1]["burned"] == "0.5" and d["balance"]["remaining"] == "11.5",
        )
        balance = document["balance"]
        # The promotional grant burns first (priority -1): 5 x 0.10 from it.
        assert (balance["remaining"], balance["unit"]) == ("11.5", "USD")
        assert Decimal(balance["remaining"]) == held_balance(store, "prepaid-co")
        assert balance["grants"] == [
            {"id": "promo", "status": "active", "amount": "2", "remaining": "1.5",
             "effective_at": balance["grants"][0]["effective_at"], "expires_at": expires_at,
             "priority": -1},
            {"id": "main", "status": "active", "amount": "10", "remaining": "10",
             "effective_at": balance["grants"][1]["effective_at"], "expires_at": None, "priority": 0},
        ]  # fmt: skip
        # Every local day of the period so far (New York days), today's burn the 5 requests' prices.
        days = balance["burn_per_day"]
        today = datetime.now(ZoneInfo(ZONE)).date()
        assert days[-1]["day"] == today.isoformat()
        assert days[0]["day"] == document["period"]["local_start"][:10]
        assert len(days) == (today - datetime.fromisoformat(document["period"]["local_start"]).date()).days + 1
        assert (
            sum(Decimal(d["burned"]) for d in days) == Decimal("0.5") == Decimal(12) - held_balance(store, "prepaid-co")
        )
        assert "spend_cap" not in document, "a prepaid plan without a cap"
        assert shape(balance) == shape(documented()["balance"]), "the documented example is the endpoint's"

        capped_doc = report_when(client, capped, lambda d: True)
        assert "balance" not in capped_doc, "postpaid: no balance"
        assert capped_doc["spend_cap"] == {
            "cap": "3", "spent": "0.6", "unit": "USD", "soft": False, "set_by": "plan", "plan_cap": "3",
            "customer_cap": None,
        }  # fmt: skip
        assert Decimal(capped_doc["spend_cap"]["spent"]) == spent_in_redis(store, "capped-co")


def test_a_customer_lowers_their_own_cap_and_every_process_refuses_at_the_exact_request(
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    store: "redis.Redis[str]",
    tmp_path: Path,
) -> None:
    envoy = usage_stack(tollway_factory, envoy_factory, tmp_path, checkers=2)
    capped = subscribe(valkey_fresh, "lower-co", "capped")
    other = subscribe(valkey_fresh, "other-co", "capped")
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        report_when(client, capped, lambda d: True)
        assert [client.get(ITEM, headers=capped).status_code for _ in range(2)] == [200] * 2  # 0.60 spent
        lowered = client.patch(USAGE, headers={**capped, **PATCH_JSON}, content=b'{"spend_cap":{"amount":"1.00"}}')
        assert lowered.status_code == 200, lowered.text
        assert lowered.json() == {
            "spend_cap": {"cap": "1", "spent": "0.6", "unit": "USD", "soft": False, "set_by": "customer",
                          "plan_cap": "3", "customer_cap": "1"}
        }  # fmt: skip
        assert shape(lowered.json()["spend_cap"]) == shape(documented()["spend_cap"])
        stored = json.loads(store.get("tw:cap:{lower-co}") or "{}")
        assert (stored["amount"], stored["currency"], stored["set_by"]) == ("1", "USD", "customer:lower-co")
        time.sleep(1.3)  # every process's cached cap (at most 1 s old) is read again
        statuses = []
        for _ in range(4):
            response = client.get(ITEM, headers=capped)
            statuses.append(response.status_code)
        # 0.90 fits; 1.20 would cross the customer's 1.00: refused, and every request after it.
        assert statuses == [200, 402, 402, 402]
        problem = client.get(ITEM, headers=capped).json()
        assert problem["type"] == "https://tollway.dev/problems/spend-cap-reached"
        assert (problem["spent"], problem["cap"], problem["price"]) == ("0.9", "1", "0.3")
        assert spent_in_redis(store, "lower-co") == Decimal("0.9")
        # Another customer of the same plan keeps the plan's cap.
        assert [client.get(ITEM, headers=other).status_code for _ in range(4)] == [200] * 4
        assert client.get(USAGE, headers=capped).json()["spend_cap"]["set_by"] == "customer"

        again = client.patch(USAGE, headers={**capped, **PATCH_JSON}, content=b'{"spend_cap":{"amount":1}}')
        assert again.json()["spend_cap"]["customer_cap"] == "1", "the same cap again: no change, no audit entry"
        removed = client.patch(USAGE, headers={**capped, **PATCH_JSON}, content=b'{"spend_cap":null}')
        assert removed.status_code == 200, removed.text
        assert removed.json()["spend_cap"]["set_by"] == "plan"
        assert store.get("tw:cap:{lower-co}") is None
        time.sleep(1.3)
        assert [client.get(ITEM, headers=capped).status_code for _ in range(8)] == [200] * 7 + [402]  # 3.00
        audit = [fields for _, fields in store.xrange("tw:admin-audit")]
        assert [(a["action"], a["actor"], a["resource_id"]) for a in audit] == [
            ("spend_cap.set", "customer:lower-co", "lower-co"),
            ("spend_cap.remove", "customer:lower-co", "lower-co"),
        ]
        assert json.loads(audit[0]["after"]) == {"amount": "1", "currency": "USD"}


BAD = [
    (b"not json", "application/merge-patch+json", 400, "invalid-body"),
    (b'{"spend_cap":{"amount":"-1.00"}}', "application/merge-patch+json", 422, "invalid-spend-cap"),
    (b'{"spend_cap":{"amount":"0"}}', "application/json", 422, "invalid-spend-cap"),
    (b'{"spend_cap":{"amount":"1.005"}}', "application/merge-patch+json", 422, "invalid-spend-cap"),
    ('{"spend_cap":{"amount":"١.00"}}'.encode(), "application/merge-patch+json", 422, "invalid-spend-cap"),
    (b'{"spend_cap":{"amount":"3.01"}}', "application/merge-patch+json", 422, "spend-cap-above-plan"),
    (b'{"spend_cap":{"amount":"1.00"}}', "text/plain", 415, "unsupported-media-type"),
    (b'{"cap":"1.00"}', "application/merge-patch+json", 422, "invalid-spend-cap"),
]


def test_bad_changes_are_problems_and_write_nothing(
    valkey_fresh: ValkeyServer,
    tollway_factory: TollwayFactory,
    envoy_factory: EnvoyFactory,
    store: "redis.Redis[str]",
    tmp_path: Path,
) -> None:
    envoy = usage_stack(tollway_factory, envoy_factory, tmp_path)
    capped = subscribe(valkey_fresh, "bad-co", "capped")
    prepaid = subscribe(valkey_fresh, "nocap-co", "prepaid")
    with httpx.Client(base_url=envoy.base_url, timeout=5) as client:
        report_when(client, capped, lambda d: True)
        for body, content_type, status, slug in BAD:
            response = client.patch(USAGE, headers={**capped, "content-type": content_type}, content=body)
            assert response.status_code == status, (body, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["type"] == f"https://tollway.dev/problems/{slug}"
            assert (problem["status"], bool(problem["detail"])) == (status, True)
        nocap = client.patch(USAGE, headers={**prepaid, **PATCH_JSON}, content=b'{"spend_cap":{"amount":"1"}}')
        assert nocap.status_code == 409, nocap.text
        assert nocap.json()["type"].endswith("/no-spend-cap")
        unauthenticated = client.patch(USAGE, headers=PATCH_JSON, content=b'{"spend_cap":null}')
        assert unauthenticated.status_code == 401
        assert client.put(USAGE, headers={**capped, **PATCH_JSON}, content=b"{}").status_code == 405
        for size in (5000, 300_000):  # answered at once, before the body ends: a problem, never a 5xx
            big = client.patch(USAGE, headers={**capped, **PATCH_JSON}, content=b" " * size)
            assert big.status_code == 413, big.text
            assert big.json()["type"].endswith("/body-too-large")

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.one_of(
                st.binary(max_size=200),
                st.text(max_size=20).map(lambda t: json.dumps({"spend_cap": {"amount": t}}).encode()),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6,
                ).map(lambda v: json.dumps({"spend_cap": v}).encode()),
            )
        )
        def never_a_5xx(body: bytes) -> None:
            response = client.patch(USAGE, headers={**capped, **PATCH_JSON}, content=body)
            assert response.status_code < 500, (body, response.status_code, response.text)
            if response.status_code == 200:  # a valid body: set or remove, then put back to none
                store.delete("tw:cap:{bad-co}")

        never_a_5xx()
    assert store.get("tw:cap:{bad-co}") is None
    assert store.get("tw:cap:{nocap-co}") is None
