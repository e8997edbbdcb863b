"""Inline SVG charts for report.html: lines over steps, and bars per model.

Written by hand rather than with matplotlib so the page stays text (small, searchable,
crisp at any zoom) and needs nothing to open it. Both charts label their axes with a
few round tick values.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#2f6fb0", "#e07b28", "#3a9a4a", "#c23b3b", "#8258b3", "#8c5a45", "#d066a8", "#6f6f6f", "#b5a72a",
           "#25a3b5")
WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 30, 40


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[low, high]``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _frame(title: str, y_label: str, x_label: str = "") -> list[str]:
    return [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" class="title">{escape(title)}</text>',
            f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
            f'class="axis-label">{escape(y_label)}</text>',
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
            f'class="axis-label">{escape(x_label)}</text>']


def line_chart(title: str, series: list[tuple[str, list[float], list[float]]], *, y_label: str,
               x_label: str = "step") -> str:
    """One SVG of ``(label, xs, ys)`` series on shared axes (a legend when there are several)."""
    points = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if math.isfinite(y)]
    parts = _frame(title, y_label, x_label)
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no values logged</text></svg>')
        return "".join(parts)
    x_ticks = _ticks(min(p[0] for p in points), max(p[0] for p in points))
    y_ticks = _ticks(min(p[1] for p in points), max(p[1] for p in points))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * (WIDTH - LEFT - RIGHT)

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / ((y1 - y0) or 1) * (HEIGHT - TOP - BOTTOM)

    for tick in y_ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end" class="tick">{_label(tick)}</text>')
    for tick in x_ticks:
        parts.append(f'<text x="{sx(tick):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'class="tick">{_label(tick)}</text>')
    for index, (label, xs, ys) in enumerate(series):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(y))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color(index)}" stroke-width="2">'
                     f'<title>{escape(label)}</title></polyline>')
        if len(xs) == 1:
            parts.append(f'<rect x="{sx(xs[0]) - 3:.1f}" y="{sy(ys[0]) - 3:.1f}" width="6" height="6" '
                         f'fill="{color(index)}"/>')  # a lone point: a dot, since a one-point line draws nothing
        if len(series) > 1:
            parts.append(f'<text x="{WIDTH - RIGHT - 4}" y="{TOP + 14 * (index + 1)}" text-anchor="end" '
                         f'fill="{color(index)}" class="legend">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: list[tuple[str, float]], *, y_label: str,
              errors: list[float | None] | None = None) -> str:
    """One SVG bar per ``(model, value)``, each labelled with its value; the y axis starts at 0.
    ``errors`` (one per bar, ``None`` for none): a whisker of plus and minus that much (e.g. the
    standard deviation over seeds)."""
    parts = _frame(title, y_label)
    values = [v for _, v in bars if math.isfinite(v)]
    if not values:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no values</text></svg>')
        return "".join(parts)
    spread = [e if e is not None and math.isfinite(e) else 0.0 for e in (errors or [None] * len(bars))]
    reach = [v + e for (_, v), e in zip(bars, spread) if math.isfinite(v)]
    floor = [v - e for (_, v), e in zip(bars, spread) if math.isfinite(v)]
    y_ticks = _ticks(min(0.0, min(floor)), max(0.0, max(reach)))
    y0, y1 = y_ticks[0], y_ticks[-1]

    def sy(y: float) -> float:
        return HEIGHT - BOTTOM - (y - y0) / ((y1 - y0) or 1) * (HEIGHT - TOP - BOTTOM)

    for tick in y_ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end" class="tick">{_label(tick)}</text>')
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    width = min(slot * 0.7, 80)
    for index, (label, value) in enumerate(bars):
        x = LEFT + slot * index + (slot - width) / 2
        top, base = sy(max(value, 0.0)), sy(min(value, 0.0))
        parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{max(base - top, 0.5):.1f}" '
                     f'fill="{color(index)}"><title>{escape(label)}: {value:.4g}</title></rect>'
                     f'<text x="{x + width / 2:.1f}" y="{top - 4:.1f}" text-anchor="middle" class="value">'
                     f'{value:.4g}</text>'
                     f'<text x="{x + width / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'class="tick">{escape(label)}</text>')
        if spread[index] > 0 and math.isfinite(value):
            middle, high, low = x + width / 2, sy(value + spread[index]), sy(value - spread[index])
            parts.append(f'<path class="whisker" d="M{middle:.1f} {high:.1f}V{low:.1f}M{middle - 5:.1f} {high:.1f}'
                         f'h10M{middle - 5:.1f} {low:.1f}h10" stroke="#1d2430" stroke-width="1.2" fill="none">'
                         f'<title>{escape(label)}: ± {spread[index]:.4g}</title></path>')
    parts.append("</svg>")
    return "".join(parts)
