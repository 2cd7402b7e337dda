"""The customer page's money part, end to end: a prepaid customer's balance (grants with expiry, the
balance burned per local day from the usage rows' prices) and a capped customer's spend against their
own cap, served by the admin API and rendered by headless Chromium."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.integration.test_usage_page import chart_values, chromium, run_chromium
from tests.support.admin_api import NOW, create_token, insert_usage, prepare_warehouse, served_admin_api
from tests.support.chdb_engine import ChdbDatabase
from tests.support.usage_rows import ms
from tollway.admin.scopes import Scope
from tollway.credits.grants import GrantState
from tollway.credits.spend_caps import CustomerCapStore
from tollway.credits.store import GrantInfo, GrantStore
from tollway.customers.store import CustomerRecord, RedisCustomerStore
from tollway.harness.valkey import ValkeyServer
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.usage.row import UsageRow, encode_row

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "fixtures" / "usage" / "money.yaml"
ZONE = "Europe/Paris"
PERIOD_START_MS = ms("2026-10-31 23:00:00")  # November 1 in Paris
BURNS = {"2026-11-01": 1, "2026-11-03": 3, "2026-11-20": 1}  # requests at 0.10 USD per local day


def row(request_id: str, ts: str, customer: str, price_micros: int, unit: str) -> bytes:
    return encode_row(
        UsageRow(
            request_id=request_id, ts_ms=ms(ts), customer_id=customer, subject="key", plan="prepaid",
            feature="items-read", route="/v1/items/{item_id}", method="GET", status=200, outcome="admitted",
            reason="", limits_checked=True, request_bytes=0, response_bytes=0, upstream_latency_ms=1.0,
            meters={"requests": 1}, version=2, price_micros=price_micros, balance_unit=unit,
        )
    )  # fmt: skip


def rows() -> list[bytes]:
    out = [row("early", "2026-10-31 23:30:00", "prepay", 100_000, "USD")]  # Paris: November 1
    out += [row(f"d3-{n}", f"2026-11-03 10:0{n}:00", "prepay", 100_000, "USD") for n in range(3)]
    out.append(row("d20", "2026-11-20 10:00:00", "prepay", 100_000, "USD"))
    out.append(row("postpaid", "2026-11-04 10:00:00", "prepay", 300_000, ""))  # a spend, not a burn
    out.append(row("october", "2026-10-31 22:30:00", "prepay", 100_000, "USD"))  # Paris: October 31
    return out


async def seed(redis_url: str) -> None:
    from redis.asyncio import Redis as AsyncRedis

    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        customers = RedisCustomerStore(redis)
        subscriptions = RedisSubscriptionStore(redis)
        for customer, plan in (("prepay", "prepaid"), ("capco", "capped")):
            await customers.put(CustomerRecord(customer, customer.title(), f"billing@{customer}.test", NOW))
            await subscriptions.put(Subscription.new(customer, plan, datetime(2026, 1, 1, tzinfo=UTC), timezone=ZONE))
        grants = GrantStore(redis)
        created = ms("2026-11-01 09:00:00")
        promo = GrantInfo("promo", Decimal(2), "USD", created, ms("2026-12-15 00:00:00"), -1, None, "", created, "t")
        main = GrantInfo("main", Decimal(10), "USD", created, None, 0, None, "top-up", created, "t")
        for info in (promo, main):
            await grants.make("prepay", info)
        # What the limiter burned for the 5 November requests (0.50), from the promotional grant first.
        record = GrantState.decode("promo", await redis.hget(grants.grants_key("prepay"), "promo") or "")
        await redis.hset(grants.grants_key("prepay"), "promo", replace(record, remaining=1_500_000).encode())
        await redis.set(f"tw:sp:{{capco}}:{PERIOD_START_MS}", 600_000)
        await CustomerCapStore(redis).set("capco", Decimal("1.00"), "USD", at=NOW)
    finally:
        await redis.aclose()


def test_the_page_shows_balance_grants_burn_per_day_and_spend_cap(
    valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path
) -> None:
    binary = chromium()
    insert_usage(chdb_db, rows())
    asyncio.run(seed(valkey_fresh.url))
    writer = asyncio.run(create_token(valkey_fresh.url, "page-test", Scope.WRITE))
    auth = {"Authorization": f"Bearer {writer}"}
    with served_admin_api(valkey_fresh.url, prepare_warehouse(chdb_db), catalog=CATALOG) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            page = http.get("/customers/prepay/page", headers=auth)
            assert page.status_code == 200, page.text
            html = page.text
            assert 'id="balance" data-remaining="11.5" data-unit="USD"' in html
            assert html.index('data-grant="promo"') < html.index('data-grant="main"'), "burn order"
            assert "2026-12-15T00:00:00.000Z" in html, "the promotional grant's expiry"
            expected = {f"2026-11-{d:02d}": "0" for d in range(1, 31)}
            expected.update({"2026-11-01": "0.1", "2026-11-03": "0.3", "2026-11-20": "0.1"})
            assert chart_values(html, "burn") == expected
            assert 'id="spend-cap"' not in html

            capped = http.get("/customers/capco/page", headers=auth)
            assert capped.status_code == 200, capped.text
            assert 'id="spend-cap" data-spent="0.6" data-cap="1" data-set-by="customer"' in capped.text
            assert 'id="balance"' not in capped.text
            link = http.post("/customers/prepay/page-links", json={"ttl_seconds": 3600}, headers=auth)
            assert link.status_code == 201, link.text
            url = base + link.json()["url"]

        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert chart_values(dom.stdout, "burn") == expected
        assert 'data-remaining="11.5"' in dom.stdout
