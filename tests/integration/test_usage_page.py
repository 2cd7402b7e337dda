"""The customer's usage and invoice page, end to end: known usage in the embedded ClickHouse, two
billed months, the admin API served on a loopback port, a signed page link — and headless Chromium
opening the link, rendering the page and taking a screenshot. The chart must show the test's usage:
the bars' values (read back from the page as Chromium saw it) equal the usage per local day."""

import asyncio
import os
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.admin_api import (
    NOW,
    create_token,
    insert_usage,
    prepare_warehouse,
    served_admin_api,
    usage_row,
    write_catalog,
)
from tests.support.chdb_engine import ChdbDatabase
from tollway.admin.scopes import Scope
from tollway.billing.render import to_html
from tollway.cli.bill import bill
from tollway.customers.store import CustomerRecord, RedisCustomerStore
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog
from tollway.subscriptions.model import Subscription
from tollway.subscriptions.redis_store import RedisSubscriptionStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WINDOW = (1280, 1240)

# Requests per local (Europe/Paris) day of November 2026 — the customer's current billing period.
DAILY = {
    "2026-11-01": 1,  # one request at 2026-10-31 23:30 UTC: already November 1 in Paris
    "2026-11-02": 3,
    "2026-11-03": 5,
    "2026-11-05": 2,
    "2026-11-09": 8,
    "2026-11-10": 4,
    "2026-11-16": 6,
    "2026-11-17": 7,
    "2026-11-23": 9,
    "2026-11-24": 5,
}
EGRESS_PER_REQUEST = 2048


def usage() -> list[bytes]:
    rows = [usage_row("nov1", "2026-10-31 23:30:00", "acme", {"requests": 1, "egress": EGRESS_PER_REQUEST})]
    for day, count in DAILY.items():
        if day == "2026-11-01":
            continue
        for n in range(count):
            rows.append(
                usage_row(f"{day}-{n}", f"{day} 10:{n:02d}:00", "acme", {"requests": 1, "egress": EGRESS_PER_REQUEST})
            )
    rows += [
        # refused: never on the chart; December in Paris: outside the period; another customer's
        usage_row("refused", "2026-11-02 12:00:00", "acme", {"requests": 1}, status=429, outcome="refused", version=1),
        usage_row("dec", "2026-11-30 23:30:00", "acme", {"requests": 1}),
        usage_row("other", "2026-11-02 12:00:00", "globex", {"requests": 1}),
        # October, for the October invoice
        *(usage_row(f"oct-{n}", "2026-10-15 09:00:00", "acme", {"requests": 1}) for n in range(4)),
    ]
    return rows


def chart_values(html: str, meter: str) -> dict[str, str]:
    """Day → value of every bar of ``meter``'s chart."""
    import re

    svg = re.search(rf'<svg[^>]*data-meter="{meter}".*?</svg>', html, re.S)
    assert svg is not None, f"no chart for {meter}"
    return dict(re.findall(r'<rect class="bar"[^>]*data-day="([0-9-]+)" data-value="([0-9.]+)"', svg.group(0)))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",  # root in CI; the page is our own
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def seed(redis_url: str) -> None:
    from redis.asyncio import Redis as AsyncRedis

    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        await RedisCustomerStore(redis).put(CustomerRecord("acme", "Acme Corp", "billing@acme.test", NOW))
        subscription = Subscription.new("acme", "basic", NOW.replace(month=1, day=1), timezone="Europe/Paris")
        await RedisSubscriptionStore(redis).put(subscription)
    finally:
        await redis.aclose()


def test_usage_page_in_headless_chromium(valkey_fresh: ValkeyServer, chdb_db: ChdbDatabase, tmp_path: Path) -> None:
    binary = chromium()
    client, database = chdb_db
    insert_usage(chdb_db, usage())
    catalog = write_catalog(tmp_path)
    asyncio.run(seed(valkey_fresh.url))
    subscriptions = [s for s in asyncio.run(_subscriptions(valkey_fresh.url)) if s.customer_id == "acme"]
    plans = load_catalog(catalog)
    october = bill(client, database, plans, subscriptions, "2026-10", now=NOW, finalize=True).results[0].document
    november = bill(client, database, plans, subscriptions, "2026-11", now=NOW).results[0].document
    writer = asyncio.run(create_token(valkey_fresh.url, "page-test", Scope.WRITE))

    with served_admin_api(valkey_fresh.url, prepare_warehouse(chdb_db), catalog=catalog) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            link = http.post(
                "/customers/acme/page-links", json={"ttl_seconds": 3600}, headers={"Authorization": f"Bearer {writer}"}
            )
            assert link.status_code == 201, link.text
            url = base + link.json()["url"]
            page = http.get(url)
            assert page.status_code == 200, page.text
            html = page.text

            # the served page: every day of the Paris November, with the test's usage
            expected = {f"2026-11-{d:02d}": str(DAILY.get(f"2026-11-{d:02d}", 0)) for d in range(1, 31)}
            assert chart_values(html, "requests") == expected
            egress = chart_values(html, "egress")
            assert egress == {day: str(int(v) * EGRESS_PER_REQUEST) for day, v in expected.items()}
            total = sum(DAILY.values())
            assert f'data-meter="requests" data-quantity="{total}"' in html
            assert f'data-meter="egress" data-quantity="{total * EGRESS_PER_REQUEST}"' in html
            assert "Acme Corp" in html
            assert "plan basic" in html
            assert "2026-11-01 00:00 to 2026-12-01 00:00 (Europe/Paris)" in html

            # the invoices, linked with the same token; their pages open
            token = link.json()["url"].split("token=")[1]
            for document in (october, november):
                href = f"/customers/acme/invoices/{document['invoice_id']}/html?token={token}"
                assert href in html
                invoice = http.get(href)
                assert invoice.status_code == 200
                assert invoice.text == to_html(document)
                pdf = href.replace("/html?", "/pdf?")
                assert f'href="{pdf}"' in html, "each invoice's PDF is linked too"
                opened = http.get(pdf)
                assert (opened.status_code, opened.headers["content-type"]) == (200, "application/pdf")
            assert november["total"] == f"{10 + total * 0.5:.2f}"  # 10.00 + 50 requests × 0.50

            # a link is for one customer, and only until it expires
            other = http.get(f"/customers/globex/page?token={token}")
            assert other.status_code == 401
            assert other.headers["content-type"] == "application/problem+json"
            assert http.get("/customers/acme/page").status_code == 401

        # what Chromium renders: the same bars, read from its DOM, and a screenshot of the page
        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert chart_values(dom.stdout, "requests") == expected
        screenshot = tmp_path / "usage-page.png"
        shot = run_chromium(
            binary,
            tmp_path / "profile-shot",
            f"--screenshot={screenshot}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            url,
        )
        assert shot.returncode == 0, shot.stderr[-2000:]

    assert screenshot.exists()
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank or error tab
    if os.environ.get("TOLLWAY_UPDATE_DOC_IMAGES"):
        target = ROOT / "docs" / "images" / "usage-page.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)


async def _subscriptions(redis_url: str) -> list[Subscription]:
    from redis.asyncio import Redis as AsyncRedis

    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        return await RedisSubscriptionStore(redis).list()
    finally:
        await redis.aclose()
