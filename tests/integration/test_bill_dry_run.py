"""``tollway bill --dry-run`` with a subscriber of a plan that has no pricing (a free plan, as
``make demo``'s acme-corp is): that customer has nothing to re-rate (no row, like a customer without a
period in the month), and the others are re-rated (exit status 0: a free customer is not a failure)."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.test_bill import CATALOG, LOAD_USAGE, NEW_CATALOG, cli_env, subscribe, tollway
from tests.support.usage_rows import usage_row
from tollway.harness.valkey import ValkeyServer
from tollway.subscriptions.model import Subscription

pytestmark = pytest.mark.integration

FREE = "  free:\n    features: []\n"


def test_dry_run_re_rates_the_others_and_leaves_a_free_customer_out(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    engine, rows = tmp_path / "chdb", tmp_path / "usage.jsonl"
    rows.write_bytes(usage_row("r1", "2026-10-03 10:00:00", "acme", {"requests": 1}))
    subprocess.run([sys.executable, "-c", LOAD_USAGE, str(engine), str(rows)], check=True, timeout=120)
    (tmp_path / "old.yaml").write_text(CATALOG + FREE)
    (tmp_path / "new.yaml").write_text(NEW_CATALOG + FREE)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    subscribe(valkey_fresh, [Subscription.new("acme", "metered", start), Subscription.new("gratis", "free", start)])
    env = {**cli_env(valkey_fresh, engine), "TOLLWAY_CATALOG": "old.yaml"}

    done = tollway(env, tmp_path, "bill", "--period", "2026-10", "--dry-run", "--plans", "new.yaml")

    # acme: 10.00 + 1 × 0.50 = 10.50 under the old catalog; NEW_CATALOG's prices under the new one.
    assert done.code == 0, done
    table = [line.split() for line in done.stdout.splitlines()]
    assert table[0] == ["CUSTOMER", "OLD", "NEW", "DIFFERENCE", "CURRENCY"]
    assert [fields[:2] for fields in table[1:]] == [["acme", "10.50"]]
    assert done.stderr.strip() == ""
