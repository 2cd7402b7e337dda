"""An invoice document as a printable PDF (A4), rendered with WeasyPrint from the same HTML page
``render.to_html`` makes, so the page and the PDF never disagree.

WeasyPrint (and the Pango, HarfBuzz and fontconfig libraries it loads) is imported only when a PDF is
asked for: the gateway's processes never load it. The page uses no external resource; the renderer
may fetch none (a ``URLFetcher`` that allows no protocol), whatever a document's strings hold. Fonts
are the system's: on Debian the ``fonts-dejavu-core`` package (DejaVu Sans, which has every character
the page uses, ``≈`` and ``×`` included).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from tollway.billing.render import InvalidOutput, OutputError, to_html

_QUIET: Final = ("weasyprint", "weasyprint.progress", "fontTools")
"""Loggers that report each rendering step at INFO (and font subsetting): only their warnings show."""

_LOCK: Final = threading.Lock()
"""One rendering at a time in a process (WeasyPrint's font machinery is not documented thread-safe)."""


class PdfUnavailable(InvalidOutput):
    """The PDF renderer cannot be loaded (WeasyPrint or its system libraries are missing)."""


def _weasyprint() -> Any:
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        weasyprint = importlib.import_module("weasyprint")  # untyped; loaded here only
    except (ImportError, OSError) as exc:  # OSError: a system library (Pango) that cannot be loaded
        raise PdfUnavailable(
            f"cannot render PDF invoices: {exc} (WeasyPrint needs the system's Pango library and fonts, "
            "e.g. Debian packages libpango-1.0-0, libpangoft2-1.0-0 and fonts-dejavu-core)"
        ) from None
    return weasyprint


def check_available() -> None:
    """``PdfUnavailable`` unless PDFs can be rendered here (checked before anything is written)."""
    _weasyprint()


def to_pdf(document: dict[str, Any], units: Mapping[str, str] | None = None) -> bytes:
    """The invoice as PDF bytes (``units``: as for ``render.to_html``). ``PdfUnavailable`` when the
    renderer cannot be loaded."""
    weasyprint = _weasyprint()
    html = to_html(document, units)
    with _LOCK:
        refuse_all = weasyprint.urls.URLFetcher(allowed_protocols=())  # no URL of any scheme is fetched
        rendered: bytes = weasyprint.HTML(string=html, url_fetcher=refuse_all).write_pdf()
    return rendered


def pdf_path(invoice_id: str, out_dir: Path) -> Path:
    """``<out_dir>/<invoice id>.pdf``, beside the ``.json`` and ``.html``."""
    if not invoice_id or "/" in invoice_id or invoice_id.startswith("."):
        raise ValueError(f"invoice id {invoice_id!r} cannot name a file")
    return out_dir / f"{invoice_id}.pdf"


def check_target(invoice_id: str, out_dir: Path) -> None:
    """``InvalidOutput`` when the invoice's PDF exists and is not a regular file (a directory)."""
    path = pdf_path(invoice_id, out_dir)
    if path.exists() and not path.is_file():
        raise InvalidOutput(f"--out {out_dir}: {path} exists and is not a regular file")


def write_pdf(document: dict[str, Any], out_dir: Path, units: Mapping[str, str] | None = None) -> Path:
    """Write ``<out_dir>/<invoice id>.pdf`` (``out_dir`` exists: ``render.write`` made it); its path.
    ``OutputError`` naming the path when it cannot be rendered or written (never half a file: the PDF is
    rendered in memory, written to a temporary file beside it and renamed)."""
    path = pdf_path(str(document["invoice_id"]), out_dir)
    try:
        data = to_pdf(document, units)
    except PdfUnavailable as exc:
        raise OutputError(0, f"cannot write {path}: {exc}") from exc
    except Exception as exc:  # a renderer failure on one document: reported, naming it
        raise OutputError(0, f"cannot render {path}: {type(exc).__name__}: {exc}") from exc
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
