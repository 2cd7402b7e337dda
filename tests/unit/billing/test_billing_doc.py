"""docs/billing.md's worked examples, executed: every ``<!-- example: … -->`` YAML block (one charge, or
a whole ``pricing`` section) priced with ``rating.rate``, each table row's breakdown, lines and total
checked; every ``<!-- quote-example -->`` command run through the CLI with its output compared."""

import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tollway.billing.charges import PeriodContext
from tollway.billing.money import format_amount
from tollway.billing.rating import InvoiceDraft, rate
from tollway.cli.main import main
from tollway.plans.pricing import Pricing

ROOT = Path(__file__).parents[3]
DOC = ROOT / "docs" / "billing.md"
MARKER = re.compile(r"<!-- example: (.+?) -->")
CURRENCY = re.compile(r"\(([A-Z]{3})\)")


@dataclass
class Example:
    name: str
    spec: dict[str, Any]
    header: list[str]
    rows: list[list[str]]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def examples() -> list[Example]:
    text = DOC.read_text()
    found = []
    for match in MARKER.finditer(text):
        rest = text[match.end() :]
        section = re.split(r"\n<!-- |\n#", rest, maxsplit=1)[0]
        block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
        table = [line for line in section.splitlines() if line.startswith("|")]
        header, rows = cells(table[0]), [cells(line) for line in table[2:]]
        found.append(Example(match.group(1), yaml.safe_load(block), header, rows))
    return found


def column(example: Example, row: list[str], name: str, default: str) -> str:
    for title, value in zip(example.header, row, strict=True):
        if title.split(" (")[0] == name:
            return value
    return default


def split_br(cell: str) -> list[str]:
    return [part.strip() for part in cell.split("<br>") if part.strip()]


def price_row(example: Example, row: list[str]) -> InvoiceDraft:
    currency_header = next(title for title in example.header if CURRENCY.search(title))
    currency = CURRENCY.search(currency_header).group(1)  # type: ignore[union-attr]
    if "model" in example.spec:  # one charge
        pricing = Pricing.model_validate({"currency": currency, "interval": "month", "charges": [example.spec]})
        meter = example.spec.get("meter", "")
        usage = {meter: Decimal(column(example, row, "quantity", "0"))}
    else:
        pricing = Pricing.model_validate(example.spec)
        assert pricing.currency == currency, f"{example.name}: the table's currency is not the pricing's"
        pairs = (item.split("=") for item in column(example, row, "usage", "").split())
        usage = {meter: Decimal(quantity) for meter, quantity in pairs}
    period = PeriodContext(
        Decimal(column(example, row, "fraction", "1")), int(column(example, row, "period index", "0"))
    )
    return rate("doc", pricing, usage, period)


def test_the_document_has_its_examples() -> None:
    names = [example.name for example in examples()]
    for model in ("flat", "per_unit", "graduated", "volume", "package", "allowance", "minimum commitment", "discounts"):
        assert model in names
    assert all(example.rows for example in examples())


@pytest.mark.parametrize("example", examples(), ids=lambda e: e.name)
def test_worked_example(example: Example) -> None:
    failures = []
    for row in example.rows:
        draft = price_row(example, row)
        if "model" in example.spec:
            line = draft.lines[0]
            got = (list(line.breakdown), format_amount(line.amount, draft.currency))
            expected = (split_br(column(example, row, "breakdown", "")), column(example, row, "line", ""))
        else:
            got_lines = [
                f"{line.discount_id or line.charge_id} {format_amount(line.amount, draft.currency)}"
                for line in draft.lines
            ]
            got = (got_lines, format_amount(draft.total, draft.currency))
            expected = (split_br(column(example, row, "lines", "")), column(example, row, "total", ""))
        if got != expected:
            failures.append(f"row {row}: expected {expected}, got {got}")
    assert not failures, "\n".join(failures)


def quote_examples() -> list[tuple[list[str], str]]:
    text = DOC.read_text()
    found = []
    for part in text.split("<!-- quote-example -->")[1:]:
        block = part.split("```console\n", 1)[1].split("```", 1)[0]
        command, output = block.split("\n", 1)
        assert command.startswith("$ tollway ")
        found.append((shlex.split(command)[2:], output))
    return found


@pytest.mark.parametrize("example", quote_examples(), ids=lambda e: " ".join(e[0]))
def test_quote_example(
    example: tuple[list[str], str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, expected = example
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    assert capsys.readouterr().out == expected
