"""The customer's usage and invoice page: this billing period's usage per meter, a daily chart per
meter, a prepaid customer's balance (grants with expiry, burn per day), the spend cap with what was
spent, and the invoices with links to each one's page and PDF. Standalone HTML (inline CSS and SVG, no
script, nothing fetched); every string from the stores is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from tollway.admin.invoice_queries import InvoiceSummary
from tollway.admin.usage_chart import DailyValue, bar_chart
from tollway.admin.usage_queries import MeterTotal

_STYLE: Final = (
    "body{font-family:system-ui,'DejaVu Sans',sans-serif;margin:0;background:#f5f6f8;color:#1d2330}"
    "main{max-width:60rem;margin:0 auto;padding:1.5rem 2rem}"
    "h1{margin:.2rem 0 .1rem;font-size:1.6rem}h2{font-size:1.15rem;margin:1.6rem 0 .6rem}"
    ".sub{color:#5b6475;margin:0}"
    ".cards{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:.7rem}"
    ".card{background:#fff;border:1px solid #dde1e8;border-radius:.5rem;padding:.7rem 1rem;min-width:10rem}"
    ".card .meter{color:#5b6475;font-size:.85rem}.card .qty{font-size:1.5rem;font-weight:600}"
    ".card .note{color:#5b6475;font-size:.8rem}"
    "figure{background:#fff;border:1px solid #dde1e8;border-radius:.5rem;margin:0 0 .8rem;padding:.6rem}"
    "figcaption{font-weight:600;margin:0 0 .3rem .3rem}"
    ".chart{display:block;height:auto}.chart .bar{fill:#3b6fd8}.chart .grid{stroke:#e3e6ec;stroke-width:1}"
    ".chart .axis{fill:#5b6475;font-size:11px}"
    "table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}"
    "th,td{padding:.45rem .7rem;border-bottom:1px solid #e6e9ef;text-align:left}"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".status{display:inline-block;padding:.05rem .45rem;border-radius:.3rem;background:#e8ebf1;font-size:.85rem}"
    ".status.finalized{background:#d8f0de}"
    "footer{color:#7a8293;font-size:.8rem;margin-top:1.5rem}"
)


@dataclass(frozen=True, slots=True)
class MeterChart:
    meter: str
    unit: str
    days: Sequence[DailyValue]


@dataclass(frozen=True, slots=True)
class GrantLine:
    grant_id: str
    status: str
    amount: str | None
    remaining: str
    expires_at: str | None


@dataclass(frozen=True, slots=True)
class BalanceView:
    remaining: str
    unit: str
    grants: Sequence[GrantLine]
    burn_per_day: Sequence[DailyValue]


@dataclass(frozen=True, slots=True)
class SpendCapView:
    cap: str
    spent: str
    unit: str
    soft: bool
    set_by: str
    plan_cap: str
    customer_cap: str | None


@dataclass(frozen=True, slots=True)
class UsagePage:
    customer_id: str
    display_name: str | None
    plan_id: str | None
    timezone: str
    period_start: str  # local ISO 8601
    period_end: str
    totals: Sequence[MeterTotal]
    units: dict[str, str]
    charts: Sequence[MeterChart]
    invoices: Sequence[tuple[InvoiceSummary, str, str]]  # with the links to its HTML page and its PDF
    generated_at: str
    balance: BalanceView | None = None  # a prepaid plan
    spend_cap: SpendCapView | None = None  # a plan with a spend cap


def _cards(page: UsagePage) -> str:
    if not page.totals:
        return '<p class="sub">No usage recorded in this period yet.</p>'
    cards = []
    for total in page.totals:
        unit = page.units.get(total.meter, "units")
        cards.append(
            f'<div class="card" data-meter="{escape(total.meter)}" data-quantity="{escape(total.quantity)}">'
            f'<div class="meter">{escape(total.meter)}</div>'
            f'<div class="qty">{escape(total.quantity)}</div>'
            f'<div class="note">{escape(unit)} · {total.requests} requests'
            + (f" · {total.refused} refused" if total.refused else "")
            + "</div></div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _charts(page: UsagePage) -> str:
    if not page.charts:
        return ""
    figures = [
        f"<figure><figcaption>{escape(chart.meter)} per day ({escape(chart.unit)})</figcaption>"
        f"{bar_chart(chart.meter, chart.unit, chart.days)}</figure>"
        for chart in page.charts
    ]
    return f"<h2>Daily usage ({escape(page.timezone)} days)</h2>" + "".join(figures)


def _money(page: UsagePage) -> str:
    parts = []
    balance, cap = page.balance, page.spend_cap
    if balance is not None or cap is not None:
        cards = []
        if balance is not None:
            cards.append(
                f'<div class="card" id="balance" data-remaining="{escape(balance.remaining)}" '
                f'data-unit="{escape(balance.unit)}"><div class="meter">Balance</div>'
                f'<div class="qty">{escape(balance.remaining)} {escape(balance.unit)}</div>'
                f'<div class="note">{len(balance.grants)} grant(s) held</div></div>'
            )
        if cap is not None:
            whose = "your own cap" if cap.set_by == "customer" else "the plan's cap"
            kind = "soft: past it, requests are marked, not refused" if cap.soft else "hard"
            cards.append(
                f'<div class="card" id="spend-cap" data-spent="{escape(cap.spent)}" data-cap="{escape(cap.cap)}" '
                f'data-set-by="{escape(cap.set_by)}"><div class="meter">Spend cap this period</div>'
                f'<div class="qty">{escape(cap.spent)} of {escape(cap.cap)} {escape(cap.unit)}</div>'
                f'<div class="note">{escape(whose)} ({escape(kind)}); plan cap {escape(cap.plan_cap)}</div></div>'
            )
        parts.append(f'<h2>Money</h2><div class="cards">{"".join(cards)}</div>')
    if balance is not None:
        rows = [
            f'<tr data-grant="{escape(g.grant_id)}"><td>{escape(g.grant_id)}</td>'
            f'<td><span class="status">{escape(g.status)}</span></td>'
            f'<td class="num">{escape(g.remaining)}</td><td class="num">{escape(g.amount or "")}</td>'
            f"<td>{escape(g.expires_at or 'never')}</td></tr>"
            for g in balance.grants
        ]
        parts.append(
            f"<h2>Grants ({escape(balance.unit)}, in burn order)</h2><table><thead><tr><th>Grant</th><th>Status</th>"
            f'<th class="num">Remaining</th><th class="num">Amount</th><th>Expires</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            if rows
            else '<h2>Grants</h2><p class="sub">No grants held.</p>'
        )
        if balance.burn_per_day:
            parts.append(
                f"<figure><figcaption>Balance burned per day ({escape(balance.unit)}, {escape(page.timezone)} days)"
                f"</figcaption>{bar_chart('burn', balance.unit, balance.burn_per_day)}</figure>"
            )
    return "".join(parts)


def _invoices(page: UsagePage) -> str:
    if not page.invoices:
        return '<h2>Invoices</h2><p class="sub">No invoices yet.</p>'
    rows = []
    for invoice, link, pdf in page.invoices:
        rows.append(
            "<tr>"
            f'<td><a href="{escape(link)}">{escape(invoice.invoice_id)}</a> <a href="{escape(pdf)}">PDF</a></td>'
            f"<td>{escape(invoice.period)}</td>"
            f"<td>{escape(invoice.plan_id)}</td>"
            f'<td><span class="status {escape(invoice.status)}">{escape(invoice.status)}</span></td>'
            f'<td class="num">{escape(invoice.total)} {escape(invoice.currency)}</td>'
            "</tr>"
        )
    return (
        "<h2>Invoices</h2><table><thead><tr><th>Invoice</th><th>Period</th><th>Plan</th><th>Status</th>"
        f'<th class="num">Total</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def render(page: UsagePage) -> str:
    name = page.display_name or page.customer_id
    plan = f"plan {escape(page.plan_id)}" if page.plan_id else "no subscription"
    title = f"Usage and invoices — {escape(name)}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{title}</title><style>{_STYLE}</style>'
        "</head><body><main>\n"
        f"<h1>{escape(name)}</h1>"
        f'<p class="sub">Customer {escape(page.customer_id)} · {plan}</p>'
        f'<h2>This billing period</h2><p class="sub">{escape(page.period_start)} to {escape(page.period_end)} '
        f"({escape(page.timezone)})</p>\n"
        f"{_cards(page)}\n{_money(page)}\n{_charts(page)}\n{_invoices(page)}\n"
        f"<footer>Generated {escape(page.generated_at)}. Usage counts admitted requests, each once; "
        "refused requests are never billed.</footer>\n"
        "</main></body></html>\n"
    )
