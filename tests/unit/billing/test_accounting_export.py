"""The accounting export (pure, and its atomic write): finalized invoices only, filters, deterministic
order and bytes, every member documented by the JSON Schema in docs/schemas, the example in
docs/billing.md valid, and a failed write leaving nothing half-written."""

import json
import os
import random
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.invoice_documents import invoice_document
from tollway.billing.accounting_export import (
    SCHEMA,
    ExportError,
    build_export,
    encode,
    issued_on,
    write_atomically,
)

ROOT = Path(__file__).parents[3]
SCHEMA_PATH = ROOT / "docs" / "schemas" / "accounting-export-v1.schema.json"
BILLING_DOC = ROOT / "docs" / "billing.md"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def validate(export: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(export)


def note(
    number: int, invoice_id: str, customer: str = "acme", on: str = "2026-12-07", total: str = "6.65"
) -> dict[str, Any]:
    return {
        "credit_note_id": f"cn_{number:024x}",
        "number": f"CN-2026-{number:06d}",
        "invoice_id": invoice_id,
        "invoice_number": "INV-2026-000042",
        "customer_id": customer,
        "currency": "USD",
        "issued_on": on,
        "issued_at": f"{on}T10:00:00.000000Z",
        "reason": "egress double-counted",
        "lines": [{"description": "line 3: Egress", "amount": total, "invoice_line": 3}],
        "total": total,
    }


A = "in_" + "a" * 24
B = "in_" + "b" * 24
C = "in_" + "c" * 24
D = "in_" + "d" * 24
INVOICES = [
    invoice_document(B, "globex", number="INV-2026-000043", issued_on="2026-12-01"),
    invoice_document(A, "acme", number="INV-2026-000042", issued_on="2026-12-01"),
    invoice_document(C, "acme", number=None, month="2026-10"),  # finalized before numbering existed
    invoice_document(D, "acme", status="draft"),
]
NOTES = [note(2, B, "globex", "2026-12-08"), note(1, A)]


def test_finalized_invoices_and_credit_notes_in_a_deterministic_order() -> None:
    export = build_export(INVOICES, NOTES, generated_at=NOW)
    validate(export)
    assert export["schema"] == SCHEMA == "tollway.accounting-export/v1"
    assert export["generated_at"] == "2026-12-07T10:00:00.000000Z"
    # The unnumbered invoice is dated by its finalization (UTC), and sorts first; the draft is left out.
    assert [(i["issued_on"], i["number"], i["invoice_id"]) for i in export["invoices"]] == [
        ("2026-12-01", None, C),
        ("2026-12-01", "INV-2026-000042", A),
        ("2026-12-01", "INV-2026-000043", B),
    ]
    assert [n["number"] for n in export["credit_notes"]] == ["CN-2026-000001", "CN-2026-000002"]
    acme = export["invoices"][1]
    assert (acme["due_on"], acme["payment_terms_days"], acme["seller"]["name"]) == ("2026-12-31", 30, "Tollway Ltd")
    assert acme["lines"][2] == {
        "line": 3,
        "kind": "charge",
        "description": "Egress",
        "quantity": "6650",
        "amount": "6.65",
    }
    unnumbered = export["invoices"][0]
    assert (unnumbered["due_on"], unnumbered["seller"], unnumbered["buyer"]) == (None, None, None)
    shuffled = INVOICES[:]
    random.Random(7).shuffle(shuffled)
    assert encode(build_export(shuffled, NOTES[::-1], generated_at=NOW)) == encode(export)
    assert encode(export).endswith(b"}\n")


def test_filters_select_by_issue_date_and_customer() -> None:
    export = build_export(
        INVOICES, NOTES, generated_at=NOW, since=date(2026, 12, 2), until=date(2026, 12, 31), customer_id="globex"
    )
    validate(export)
    assert export["filters"] == {"since": "2026-12-02", "until": "2026-12-31", "customer_id": "globex"}
    assert export["invoices"] == []  # issued on 2026-12-01
    assert [n["credit_note_id"] for n in export["credit_notes"]] == [NOTES[0]["credit_note_id"]]
    both_ends = build_export(INVOICES, NOTES, generated_at=NOW, since=date(2026, 12, 1), until=date(2026, 12, 7))
    assert (len(both_ends["invoices"]), len(both_ends["credit_notes"])) == (3, 1)  # both dates included


def test_every_member_is_declared_by_the_schema() -> None:
    """An undocumented member is a schema change: the schema (and docs/billing.md) must say it first."""
    declared = schema()
    defs = declared["$defs"]
    export = build_export(INVOICES, NOTES, generated_at=NOW)
    assert set(export) == set(declared["properties"]) == set(declared["required"])
    for invoice in export["invoices"]:
        assert set(invoice) == set(defs["invoice"]["properties"]) == set(defs["invoice"]["required"])
        assert set(invoice["period"]) == set(defs["invoice"]["properties"]["period"]["properties"])
        for line in invoice["lines"]:
            assert set(line) == set(defs["invoice"]["properties"]["lines"]["items"]["properties"])
    for credit in export["credit_notes"]:
        assert set(credit) == set(defs["credit_note"]["properties"]) == set(defs["credit_note"]["required"])
        for line in credit["lines"]:
            assert set(line) == set(defs["credit_note"]["properties"]["lines"]["items"]["properties"])


def test_the_schema_refuses_what_v1_is_not() -> None:
    export = build_export(INVOICES, NOTES, generated_at=NOW)
    for broken in (
        {**export, "schema": "tollway.accounting-export/v2"},
        {**export, "invoices": [{**export["invoices"][0], "total": 76.65}]},  # a JSON number
        {**export, "credit_notes": [{**export["credit_notes"][0], "issued_on": "07/12/2026"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_the_example_in_billing_md_is_a_valid_export() -> None:
    match = re.search(r"<!-- accounting-export-example -->\n```json\n(.*?)```", BILLING_DOC.read_text(), re.DOTALL)
    assert match is not None, "docs/billing.md has no accounting export example"
    example = json.loads(match.group(1))
    validate(example)
    assert example["invoices"]
    assert example["credit_notes"]


def test_issued_on_of_an_invoice_without_one_is_the_utc_date_of_its_finalization() -> None:
    assert issued_on({"finalized_at": "2026-11-30T23:30:00-02:00"}) == "2026-12-01"
    assert issued_on({"issued_on": "2026-11-30", "finalized_at": "2026-12-01T01:00:00Z"}) == "2026-11-30"


# --- the atomic write ----------------------------------------------------------------------------------


def test_the_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "export.json"
    target.write_text("old")
    write_atomically(target, b'{"new": true}\n')
    assert target.read_bytes() == b'{"new": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "export.json"
    target.write_text("old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ExportError, match=r"export\.json: cannot write: No space left on device"):
        write_atomically(target, b"new" * 1000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]


def test_bad_targets_are_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExportError, match=r"directory .*missing does not exist"):
        write_atomically(tmp_path / "missing" / "export.json", b"x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="does not exist"):
        write_atomically(tmp_path / "file" / "export.json", b"x")
    with pytest.raises(ExportError, match="is a directory"):
        write_atomically(tmp_path, b"x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ExportError, match="is not writable"):
        write_atomically(tmp_path / "export.json", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
