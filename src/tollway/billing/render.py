"""An invoice document (``Invoice.as_dict``) as files: ``<id>.json`` and a standalone ``<id>.html``.

The HTML page has no scripts and no external resources (inline CSS only); every string from the
document is escaped with ``html.escape`` (customer ids, descriptions and breakdowns are data).
"""

from __future__ import annotations

import decimal
import json
import os
from collections.abc import Mapping
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from tollway.billing.display import format_count, format_money, show_quantity
from tollway.billing.errors import BillingError

_STYLE = (
    'body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}'
    "table{border-collapse:collapse;width:100%}th,td{padding:.35rem .6rem;border-bottom:1px solid #ddd;"
    "text-align:left;vertical-align:top}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    "ul{margin:.2rem 0;padding-left:1.2rem;color:#555;font-size:.9em}tfoot td{font-weight:bold}"
    ".status{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;background:#eee}"
    # the document's header: who bills whom, the invoice's number and dates
    ".parties{display:flex;gap:2rem;margin:1rem 0}.party{flex:1}.party h2,.facts h2{font-size:.8em;"
    "text-transform:uppercase;letter-spacing:.05em;color:#666;margin:0 0 .3rem}.party p{margin:0}"
    ".facts dl{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem;margin:0}.facts dd{margin:0}"
    ".facts{margin-bottom:1.5rem}.exact{display:block;color:#666;font-size:.8em}"
    "h1 .status{font-size:.5em;vertical-align:middle}"
    ".draft-mark{color:#b00020;border:2px solid #b00020;border-radius:.3rem;padding:0 .4rem;letter-spacing:.1em}"
    ".draft-note{color:#b00020}"
    # print: A4 pages, no row cut in two, the table's head on each page, sections kept whole
    "@page{size:A4;margin:18mm 16mm 20mm 16mm;"
    "@bottom-right{content:'Page ' counter(page) ' of ' counter(pages);font-size:8pt;color:#666}}"
    "@media print{body{margin:0;max-width:none;font-size:10pt}"
    "tr,.party,.facts,.parties{break-inside:avoid;page-break-inside:avoid}"
    "thead{display:table-header-group}tfoot{display:table-row-group}"
    "h1,h2{break-after:avoid;page-break-after:avoid}"
    "section.balance{break-before:page;page-break-before:always}}"
)


def to_json(document: dict[str, Any]) -> str:
    """The document as indented JSON (amounts and quantities are already decimal strings)."""
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def _cell(value: object, numeric: bool = False) -> str:
    text = "" if value is None else escape(str(value))
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _decimal(value: object) -> Decimal | None:
    """A document's decimal string as a ``Decimal`` (None when it is not one: shown as it is)."""
    if not isinstance(value, str):
        return None
    try:
        number = Decimal(value)
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _quantity_cell(value: object, unit: str | None) -> str:
    """A line's quantity for people (``display.show_quantity``): bytes in SI units with the exact bytes
    beside them, counts grouped; the exact quantity in ``data-quantity`` and the tooltip."""
    number = _decimal(value)
    if number is None:
        return _cell(value, numeric=True)
    shown = show_quantity(number, unit)
    exact = escape(str(value))
    small = f'<span class="exact">{escape(shown.exact)}</span>' if shown.exact else ""
    return f'<td class="num" data-quantity="{exact}" title="{exact}">{escape(shown.text)}{small}</td>'


def _amount(value: object, currency: str) -> str:
    """An amount with its currency's places, grouped (``1,234.50``); as stored if it cannot be."""
    number = _decimal(value)
    if number is None:
        return escape(str(value))
    try:
        return escape(format_money(number, currency))
    except (BillingError, decimal.DecimalException):
        return escape(format_count(number))


def _grouped(value: object) -> object:
    """A decimal string with its digits grouped (``1,234.5``); anything else as it is."""
    number = _decimal(value)
    return value if number is None else format_count(number)


def _party(title: str, party: object) -> str:
    """A seller or buyer block (``name``, ``address`` lines, ``country``, ``tax_id``, ``email``)."""
    if not isinstance(party, dict):
        return ""
    lines = []
    if party.get("name"):
        lines.append(f"<strong>{escape(str(party['name']))}</strong>")
    address = party.get("address")
    if isinstance(address, list):
        lines.extend(escape(str(line)) for line in address)
    elif address:
        lines.append(escape(str(address)))
    if party.get("country"):
        lines.append(escape(str(party["country"])))
    if party.get("tax_id"):
        lines.append(f"Tax ID: {escape(str(party['tax_id']))}")
    if party.get("email"):
        lines.append(escape(str(party["email"])))
    return f'<section class="party"><h2>{title}</h2><p>{"<br>".join(lines)}</p></section>'


def _terms(days: object) -> str:
    if isinstance(days, int) and not isinstance(days, bool):
        return "due on receipt" if days == 0 else f"net {days} {'day' if days == 1 else 'days'} from the issue date"
    return escape(str(days))


def _facts(document: dict[str, Any]) -> str:
    """Number, dates, terms, customer, plan and period: what the document has of them."""
    period = document["period"]
    draft = document.get("status") == "draft"
    facts: list[tuple[str, str]] = []
    if document.get("number"):
        facts.append(("Invoice number", escape(str(document["number"]))))
    elif draft:
        facts.append(("Invoice number", '<span class="draft-note">none yet (a draft)</span>'))
    facts.append(("Reference", escape(str(document["invoice_id"]))))
    for key, label in (("issued_on", "Issue date"), ("due_on", "Due date")):
        if document.get(key):
            facts.append((label, escape(str(document[key]))))
    if document.get("payment_terms_days") is not None:
        facts.append(("Payment terms", _terms(document["payment_terms_days"])))
    facts.append(("Customer", escape(str(document["customer_id"]))))
    facts.append(("Plan", escape(str(document["plan"]))))
    facts.append(
        (
            "Period",
            f"{escape(str(period['month']))}: {escape(str(period['local_start']))} to "
            f"{escape(str(period['local_end']))} ({escape(str(period['timezone']))})",
        )
    )
    rows = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return f'<section class="facts"><dl>{rows}</dl></section>'


def to_html(document: dict[str, Any], units: Mapping[str, str] | None = None) -> str:
    """A readable, printable page (A4): a header (seller, buyer, number, issue and due dates, payment
    terms, when the document has them; a draft is marked DRAFT), customer, plan and period in the
    customer's timezone, the lines (quantities for people: ``display``), the total. ``units``: meter id →
    catalog unit (``display.meter_units``), so that bytes meters show in kB/MB/GB; without it, every
    quantity shows as a grouped count."""
    units = units or {}
    period = document["period"]
    currency_code = str(document["currency"])
    currency = escape(currency_code)
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
        meter = line.get("meter")
        rows.append(
            "<tr>"
            + _cell(label)
            + f"<td>{description}</td>"
            + _quantity_cell(line["quantity"], units.get(meter) if isinstance(meter, str) else None)
            + f'<td class="num">{_amount(line["amount"], currency_code)}</td>'
            + "</tr>"
        )
    draft = document.get("status") == "draft"
    number = document.get("number")
    title = f"Invoice {escape(str(number if number else document['invoice_id']))}"
    interim = document.get("interim")
    if interim:  # an interim invoice (progressive billing): which one of its period
        title += f" (interim invoice {escape(str(interim['sequence']))} of {escape(str(period['month']))})"
    mark = ' <span class="draft-mark">DRAFT</span>' if draft else ""
    parties = _party("From", document.get("seller")) + _party("Bill to", document.get("buyer"))
    balance = _balance_html(document.get("balance"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{'DRAFT ' if draft else ''}{title}</title><style>{_STYLE}</style></head><body>\n"
        f'<header><h1>{title}{mark} <span class="status">{escape(str(document["status"]))}</span></h1>\n'
        + (
            '<p class="draft-note">DRAFT: not finalized; it may still change and has no invoice number. '
            "Do not pay it.</p>\n"
            if draft
            else ""
        )
        + (f'<div class="parties">{parties}</div>\n' if parties else "")
        + _facts(document)
        + "</header>\n"
        f'<section class="lines"><table><thead><tr><th>Line</th><th>Description</th><th class="num">Quantity</th>'
        f'<th class="num">Amount ({currency})</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + f'\n</tbody><tfoot><tr><td colspan="3">Total</td><td class="num">'
        f"{_amount(document['total'], currency_code)} {currency}</td></tr></tfoot></table></section>\n"
        f"{balance}</body></html>\n"
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
        worth = _cell(_grouped(line["amount_currency"]), numeric=True) if credit else ""
        when = f" ({escape(str(line['at']))})" if line["at"] else ""
        rows.append(
            f"<tr>{_cell(line['kind'])}<td>{escape(str(line['description']))}{when}</td>"
            f"{_cell(_grouped(line['amount']), numeric=True)}{worth}</tr>"
        )
    worth_head = f'<th class="num">Worth ({currency})</th>' if credit else ""
    value = f" (1 {unit} = {escape(str(balance['value']))} {currency})" if credit else ""
    return (
        f'<section class="balance"><h2>Prepaid balance{value}</h2>\n'
        f'<table class="balance"><thead><tr><th>Line</th><th>Description</th><th class="num">Amount ({unit})</th>'
        f"{worth_head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></section>\n"
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


def write(document: dict[str, Any], out_dir: Path, units: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<invoice id>.json`` and ``.html`` (creating ``out_dir``); their paths.
    ``units``: as for ``to_html``. ``OutputError`` (naming the path) when the file system refuses."""
    json_path, html_path = _targets(str(document["invoice_id"]), out_dir)
    for path, text in ((out_dir, None), (json_path, to_json(document)), (html_path, to_html(document, units))):
        try:
            if text is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise OutputError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return json_path, html_path
