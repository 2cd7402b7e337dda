"""``tollway bill --out`` writes each invoice as a PDF beside its JSON and HTML (embedded ClickHouse, real
Valkey): the PDF opened with pypdf holds the total and the quantities for people; ``--no-pdf`` writes
none; a machine that cannot render PDFs is bad input, refused before anything is written."""

import io
import subprocess
import sys
from pathlib import Path

import pypdf
import pytest

from tests.integration.test_bill import (
    NOW,
    SUBSCRIPTIONS,
    billed_db,  # noqa: F401 - a fixture
    catalog,
    command_setup,
    subscribe,
    tollway,
)
from tests.support.chdb_engine import ChdbDatabase
from tollway.billing import pdf
from tollway.billing.errors import BillingError
from tollway.cli.bill import bill
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(path.read_bytes())).pages)


def test_each_invoice_is_written_as_a_pdf_beside_its_json_and_html(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
    tmp_path: Path,
) -> None:
    client, database = billed_db
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:2])
    report = bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, out_dir=tmp_path, pdf=True)
    assert [path.with_suffix(".html") for path in report.pdfs] == [html for _, html in report.files]
    acme = next(p for p, r in zip(report.pdfs, report.results, strict=True) if r.document["customer_id"] == "acme")
    text = pdf_text(acme)
    assert "13.22 USD" in text  # the total
    assert "≈ 1.22 kB" in text  # egress: 1215 bytes, a response_bytes meter
    assert "1,215 bytes" in text
    assert "DRAFT" in text  # not finalized: no number yet


def test_a_machine_that_cannot_render_pdfs_writes_nothing(
    billed_db: ChdbDatabase,  # noqa: F811
    valkey_fresh: ValkeyServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, database = billed_db

    def unavailable() -> None:
        raise pdf.PdfUnavailable("cannot render PDF invoices: no Pango")

    monkeypatch.setattr("tollway.cli.bill.check_available", unavailable)
    subscriptions = subscribe(valkey_fresh, SUBSCRIPTIONS[:1])
    out = tmp_path / "out"
    with pytest.raises(BillingError, match="no Pango"):
        bill(client, database, catalog(), subscriptions, "2026-10", now=NOW, out_dir=out, pdf=True)
    assert client.query(f"SELECT count() FROM {database}.invoices").result_rows == [(0,)]
    assert not out.exists()
    (out / "in_x.pdf").mkdir(parents=True)
    with pytest.raises(BillingError, match=r"in_x\.pdf exists and is not a regular file"):
        pdf.check_target("in_x", out)


def test_the_command_writes_the_pdf_and_prints_its_path(valkey_fresh: ValkeyServer, tmp_path: Path) -> None:
    env = command_setup(valkey_fresh, tmp_path)
    result = tollway(env, tmp_path, "bill", "--period", "2026-10", "--plans", "catalog.yaml", "--customer", "acme")
    assert result.code == 0, result.stderr
    assert not result.stderr.strip()  # the renderer's progress logs stay quiet
    [printed] = [line.split() for line in result.stdout.splitlines() if line.startswith("in_")]
    html, written = tmp_path / printed[-2], tmp_path / printed[-1]
    assert (html.suffix, written.suffix) == (".html", ".pdf")
    assert written.with_suffix(".html") == html
    assert "13.22 USD" in pdf_text(written)

    written.unlink()
    result = tollway(env, tmp_path, "bill", "--period", "2026-10", "--plans", "catalog.yaml", "--no-pdf")
    assert result.code == 0, result.stderr
    assert not list((tmp_path / "invoices").glob("*.pdf"))
    assert all(line.endswith(".html") for line in result.stdout.splitlines() if line.startswith("in_"))

    # Without WeasyPrint: one line on stderr, exit status 2, nothing written.
    blocked = "import sys; sys.modules['weasyprint'] = None; from tollway.cli.main import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "bill", "--period", "2026-10", "--plans", "catalog.yaml", "--out", "new"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    [line] = done.stderr.strip().splitlines()
    assert "cannot render PDF invoices" in line
    assert "--no-pdf" in line
    assert not (tmp_path / "new").exists()
