"""A bar chart of one meter's daily usage as inline SVG, drawn on the server: no script, no external
resource. Every day of the range has a bar (a zero day a bar of height 0) carrying its day and exact
value in ``data-day`` / ``data-value`` and a ``<title>`` tooltip, so what the chart shows can be read
back from the markup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape
from typing import Final

WIDTH: Final = 880
HEIGHT: Final = 200
LEFT: Final = 56
RIGHT: Final = 12
TOP: Final = 12
BOTTOM: Final = 28


@dataclass(frozen=True, slots=True)
class DailyValue:
    day: str  # YYYY-MM-DD
    value: Decimal


def compact(value: Decimal) -> str:
    """An axis label: 950, 1.2k, 3.4M, 5.6G."""
    for size, suffix in ((Decimal(10**9), "G"), (Decimal(10**6), "M"), (Decimal(10**3), "k")):
        if abs(value) >= size:
            return f"{(value / size).quantize(Decimal('0.1')).normalize():f}{suffix}"
    if value == value.to_integral_value():
        return f"{value.to_integral_value():f}"
    return f"{value.quantize(Decimal('0.01')).normalize():f}"


def plain(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _short_day(day: str) -> str:
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return f"{months[int(day[5:7]) - 1]} {int(day[8:10])}"


def bar_chart(meter: str, unit: str, days: Sequence[DailyValue]) -> str:
    """The SVG of ``days`` in order; ``unit`` names what a value counts (``requests``, ``bytes``…)."""
    peak = max((d.value for d in days), default=Decimal(0))
    scale = float(peak) if peak > 0 else 1.0
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.72, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" data-meter="{escape(meter)}" '
        f'aria-label="Daily {escape(meter)} ({escape(unit)})">'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        label = compact(peak * Decimal(str(fraction))) if peak > 0 else ("0" if fraction == 0 else "")
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        if label:
            parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for index, day in enumerate(days):
        height = plot_h * float(day.value) / scale if day.value > 0 else 0.0
        x = LEFT + index * slot + (slot - bar_w) / 2
        y = TOP + plot_h - height
        value = plain(day.value)
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
            f'data-day="{day.day}" data-value="{value}"><title>{day.day}: {value} {escape(unit)}</title></rect>'
        )
    if days:
        ticks = sorted({*range(0, len(days), 7 if len(days) <= 62 else 30), len(days) - 1})
        if len(ticks) > 2 and ticks[-1] - ticks[-2] < 4:
            ticks.pop(-2)  # keep the last day's label clear of its neighbour
        for index in ticks:
            x = LEFT + index * slot + slot / 2
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{_short_day(days[index].day)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
