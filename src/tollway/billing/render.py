"""An invoice document (``Invoice.as_dict``) as files: ``<id>.json`` and a standalone ``<id>.html``.

The HTML page has no scripts and no external resources (inline CSS only); every string from the
document is escaped with ``html.escape`` (customer ids, descriptions and breakdowns are data).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

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
            text = f"Plan {held['plan']} from {held['start']} to {held['end']} ({held['fraction']} of the period)"
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
        f"{currency}</td></tr></tfoot></table>\n</body></html>\n"
    )


def write(document: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<invoice id>.json`` and ``.html`` (creating ``out_dir``); their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = str(document["invoice_id"])
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invoice id {name!r} cannot name a file")
    json_path, html_path = out_dir / f"{name}.json", out_dir / f"{name}.html"
    json_path.write_text(to_json(document), encoding="utf-8")
    html_path.write_text(to_html(document), encoding="utf-8")
    return json_path, html_path
