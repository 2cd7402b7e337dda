"""The invoice as a document a person reads: the HTML page's header (seller, buyer, number, dates,
payment terms; DRAFT on a draft), quantities and amounts for people, print CSS, and the PDF rendered
from the same page (opened with pypdf: its text holds the total, the number and the due date)."""

import copy
import http.server
import importlib
import io
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pypdf
import pytest

from tollway.billing import pdf
from tollway.billing.pdf import PdfUnavailable, check_target, to_pdf, write_pdf
from tollway.billing.render import InvalidOutput, OutputError, to_html

UNITS = {"egress": "response_bytes", "requests": "requests"}


def document(**changes: Any) -> dict[str, Any]:
    """A finalized invoice document with the keys finalization adds (number, dates, terms, parties)."""
    base: dict[str, Any] = {
        "invoice_id": "in_0123456789abcdef01234567",
        "customer_id": "acme",
        "status": "finalized",
        "plan": "pro",
        "currency": "USD",
        "period": {
            "month": "2026-11",
            "local_start": "2026-11-01T00:00:00+01:00",
            "local_end": "2026-12-01T00:00:00+01:00",
            "timezone": "Europe/Paris",
        },
        "lines": [
            line("platform", None, None, "1049.00"),
            line("egress", "egress", "1234567890", "12.35"),
            line("calls", "requests", "1234567", "123.46"),
        ],
        "total": "1184.81",
        "balance": None,
        "number": "INV-2026-000042",
        "issued_on": "2026-12-01",
        "due_on": "2026-12-31",
        "payment_terms_days": 30,
        "seller": {
            "name": "Tollway Demo GmbH",
            "address": ["Hauptstraße 1", "10115 Berlin"],
            "country": "DE",
            "tax_id": "DE123456789",
            "email": "billing@example.com",
        },
        "buyer": {"name": "Acme Corp", "address": ["1 Road Runner Way", "Phoenix, AZ 85001"], "country": "US"},
    }
    base.update(changes)
    return base


def line(charge: str, meter: str | None, quantity: str | None, amount: str) -> dict[str, Any]:
    return {
        "kind": "charge",
        "charge_id": charge,
        "discount_id": None,
        "meter": meter,
        "description": charge.title(),
        "quantity": quantity,
        "amount": amount,
        "breakdown": [],
    }


def draft() -> dict[str, Any]:
    """The same invoice as a draft: none of the finalization keys."""
    found = document(status="draft")
    for key in ("number", "issued_on", "due_on", "payment_terms_days", "seller", "buyer"):
        del found[key]
    return found


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


# --- the HTML page -----------------------------------------------------------------------------------


def test_a_finalized_invoice_shows_seller_buyer_number_dates_and_terms() -> None:
    page = to_html(document(), UNITS)
    assert "<title>Invoice INV-2026-000042</title>" in page
    assert '<section class="party"><h2>From</h2><p><strong>Tollway Demo GmbH</strong><br>Hauptstraße 1<br>' in page
    assert "Tax ID: DE123456789<br>billing@example.com" in page
    assert "<h2>Bill to</h2><p><strong>Acme Corp</strong><br>1 Road Runner Way<br>Phoenix, AZ 85001<br>US" in page
    for label, value in [
        ("Invoice number", "INV-2026-000042"),
        ("Reference", "in_0123456789abcdef01234567"),
        ("Issue date", "2026-12-01"),
        ("Due date", "2026-12-31"),
        ("Payment terms", "net 30 days from the issue date"),
    ]:
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page
    assert "DRAFT" not in page
    assert "<dt>Payment terms</dt><dd>due on receipt</dd>" in to_html(document(payment_terms_days=0))


def test_a_draft_is_marked_draft_and_has_no_number() -> None:
    page = to_html(draft(), UNITS)
    assert "<title>DRAFT Invoice in_0123456789abcdef01234567</title>" in page
    assert '<span class="draft-mark">DRAFT</span>' in page
    assert "has no invoice number" in page
    assert "<dt>Invoice number</dt><dd><span" in page
    for absent in ("Issue date", "Due date", "Payment terms", "From", "Bill to"):
        assert f">{absent}<" not in page


def test_a_document_from_before_numbering_renders_as_it_is() -> None:
    old = draft()
    old["status"] = "finalized"  # finalized before invoices had numbers: no number, no parties
    page = to_html(old)
    assert "<title>Invoice in_0123456789abcdef01234567</title>" in page
    assert "DRAFT" not in page
    assert ">Invoice number<" not in page
    assert 'class="parties"' not in page


def test_the_header_escapes_every_string() -> None:
    evil = "<script>alert(1)</script>"
    page = to_html(document(number=evil, due_on=evil, seller={"name": evil, "address": [evil]}, buyer={"email": evil}))
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 5


def test_quantities_and_amounts_for_people() -> None:
    page = to_html(document(), UNITS)
    assert (
        '<td class="num" data-quantity="1234567890" title="1234567890">≈ 1.23 GB'
        '<span class="exact">1,234,567,890 bytes</span></td>'
    ) in page
    assert '<td class="num" data-quantity="1234567" title="1234567">1,234,567</td>' in page
    assert '<td class="num">1,049.00</td>' in page
    assert "1,184.81 USD" in page
    # without the catalog's units, a bytes meter is a count like any other: every digit, grouped
    assert ">1,234,567,890</td>" in to_html(document())
    yen = to_html(document(currency="JPY", lines=[line("platform", None, None, "120000")], total="120000"))
    assert '<td class="num">120,000</td>' in yen
    assert "120,000 JPY" in yen


def test_the_page_prints_on_a4_without_cutting_rows() -> None:
    page = to_html(document())
    assert "@page{size:A4;" in page
    assert "tr,.party,.facts,.parties{break-inside:avoid" in page
    assert "thead{display:table-header-group}" in page
    assert "counter(pages)" in page


# --- the PDF -----------------------------------------------------------------------------------------


def test_the_pdf_holds_the_total_the_number_and_the_due_date() -> None:
    data = to_pdf(document(), UNITS)
    assert data.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(data))
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # A4 in points
    text = pdf_text(data)
    for shown in ("1,184.81 USD", "INV-2026-000042", "Due date 2026-12-31", "Tollway Demo GmbH", "Acme Corp"):
        assert shown in text
    assert "≈ 1.23 GB" in text
    assert "1,234,567,890 bytes" in text


def test_a_draft_pdf_says_draft() -> None:
    text = pdf_text(to_pdf(draft()))
    assert "DRAFT" in text
    assert "INV-" not in text


def test_a_long_invoice_breaks_across_pages_without_losing_a_line() -> None:
    lines = [line(f"charge-{n:03d}", "requests", str(n * 1000), "1.00") for n in range(120)]
    data = to_pdf(document(lines=lines, total="120.00"), UNITS)
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 3
    text = pdf_text(data)
    assert all(f"Charge-{n:03d}" in text for n in range(120))
    assert f"Page {len(reader.pages)} of {len(reader.pages)}" in text


def test_write_pdf_writes_the_whole_file_beside_the_others(tmp_path: Path) -> None:
    path = write_pdf(document(), tmp_path, UNITS)
    assert path == tmp_path / "in_0123456789abcdef01234567.pdf"
    assert "INV-2026-000042" in pdf_text(path.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind

    (tmp_path / "in_taken.pdf").mkdir()
    with pytest.raises(InvalidOutput, match=r"in_taken\.pdf exists and is not a regular file"):
        check_target("in_taken", tmp_path)
    with pytest.raises(OutputError, match=r"cannot write .*in_taken\.pdf"):
        write_pdf(document(invoice_id="in_taken"), tmp_path)


def test_without_the_renderer_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def missing(name: str, package: str | None = None) -> Any:
        if name == "weasyprint":
            raise OSError("cannot load library 'libpango-1.0-0'")
        return real(name, package)

    monkeypatch.setattr(pdf.importlib, "import_module", missing)
    with pytest.raises(PdfUnavailable, match=r"libpango-1\.0-0.*fonts-dejavu-core"):
        pdf.check_available()
    with pytest.raises(OutputError, match=r"cannot write .*libpango"):
        write_pdf(copy.deepcopy(document()), Path("/nonexistent"))


def test_the_renderer_loads_no_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"body{background:red}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        hostile = to_html(document()).replace(
            "</head>", f'<link rel="stylesheet" href="{url}/x.css"></head><img src="{url}/y.png">'
        )
        monkeypatch.setattr(pdf, "to_html", lambda *args: hostile)  # as if markup got through unescaped
        assert "INV-2026-000042" in pdf_text(to_pdf(document()))
    finally:
        server.shutdown()
        server.server_close()
    assert asked == []


def test_the_gateway_and_the_cli_do_not_load_weasyprint() -> None:
    code = (
        "import sys, tollway.server, tollway.cli.main, tollway.cli.bill, tollway.admin.app, tollway.billing.pdf; "
        "assert 'weasyprint' not in sys.modules, 'weasyprint loaded'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
