"""An interval the plan cannot align is refused where subscriptions are made (issue 16, item 4): the
``tollway subscriptions set`` command (exit 2, a message, nothing written) and the admin API (422
problem+json, nothing written), on a real Valkey. A plan's amounts are per its ``pricing.interval``, so a
subscription to it must be billed on that interval, and a running subscription keeps its interval."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.admin_api import PROBLEM, AdminApi, admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import run_cli
from tollway.admin.scopes import Scope
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: intervals, version: "1"}
plans:
  monthly:
    pricing:
      currency: USD
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
  quarterly:
    pricing:
      currency: USD
      interval: quarter
      charges:
        - {id: platform, model: flat, amount: "27.00"}
  weekly:
    pricing:
      currency: USD
      interval: week
      charges:
        - {id: platform, model: flat, amount: "3.00"}
"""


def write_catalog(directory: Path) -> Path:
    path = directory / "intervals.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def test_the_cli_refuses_an_interval_the_plan_is_not_priced_per(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    catalog = str(write_catalog(tmp_path))
    base = ("subscriptions", "set", "--customer", "acme", "--catalog", catalog, "--json")
    refused = run_cli(valkey_fresh.url, *base, "--plan", "monthly", "--interval", "week")
    assert refused.code == 2, refused.stderr
    assert (
        "plan 'monthly' is priced per month: a subscription to it is billed monthly, not weekly (--interval week)"
        in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert run_cli(valkey_fresh.url, "subscriptions", "show", "--customer", "acme").code == 1, "nothing written"

    synonym = run_cli(valkey_fresh.url, *base, "--plan", "monthly", "--interval", "semiannual")
    assert synonym.code == 2
    assert "interval 'semiannual' is not one of week, month, quarter, half_year, year (write 'half_year')" in (
        synonym.stderr
    )

    created = run_cli(
        valkey_fresh.url, *base, "--plan", "quarterly", "--start", "2026-01-31", "--alignment", "anniversary"
    )
    assert created.code == 0, created.stderr
    body = created.json()
    assert body["interval"] == "quarter"  # the plan's
    shown = run_cli(valkey_fresh.url, "subscriptions", "show", "--customer", "acme")
    assert "periods    quarterly, anniversary" in shown.stdout

    # A plan change to a plan priced per week would cut the running quarter into weeks.
    change = run_cli(valkey_fresh.url, *base, "--plan", "weekly")
    assert change.code == 2
    assert "billed quarterly since 2026-01-31T00:00:00Z, and a running subscription keeps its interval" in change.stderr
    after = run_cli(valkey_fresh.url, "subscriptions", "show", "--customer", "acme", "--json").json()
    assert (after["plan_id"], after["interval"], after["plan_changes"]) == ("quarterly", "quarter", [])
    # A new start is a new subscription: it may take the new plan's interval.
    restarted = run_cli(valkey_fresh.url, *base, "--plan", "weekly", "--start", "now")
    assert restarted.code == 0, restarted.stderr
    assert restarted.json()["interval"] == "week"


Scenario = Callable[[AdminApi], Awaitable[None]]


def run(valkey: ValkeyServer, chdb_db: ChdbDatabase, scenario: Scenario, catalog: Path) -> None:
    async def go() -> None:
        async with admin_api(valkey.url, chdb_db, catalog=catalog) as api:
            await scenario(api)

    asyncio.run(go())


def assert_422(response: Any) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/validation-error")
    detail: str = body["detail"]
    return detail


def test_the_admin_api_refuses_an_interval_the_plan_is_not_priced_per(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    async def scenario(api: AdminApi) -> None:
        writer = await api.token("ops", Scope.WRITE)
        created = await api.http.post("/customers", json={"customer_id": "acme"}, headers=writer)
        assert created.status_code == 201, created.text
        path = "/customers/acme/subscription"

        weekly = await api.http.put(path, json={"plan_id": "monthly", "interval": "week"}, headers=writer)
        assert "plan 'monthly' is priced per month: a subscription to it is billed monthly, not weekly" in (
            assert_422(weekly)
        )
        semiannual = await api.http.put(path, json={"plan_id": "monthly", "interval": "semiannual"}, headers=writer)
        assert "(write 'half_year')" in json.dumps(semiannual.json())
        assert semiannual.status_code == 422
        assert (await api.http.get(path, headers=writer)).status_code == 404, "nothing written"

        quarterly = await api.http.put(
            path, json={"plan_id": "quarterly", "started_at": "2026-01-31", "alignment": "anniversary"}, headers=writer
        )
        assert quarterly.status_code == 201, quarterly.text
        assert quarterly.json()["interval"] == "quarter"
        assert quarterly.json()["current_period"]["start"] == "2026-10-31T00:00:00Z"  # Jan 31, Apr 30, Jul 31, Oct 31

        change = await api.http.post(path + "/plan-changes", json={"plan_id": "monthly"}, headers=writer)
        assert "plan 'monthly' is priced per month: a subscription to it is billed monthly, not quarterly" in (
            assert_422(change)
        )
        put_change = await api.http.put(path, json={"plan_id": "weekly"}, headers=writer)
        assert "a running subscription keeps its interval" in assert_422(put_change)
        stored = (await api.http.get(path, headers=writer)).json()
        assert (stored["plan_id"], stored["interval"], stored["plan_changes"]) == ("quarterly", "quarter", [])
        actions = [entry["action"] for entry in (await api.http.get("/audit", headers=writer)).json()["items"]]
        assert actions == ["subscription.create", "customer.create"], "nothing written by a refusal"

    run(valkey_fresh, chdb_db, scenario, write_catalog(tmp_path))
