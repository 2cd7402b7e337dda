"""An invoice document (``Invoice.as_dict``) as files: ``<id>.json`` and a standalone ``<id>.html``.

The HTML page has no scripts and no external resources (inline CSS only); every string from the
document is escaped with ``html.escape`` (customer ids, descriptions and breakdowns are data).
"""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Any

from tollway.billing.errors import BillingError

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}"
    "table{border-collapse:collapse;width:100%}th,td{padding:.35rem .6rem;border-bottom:1px solid #ddd;"
    "text-align:left;vertical-align:top}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    "ul{margin:.2rem 0;padding-left:1.2rem;color:#555;font-size:.9em}tfoot td{font-weight:bold}"
    ".status{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;background:#eee}"
)


def to_json(document: dict[str, Any]) -> str:
    """The document as indented JSON (amounts and quantities are already decimal strings)."""
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _cell(value: object, numeric: bool = False) -> str:
    text = "" if value is None else escape(str(value))
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def to_html(document: dict[str, Any]) -> str:
    """A readable page: header (customer, plan, period in the customer's timezone), lines, total."""
    period = document["period"]
    currency = escape(str(document["currency"]))
    rows = []
    parts = document.get("plans") or []
    heading: object = None
    for line in document["lines"]:
        part = line.get("part")
        if len(parts) > 1 and part is not None and part != heading:  # a plan change: a heading per plan held
            held = parts[part]
            what = f"Add-on {held['plan']} × {held['quantity']}" if held.get("addon") else f"Plan {held['plan']}"
            text = f"{what} from {held['start']} to {held['end']} ({held['fraction']} of the period)"
            rows.append(f'<tr class="part"><th colspan="4">{escape(text)}</th></tr>')
            heading = part
        steps = "".join(f"<li>{escape(str(step))}</li>" for step in line["breakdown"])
        description = escape(str(line["description"])) + (f"<ul>{steps}</ul>" if steps else "")
        label = line["discount_id"] or line["charge_id"]
        rows.append(
            "<tr>"
            + _cell(label)
            + f"<td>{description}</td>"
            + _cell(line["quantity"], numeric=True)
            + _cell(line["amount"], numeric=True)
            + "</tr>"
        )
    title = f"Invoice {escape(str(document['invoice_id']))}"
    interim = document.get("interim")
    if interim:  # an interim invoice (progressive billing): which one of its period
        title += f" (interim invoice {escape(str(interim['sequence']))} of {escape(str(period['month']))})"
    balance = _balance_html(document.get("balance"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>\n"
        f'<h1>{title} <span class="status">{escape(str(document["status"]))}</span></h1>\n'
        "<dl>"
        f"<dt>Customer</dt><dd>{escape(str(document['customer_id']))}</dd>"
        f"<dt>Plan</dt><dd>{escape(str(document['plan']))}</dd>"
        f"<dt>Period</dt><dd>{escape(str(period['month']))}: {escape(str(period['local_start']))} to "
        f"{escape(str(period['local_end']))} ({escape(str(period['timezone']))})</dd>"
        "</dl>\n"
        f'<table><thead><tr><th>Line</th><th>Description</th><th class="num">Quantity</th>'
        f'<th class="num">Amount ({currency})</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + f'\n</tbody><tfoot><tr><td colspan="3">Total</td><td class="num">{escape(str(document["total"]))} '
        f"{currency}</td></tr></tfoot></table>\n{balance}</body></html>\n"
    )


def _balance_html(balance: dict[str, Any] | None) -> str:
    """A prepaid invoice's balance section: start, top-ups, burns, voids, expiries, rollover cuts, end, in
    the unit and (a credit unit) in the currency. Informational: the total above does not include it."""
    if balance is None:
        return ""
    unit, currency = escape(str(balance["unit"])), escape(str(balance["currency"]))
    credit = balance["unit"] != balance["currency"]
    rows = []
    for line in balance["lines"]:
        worth = _cell(line["amount_currency"], numeric=True) if credit else ""
        when = f" ({escape(str(line['at']))})" if line["at"] else ""
        rows.append(
            f"<tr>{_cell(line['kind'])}<td>{escape(str(line['description']))}{when}</td>"
            f"{_cell(line['amount'], numeric=True)}{worth}</tr>"
        )
    worth_head = f'<th class="num">Worth ({currency})</th>' if credit else ""
    value = f" (1 {unit} = {escape(str(balance['value']))} {currency})" if credit else ""
    return (
        f"<h2>Prepaid balance{value}</h2>\n"
        f'<table class="balance"><thead><tr><th>Line</th><th>Description</th><th class="num">Amount ({unit})</th>'
        f"{worth_head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n"
    )


class InvalidOutput(BillingError):
    """An output path that cannot be written (checked before anything is written)."""


class OutputError(OSError):
    """A file could not be written after the invoices were stored; the message names the path."""


def check_out_dir(out_dir: Path) -> None:
    """``InvalidOutput`` unless ``out_dir`` is a directory this process can write in, or can be created
    as one (its nearest existing ancestor is a writable directory). Creates nothing."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            raise InvalidOutput(f"--out {out_dir}: {existing} is a dangling symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a directory" if existing == out_dir else f"cannot be created: {existing} is not a directory"
        raise InvalidOutput(f"--out {out_dir}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidOutput(f"--out {out_dir}: no permission to write in {existing}")


def _targets(invoice_id: str, out_dir: Path) -> tuple[Path, Path]:
    if not invoice_id or "/" in invoice_id or invoice_id.startswith("."):
        raise ValueError(f"invoice id {invoice_id!r} cannot name a file")
    return out_dir / f"{invoice_id}.json", out_dir / f"{invoice_id}.html"


def check_targets(invoice_id: str, out_dir: Path) -> None:
    """``InvalidOutput`` when a file of the invoice exists and is not a regular file (a directory)."""
    for path in _targets(invoice_id, out_dir):
        if path.exists() and not path.is_file():
            raise InvalidOutput(f"--out {out_dir}: {path} exists and is not a regular file")


def write(document: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<invoice id>.json`` and ``.html`` (creating ``out_dir``); their paths.
    ``OutputError`` (naming the path) when the file system refuses."""
    json_path, html_path = _targets(str(document["invoice_id"]), out_dir)
    for path, text in ((out_dir, None), (json_path, to_json(document)), (html_path, to_html(document))):
        try:
            if text is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return json_path, html_path
