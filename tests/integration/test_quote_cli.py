"""``tollway quote`` as a salesperson runs it: a subprocess, the catalog file, typed-in usage. Stripe's
published tiered example reproduced to the cent; every kind of bad input is one line on stderr, exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tollway_cli import CliResult

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STRIPE = ROOT / "tests" / "fixtures" / "billing" / "stripe.yaml"
CATALOG = ROOT / "plans" / "catalog.yaml"


def tollway_quote(*args: str) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "tollway", "quote", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_one_line_failure(result: CliResult, *fragments: str) -> None:
    assert result.code == 2, result
    assert result.stdout == "", result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tollway: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("plan", "units", "total", "breakdown"),
    [
        ("volume", "6", "39.00", ["tier 2 (6–10), all units: 6 × 6.50 = 39.00"]),
        ("volume", "25", "150.00", ["tier 3 (11+), all units: 25 × 6.00 = 150.00"]),
        ("graduated", "6", "41.50", ["tier 1 (1–5): 5 × 7.00 = 35.00", "tier 2 (6–10): 1 × 6.50 = 6.50"]),
        (
            "graduated",
            "25",
            "157.50",
            [
                "tier 1 (1–5): 5 × 7.00 = 35.00",
                "tier 2 (6–10): 5 × 6.50 = 32.50",
                "tier 3 (11+): 15 × 6.00 = 90.00",
            ],
        ),
    ],
)
def test_stripe_published_example(plan: str, units: str, total: str, breakdown: list[str]) -> None:
    result = tollway_quote("--plans", str(STRIPE), "--plan", plan, "--usage", f"units={units}", "--format", "json")
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    body = result.json()
    assert body["currency"] == "USD"
    assert body["plan"] == plan
    assert body["total"] == total
    [line] = body["lines"]
    assert (line["charge_id"], line["quantity"], line["amount"], line["breakdown"]) == (
        "units",
        units,
        total,
        breakdown,
    )


def test_text_table() -> None:
    result = tollway_quote("--plans", str(STRIPE), "--plan", "graduated", "--usage", "units=6")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Quote: plan graduated, USD, whole period, period index 0"
    assert lines[-1].split() == ["TOTAL", "41.50"]
    assert "  tier 2 (6–10): 1 × 6.50 = 6.50" in result.stdout


def test_the_example_catalog_with_every_kind_of_line() -> None:
    result = tollway_quote(
        "--plans",
        str(CATALOG),
        "--plan",
        "pro",
        "--usage",
        "requests=6000000",
        "search-units=12500",
        "--usage",
        "egress=62000000000",
        "--format",
        "json",
    )
    assert result.code == 0, result.stderr
    body = result.json()
    assert [(line["kind"], line["discount_id"] or line["charge_id"], line["amount"]) for line in body["lines"]] == [
        ("charge", "platform", "49.00"),
        ("charge", "calls", "2000.00"),
        ("charge", "search", "7.50"),
        ("charge", "egress", "1080.00"),
        ("discount", "launch", "-627.30"),  # 20 % of 3136.50, in the first 3 periods
    ]
    assert body["total"] == "2509.20"
    later = tollway_quote("--plans", str(CATALOG), "--plan", "pro", "--period-index", "3", "--format", "json")
    assert later.json()["total"] == "49.00"  # no usage: the platform fee; the launch coupon has expired


def test_period_fraction_prorates_the_flat_fee_and_the_minimum() -> None:
    result = tollway_quote(
        "--plans", str(CATALOG), "--plan", "enterprise", "--period-fraction", "0.5", "--format", "json"
    )
    assert result.code == 0, result.stderr
    body = result.json()
    assert body["period"] == {"fraction": "0.5", "index": 0}
    amounts = {line["discount_id"] or line["charge_id"]: line["amount"] for line in body["lines"]}
    assert amounts["platform"] == "12000.00"
    assert amounts["multi-year"] == "-2400.00"
    assert amounts["minimum_commitment"] == "20400.00"  # 30000.00 committed for half a year − 9600.00
    assert body["total"] == "30000.00"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--plan", "gold"], ["unknown plan 'gold'", "graduated, volume, unpriced"]),
        (["--plan", "unpriced"], ["plan 'unpriced' has no pricing"]),
        (["--plan", "graduated", "--usage", "nope=1"], ["unknown meter 'nope'", "units, other"]),
        (["--plan", "graduated", "--usage", "other=1"], ["does not price meter 'other'", "prices: units"]),
        (["--plan", "graduated", "--usage", "units=abc"], ["'abc' is not a plain decimal number"]),
        (["--plan", "graduated", "--usage", "units=-5"], ["'-5' is negative"]),
        (["--plan", "graduated", "--usage", "units=1e400"], ["'1e400' is not a plain decimal number"]),
        (["--plan", "graduated", "--usage", "units=nan"], ["'nan' is not a plain decimal number"]),
        (["--plan", "graduated", "--usage", "units=6.0000000001"], ["more than 9 decimal places"]),
        (["--plan", "graduated", "--usage", "units"], ["expected METER=QTY"]),
        (["--plan", "graduated", "--usage", "units=1", "units=2"], ["meter 'units' given twice"]),
        (["--plan", "graduated", "--period-fraction", "1.5"], ["period fraction '1.5'"]),
        (["--plan", "graduated", "--period-index", "-1"], ["--period-index '-1'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragments: list[str]) -> None:
    assert_one_line_failure(tollway_quote("--plans", str(STRIPE), *args), *fragments)


def test_unreadable_catalog(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert_one_line_failure(tollway_quote("--plans", str(missing), "--plan", "pro"), "cannot read the catalog")


def test_invalid_catalog_is_reported_like_every_command(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(STRIPE.read_text().replace("{up_to: 10,", "{up_to: 3,", 1))
    result = tollway_quote("--plans", str(broken), "--plan", "graduated", "--usage", "units=6")
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("tollway: invalid catalog (")
    assert f"{broken}:" in result.stderr
    assert "tiers must ascend" in result.stderr
