"""``tollway invoices credit``, ``credit-notes`` and ``export``, run as an operator would, on invoices
``tollway bill --finalize`` made from the billing tests' dataset: the acceptance (a credit note
restores a corrected amount), one ``credit_note.issued`` per credit note, an export that validates
against its JSON Schema, and bad input for every option (exit 2, one line, nothing written)."""

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.test_bill import assert_one_line_failure, command_setup, tollway
from tollway.billing.invoices import invoice_id
from tollway.harness.valkey import ValkeyServer
from tollway.notifications import keys
from tollway.notifications.events import Event

pytestmark = pytest.mark.integration

SCHEMA = Path(__file__).parents[2] / "docs" / "schemas" / "accounting-export-v1.schema.json"
BILLING_DOC = Path(__file__).parents[2] / "docs" / "billing.md"
ACME = invoice_id("acme", datetime(2026, 10, 1, tzinfo=UTC))
KIWI_NOVEMBER = invoice_id("kiwi", datetime(2026, 10, 31, 11, tzinfo=UTC))


@pytest.fixture
def billed(valkey_fresh: ValkeyServer, tmp_path: Path) -> dict[str, str]:
    """October finalized, November a draft, for the billing tests' customers."""
    env = {**command_setup(valkey_fresh, tmp_path), "TOLLWAY_CATALOG": "catalog.yaml"}
    finalized = tollway(env, tmp_path, "bill", "--period", "2026-10", "--finalize")
    assert finalized.code == 0, finalized.stderr
    drafts = tollway(env, tmp_path, "bill", "--period", "2026-11", "--customer", "kiwi")
    assert drafts.code == 0, drafts.stderr
    return env


def outbox(valkey: ValkeyServer, customer: str) -> list[Event]:
    async def go() -> list[Event]:
        client: AsyncRedis[str] = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return [Event.from_stream(f) for _, f in await client.xrange(keys.stream_key("tw:", customer))]
        finally:
            await client.aclose()

    return asyncio.run(go())


def documented_session() -> list[str]:
    """The command lines and output of docs/billing.md's credit note example."""
    match = re.search(r"<!-- credit-note-example -->\n```console\n(.*?)```", BILLING_DOC.read_text(), re.DOTALL)
    assert match is not None, "docs/billing.md has no credit note example"
    return match.group(1).strip().splitlines()


def masked(text: str) -> str:
    """Output with what differs between runs (ids, year) masked as the docs write it."""
    text = re.sub(r"in_[0-9a-f]{24}", "in_…", text)
    text = re.sub(r"cn_[0-9a-f]{24}", "cn_…", text)
    return re.sub(r"CN-[0-9]{4}-", "CN-2026-", text)


def test_a_credit_note_restores_a_corrected_amount(
    billed: dict[str, str], tmp_path: Path, valkey_fresh: ValkeyServer
) -> None:
    invoice = json.loads((tmp_path / "invoices" / f"{ACME}.json").read_text())
    assert invoice["total"] == "13.22"
    # Egress, line 3, was 1.22 of the 13.22 (platform 10.00 + calls 2.00 + egress 1.22). Wrongly charged:
    # a credit note of line 3 restores the amount owed, 13.22 − 1.22 = 12.00.
    assert (invoice["lines"][2]["charge_id"], invoice["lines"][2]["amount"]) == ("egress", "1.22")
    args = (
        "invoices",
        "credit",
        ACME,
        "--line",
        "3",
        "--reason",
        "egress double-counted",
        "--idempotency-key",
        "oct-egress",
    )
    issued = tollway(billed, tmp_path, *args)
    assert issued.code == 0, issued.stderr
    first, net = issued.stdout.splitlines()
    assert re.fullmatch(rf"CN-\d{{4}}-000001  cn_[0-9a-f]{{24}}  invoice {ACME}  1\.22 USD  issued", first), first
    assert net == f"invoice {ACME}: total 13.22 USD, credited 1.22, net 12.00 USD"
    # The documented session is this one.
    session = documented_session()
    assert session[0].startswith("$ tollway invoices credit in_… --line 3 --reason")
    assert session[1:3] == [masked(first), masked(net)]

    again = tollway(billed, tmp_path, *args)
    assert again.code == 0, again.stderr
    assert "already issued (same idempotency key), nothing new" in again.stdout
    assert first.split()[:2] == again.stdout.split()[:2]  # same number, same id

    [event] = [e for e in outbox(valkey_fresh, "acme") if e.type == "credit_note.issued"]
    assert (event.data["total"], event.data["invoice_id"]) == ("1.22", ACME)
    assert event.data["number"] == first.split()[0]

    listed = tollway(billed, tmp_path, "invoices", "credit-notes", "--customer", "acme", "--json")
    assert listed.code == 0, listed.stderr
    [document] = listed.json()
    assert (document["total"], document["reason"], document["lines"][0]["invoice_line"]) == (
        "1.22",
        "egress double-counted",
        3,
    )
    table = tollway(billed, tmp_path, "invoices", "credit-notes")
    assert table.code == 0, table.stderr
    assert "egress double-counted" in table.stdout
    assert "acme" in table.stdout
    none = tollway(billed, tmp_path, "invoices", "credit-notes", "--customer", "kiwi")
    assert none.stdout.strip() == "no credit notes"

    # What remains is 12.00: a credit note of 12.01 is refused, one of 12.00 is not.
    too_large = tollway(billed, tmp_path, "invoices", "credit", ACME, "--amount", "12.01", "--reason", "too much")
    assert_one_line_failure(too_large, "12.01 USD is larger than what remains to credit", "12.00 USD")
    whole = tollway(billed, tmp_path, "invoices", "credit", ACME, "--line", "3", "--reason", "again")
    assert_one_line_failure(whole, "line 3 of invoice", "0.00 USD left to credit")
    rest = tollway(
        billed, tmp_path, "invoices", "credit", ACME, "--amount", "12.00", "--reason", "account closed", "--json"
    )
    assert rest.code == 0, rest.stderr
    assert rest.json()["number"].endswith("-000002")


BAD_CREDITS = [
    (("--amount", "1.001"), ("more decimal places than USD has (2)",)),
    (("--amount", "-1"), ("is not an amount",)),
    (("--amount", "0"), ("is not positive",)),
    (("--amount", "1e2"), ("is not an amount",)),
    (("--amount", "13.23"), ("larger than what remains",)),
    (("--line", "0"), ("--line 0: write N or N=AMOUNT",)),
    (("--line", "x=1"), ("--line x=1: write N or N=AMOUNT",)),
    (("--line", "9"), ("has no line 9",)),
    (("--line", "2=2.01"), ("line 2 of invoice", "2.00 USD left to credit")),
    (("--line", "2", "--line", "2"), ("line 2 is given twice",)),
    (("--amount", "1", "--idempotency-key", "has space"), ("idempotency key",)),
]


def test_bad_credit_requests_are_one_line_and_write_nothing(billed: dict[str, str], tmp_path: Path) -> None:
    for args, fragments in BAD_CREDITS:
        result = tollway(billed, tmp_path, "invoices", "credit", ACME, *args, "--reason", "r")
        assert_one_line_failure(result, *fragments)
        assert "Traceback" not in result.stderr
    listed = tollway(billed, tmp_path, "invoices", "credit-notes", "--json")
    assert listed.code == 0, listed.stderr
    assert listed.json() == []


def test_unknown_and_draft_invoices_and_missing_options(billed: dict[str, str], tmp_path: Path) -> None:
    unknown = tollway(billed, tmp_path, "invoices", "credit", "in_" + "0" * 24, "--amount", "1", "--reason", "r")
    assert_one_line_failure(unknown, "unknown invoice 'in_000000000000000000000000'")
    draft = tollway(billed, tmp_path, "invoices", "credit", KIWI_NOVEMBER, "--amount", "1", "--reason", "r")
    assert_one_line_failure(draft, "is a draft: only a finalized invoice is credited")
    blank = tollway(billed, tmp_path, "invoices", "credit", ACME, "--amount", "1", "--reason", " ")
    assert_one_line_failure(blank, "needs a reason")
    for args in (
        ("invoices", "credit", ACME, "--amount", "1"),  # no --reason
        ("invoices", "credit", ACME, "--reason", "r"),  # neither --amount nor --line
        ("invoices", "credit", ACME, "--amount", "1", "--line", "1", "--reason", "r"),
        ("invoices", "export"),  # no --out
    ):
        result = tollway(billed, tmp_path, *args)
        assert result.code == 2, result
        assert "usage: tollway invoices" in result.stderr
    listed = tollway(billed, tmp_path, "invoices", "credit-notes", "--json")
    assert listed.json() == []


def test_the_export_validates_against_its_schema(billed: dict[str, str], tmp_path: Path) -> None:
    credit = ("invoices", "credit", ACME, "--amount", "0.22", "--reason", "goodwill")
    assert tollway(billed, tmp_path, *credit).code == 0
    done = tollway(billed, tmp_path, "invoices", "export", "--out", "export.json")
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "export.json: 4 invoice(s), 1 credit note(s)"
    export: dict[str, Any] = json.loads((tmp_path / "export.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker()).validate(
        export
    )
    assert export["schema"] == "tollway.accounting-export/v1"
    assert {i["customer_id"]: i["total"] for i in export["invoices"]} == {
        "acme": "13.22",
        "kiwi": "11.10",
        "late": "5.66",
        "anniv": "11.00",
    }  # finalized only: kiwi's November draft is not there
    [note] = export["credit_notes"]
    assert (note["invoice_id"], note["total"], note["lines"]) == (
        ACME,
        "0.22",
        [{"description": "goodwill", "amount": "0.22", "invoice_line": None}],
    )
    again = tollway(billed, tmp_path, "invoices", "export", "--out", "again.json", "--customer", "acme")
    assert again.code == 0, again.stderr
    only = json.loads((tmp_path / "again.json").read_text())
    assert [i["customer_id"] for i in only["invoices"]] == ["acme"]
    assert only["filters"]["customer_id"] == "acme"
    stripped = [{k: v for k, v in e.items() if k != "generated_at"} for e in (export, only)]
    assert stripped[0]["invoices"][[i["customer_id"] for i in export["invoices"]].index("acme")] == only["invoices"][0]
    later = tollway(billed, tmp_path, "invoices", "export", "--out", "later.json", "--since", "2099-01-01")
    assert later.code == 0
    assert json.loads((tmp_path / "later.json").read_text())["invoices"] == []


BAD_OUTS = [
    ("missing/export.json", ("--out missing/export.json: directory missing does not exist",)),
    ("taken/export.json", ("--out taken/export.json: directory taken does not exist",)),
    ("adir", ("--out adir: is a directory",)),
    ("/proc/tollway-export.json", ("--out /proc/tollway-export.json: cannot write in /proc",)),
]
BAD_DATES = [
    (("--since", "2026-13-01"), "--since 2026-13-01: not a date (YYYY-MM-DD)"),
    (("--until", "yesterday"), "--until yesterday: not a date (YYYY-MM-DD)"),
    (("--since", "２０２６-１１-０１"), "not a date"),
    (("--since", "2026-11-02", "--until", "2026-11-01"), "--until 2026-11-01 is before --since 2026-11-02"),
]


def test_an_export_to_an_unwritable_path_or_with_bad_dates_is_refused_and_nothing_is_written(
    billed: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "adir").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*") if "chdb" not in p.parts)
    for out, fragments in BAD_OUTS:
        result = tollway(billed, tmp_path, "invoices", "export", "--out", out)
        assert_one_line_failure(result, *fragments)
        assert "Traceback" not in result.stderr
    for args, fragment in BAD_DATES:
        result = tollway(billed, tmp_path, "invoices", "export", "--out", "export.json", *args)
        assert_one_line_failure(result, fragment)
    assert sorted(p.name for p in tmp_path.rglob("*") if "chdb" not in p.parts) == before
    assert list((tmp_path / "adir").iterdir()) == []
