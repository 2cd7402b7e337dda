"""``make demo``'s stage 5 (``tollway.demo.billing``, issue 16) against a real Valkey and an embedded
ClickHouse, without Envoy: stark's calls of stage 2 are usage rows loaded directly.

Hand-computed (USD), with the example catalog ``plans/catalog.yaml``:
- pro's platform fee 49.00 (version 1) → 59.00 (version 2); pro's launch discount takes 20 % of each of
  a subscriber's first 3 invoices: initech (stays on version 1 this month) 49.00 − 9.80 = 39.20, before and
  after the price change and the migration; wayne (sold pro@2) 59.00 − 11.80 = 47.20. initech's preview:
  this month 39.20 → 39.20; next month 39.20 → 47.20.
- umbrella on team (270.00 a quarter in advance, no usage) with a 300.00 coupon: last quarter 270.00 −
  270.00 = 0.00, 30.00 carried; this quarter 270.00 − 30.00 = 240.00, 0.00 left.
- stark on scale (99.00 a month, 0.50 a call, minimum 150.00, interim invoice at 100.00), 4 calls: owed so
  far 99.00 + 2.00 = 101.00 ≥ 100.00 → interim invoice 1 of 101.00; the month: 101.00 + the minimum's
  true-up 49.00 = 150.00, less 101.00 → 49.00.
- soylent on startup (30.00 a month, a 14-day free trial) from 1 November 2026 (30 days, 720 h): the trial
  would end on 15 November; ``set --end-phase --effective 2026-11-08T12:00:00Z`` ends it after 7.5 days.
  3 calls packs (10.00 each a month) held from 11 November to 26 November: 15 of 30 days. November's
  invoice, a section per subscription: startup:trial 0.00 (free, 1–8 November 12:00); startup 30.00 ×
  22.5/30 = 22.50 (8 November 12:00 – 1 December, no usage); calls-pack × 3: 3 × 10.00 × 15/30 = 15.00;
  total 0.00 + 22.50 + 15.00 = 37.50. Finalized at the end (the demo's last step), as a PDF.
"""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest

from tests.integration.test_bill import LOAD_USAGE, cli_env
from tests.support.usage_rows import usage_row
from tollway.demo import billing
from tollway.harness.valkey import ValkeyServer
from tollway.plans.loader import load_catalog
from tollway.plans.versions import version_digest

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "plans" / "catalog.yaml"


def test_stage_5_shows_versions_phases_add_ons_a_quarterly_coupon_and_progressive_invoicing(
    valkey_fresh: ValkeyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    engine = tmp_path / "chdb"
    rows = tmp_path / "usage.jsonl"
    day = f"{now:%Y-%m-%d} 00:00:0"
    rows.write_bytes(
        b"".join(
            usage_row(f"req-{n}", f"{day}{n}", "stark", {"requests": 1}, plan="scale", feature="items-read")
            for n in range(billing.PROGRESSIVE_CALLS)
        )
    )
    subprocess.run([sys.executable, "-c", LOAD_USAGE, str(engine), str(rows)], check=True, timeout=120)
    env = {**cli_env(valkey_fresh, engine), "TOLLWAY_CATALOG": str(CATALOG), "TOLLWAY_PEPPER": "p" * 64}
    # stage 1's customer on the free plan (no pricing) and stage 4's paying customer, as the demo subscribes them
    billing.cli(env, "subscriptions", "set", "--customer", "acme-corp", "--plan", "free")
    billing.cli(env, "subscriptions", "set", "--customer", billing.EXISTING, "--plan", "pro",
                "--start", billing.month_start(now))  # fmt: skip
    key = billing.subscribe(env, CATALOG, now)
    assert str(key["api_key"]).startswith("tw_")

    failures = billing.run(env, CATALOG, tmp_path, tmp_path / "invoices", now)

    out = capsys.readouterr().out
    assert failures == 0, out
    assert "UNEXPECTED" not in out
    assert "has no pricing" not in out  # acme-corp, on the free plan, has nothing to re-rate: no row, no failure
    for shown in [
        "wayne is sold pro@2  [ok]",
        "the new version re-prices nobody: initech and the others stay on version 1  [ok]",
        "wayne pays 59.00  [ok]",
        "current  period from",
        "39.20 → 39.20 (difference 0.00)",
        "39.20 → 47.20 (difference 8.00)",
        "coupon: 300.00 before the first invoice, 30.00 carried to the next, 0.00 left  [ok]",
        "interim invoice 1: 101.00 USD, finalized when issued  [ok]",
        "the month's invoice: 150.00 in all, less the interim 101.00: 49.00 still due  [ok]",
        "soylent gets startup's 14-day trial: startup:trial from 2026-11-01T00:00:00Z until "
        "2026-11-15T00:00:00Z, then startup  [ok]",
        "it converts early: the trial ends at 2026-11-08T12:00:00Z, startup from then on  [ok]",
        "soylent holds calls-pack × 3 from 2026-11-11T00:00:00Z until 2026-11-26T00:00:00Z  [ok]",
        "a section each: the trial 0.00, startup prorated from the conversion, the packs prorated: 37.50  [ok]",
    ]:
        assert shown.format(month=f"{now:%Y-%m}") in out, out
    # The end of the demo: soylent's November invoice finalized, as a PDF (path printed) with its total,
    # and its number and due date, which finalization sets (read from the stored document).
    published = {**env, "TOLLWAY_CATALOG": str(tmp_path / billing.PUBLISHED)}
    assert billing.sendable(published, tmp_path / "invoices") == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("with its number and due date  [ok]"), out
    [shown] = [line for line in out.splitlines() if line.startswith("  invoice PDF: ")]
    pdf = Path(shown.removeprefix("  invoice PDF: "))
    document = json.loads(pdf.with_suffix(".json").read_text())
    assert (document["status"], document["total"]) == ("finalized", "37.50")
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(pdf).pages)
    assert "37.50 USD" in text
    for key in ("number", "due_on"):  # set at finalization (numbering)
        assert document[key] in text
        assert document[key] in out
    # version 1 is pro as it was (same digest); version 2 has its own stamp
    published = load_catalog(tmp_path / "catalog-pro-2.yaml").plans
    assert published["pro@1"].published == version_digest(load_catalog(CATALOG).plans["pro"])
    assert published["pro@2"].published not in (None, published["pro@1"].published)
