"""docs/authentication.md's OAuth example, executed: its token script run as written, its issuers file and
catalog feature loaded as written, and the two calls of its shell example decided by the decision core."""

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.unit.fakes import MemoryKeyStore
from tests.unit.subscriptions.fakes import MemorySubscriptionStore
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.jwt.authenticator import TokenAuthenticator
from tollway.auth.jwt.issuers import load_issuers
from tollway.clock import SystemClock
from tollway.entitlements.gate import EntitlementGate
from tollway.entitlements.live_catalog import LiveCatalog
from tollway.extproc.check import Allow, CheckRequest, Deny
from tollway.extproc.decision import DecisionCore
from tollway.extproc.problems import Refusals
from tollway.plans.loader import compile_catalog_text
from tollway.ratelimit import MemoryLimiter
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.resolver import SubscriptionCache, SubscriptionResolver

DOC = Path(__file__).parents[3] / "docs" / "authentication.md"


def block(marker: str, language: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split(f"<!-- {marker} -->", 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def catalog_with_the_doc_feature() -> str:
    feature = block("oauth-example-feature", "yaml").split("features:\n", 1)[1]
    return (
        "apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: doc, version: '1'}\n"
        "features:\n"
        f"{feature}"
        "  items-read:\n"
        "    routes:\n"
        '      - {methods: [GET], path: "/v1/items/{item_id}"}\n'
        "plans:\n"
        "  pro: {features: [items-read, items-write]}\n"
    )


def test_the_documented_token_passes_and_its_missing_scope_is_named(tmp_path: Path) -> None:
    (tmp_path / "mint-token.py").write_text(block("oauth-example-mint", "python"))
    (tmp_path / "issuers.yaml").write_text(block("oauth-example-issuers", "yaml"))
    minted = subprocess.run(
        [sys.executable, "mint-token.py", "acme-corp", "items:read"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = minted.stdout.strip()
    assert token.count(".") == 2
    assert (tmp_path / "local-idp.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")

    async def scenario() -> tuple[Allow | Deny, Allow | Deny]:
        clock = SystemClock()
        subscriptions = MemorySubscriptionStore()
        await subscriptions.put(Subscription.new("acme-corp", "pro", datetime(2026, 1, 1, tzinfo=UTC)))
        gate = EntitlementGate(
            LiveCatalog(compile_catalog_text(catalog_with_the_doc_feature(), str(DOC))),
            SubscriptionResolver(subscriptions, SubscriptionCache(clock.monotonic)),
            MemoryLimiter(),
            clock,
        )
        tokens = TokenAuthenticator.build(load_issuers(tmp_path / "issuers.yaml", {}), clock)
        keys = MemoryKeyStore()
        auth = Authenticator(keys, KeyDigester(b"d" * 32), KeyCache(clock.monotonic), clock, tokens=tokens)
        core = DecisionCore(auth, Refusals(), gate=gate)
        headers = {"authorization": f"Bearer {token}"}
        read = await core.decide(CheckRequest("GET", "/v1/items/7", headers, "r-1"))
        write = await core.decide(CheckRequest("PUT", "/v1/items/7", headers, "r-2"))
        return read, write

    read, write = asyncio.run(scenario())
    assert isinstance(read, Allow), read
    upstream = dict(read.upstream_headers)
    assert upstream["x-tollway-customer-id"] == "acme-corp"
    assert upstream["x-tollway-key-id"] == "jwt:local-idp:acme-corp"
    assert isinstance(write, Deny)
    assert write.status == 403
    body = json.loads(write.body)
    assert body["type"].endswith("/insufficient-scope")
    assert "'items:write'" in body["detail"]


def test_every_documented_refusal_slug_has_a_title() -> None:
    from tollway.extproc.problems import AUTH_TITLES

    table = DOC.read_text(encoding="utf-8").split("### Token refusals", 1)[1].split("## Settings", 1)[0]
    slugs = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `") and "type" not in line]
    assert len(slugs) >= 10
    for slug in slugs:
        assert slug in AUTH_TITLES, slug
        if AUTH_TITLES[slug] != "Invalid token claim" and slug != "missing-token-claim":
            assert f"| {AUTH_TITLES[slug]} |" in table, slug
