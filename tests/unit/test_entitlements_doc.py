"""docs/entitlements.md's worked examples, executed: its catalog as written, each table row one request
through the decision core at the given instant, with the expected status and RateLimit field."""

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.fakes import MemoryKeyStore
from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Deny
from tollway.extproc.decision import DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

DOC = Path(__file__).parents[2] / "docs" / "entitlements.md"
ROW = re.compile(r"^\| (\d+) \| (\S+) \| (\S+) (\S+) \| (\d{3}) \| ?`?([^|`]*)`? ?\| (.*) \|$")


def worked_example() -> tuple[str, list[tuple[str, datetime, str, str, int, str, str]]]:
    text = DOC.read_text()
    catalog = text.split("<!-- worked-example-catalog -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    table = text.split("<!-- worked-example-requests -->", 1)[1]
    rows = []
    for line in table.splitlines():
        match = ROW.match(line.strip())
        if match:
            number, instant, method, path, status, ratelimit, why = match.groups()
            at = datetime.fromisoformat(instant.replace("Z", "+00:00"))
            rows.append((number, at, method, path, int(status), ratelimit.strip(), why))
    return catalog, rows


def test_the_document_has_its_examples() -> None:
    catalog, rows = worked_example()
    assert "PlanCatalog" in catalog
    assert len(rows) >= 10


def test_worked_examples() -> None:
    catalog_text, rows = worked_example()

    async def scenario() -> list[str]:
        clock = ManualClock(rows[0][1])
        digester = KeyDigester(b"d" * 32)
        keys = MemoryKeyStore()
        issued = await Keyring(keys, digester, clock).create("acme")
        subscriptions = MemorySubscriptionStore()
        await subscriptions.put(
            Subscription.new("acme", "starter", datetime(2026, 1, 1, tzinfo=UTC), timezone="Europe/Paris")
        )
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(catalog_text, str(DOC))),
            SubscriptionResolver(subscriptions, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
        )
        core = DecisionCore(Authenticator(keys, digester, KeyCache(clock.monotonic), clock), Refusals(), gate=gate)
        failures = []
        for number, at, method, path, status, ratelimit, why in rows:
            clock.set(at)
            request = CheckRequest(method, path, {"x-api-key": issued.secret}, f"req-{number}")
            decision = await core.decide(request)
            got_status = 200 if isinstance(decision, Allow) else decision.status
            headers = dict(decision.client_headers if isinstance(decision, Allow) else decision.headers)
            got = headers.get("ratelimit", "")
            if got_status != status or got != ratelimit:
                failures.append(f"row {number} ({why}): expected {status} `{ratelimit}`, got {got_status} `{got}`")
            if isinstance(decision, Deny) and status == 403:
                assert why.split("`")[1] in decision.body.decode(), f"row {number}"
        return failures

    failures = asyncio.run(scenario())
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["catalog.yaml", "configmap.yaml"])
def test_example_catalogs_load(name: str) -> None:
    from tollway.plans.loader import load_compiled_catalog

    assert load_compiled_catalog(Path(__file__).parents[2] / "plans" / name).plans


def addons_example() -> tuple[str, list[list[str]]]:
    text = DOC.read_text()
    catalog = text.split("<!-- addons-example-catalog -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    table = text.split("<!-- addons-example-table -->", 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()]
    return catalog, rows[2:]


def test_the_add_on_combination_rules_as_the_page_shows_them() -> None:
    """docs/entitlements.md#add-ons: each row's add-ons → the combined id, the features granted and each
    policy's limit for a `search` request, computed by the compiled catalog the gate uses."""
    from tollway.plans.combined_ids import combined_plan_id

    text, rows = addons_example()
    catalog = compile_catalog_text(text, "addons-example.yaml")
    assert len(rows) >= 6
    for held, combined, features, per_second, per_day, monthly, _ in rows:
        addons = []
        for item in held.split(", ") if held != "none" else []:
            name, _, quantity = item.partition(" × ")
            addons.append((name, int(quantity or 1)))
        assert combined_plan_id("pro", addons) == combined, held
        granted = [f for f in ("search", "export") if catalog.plan_grants(combined, f)]
        assert granted == features.split(", "), held
        limits = {
            p.name: str(p.limit)
            for p in (*catalog.limits_for(combined, "search"), *catalog.quotas_for(combined, "search"))
        }
        expected = {"per_second": per_second, "per_day": per_day, "monthly": monthly}
        assert limits == {name: value for name, value in expected.items() if value}, held
