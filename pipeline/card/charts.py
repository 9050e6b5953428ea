"""The dataset card's charts as inline SVG: a histogram per measure, a split-coloured scatter.

Drawn as plain SVG text rather than with matplotlib: the page stays one small file whose
charts scale with the window, and the text in them is the page's (escaped, searchable).
Every chart has a fixed `viewBox`; the style sheet sizes it to its grid cell.
"""

from __future__ import annotations

import html
from typing import Any

# One colour per split (the matplotlib palette the spot-check plots use); others are grey.
SPLIT_COLOURS = {"train": "#4c72b0", "validation": "#dd8452", "test": "#55a868"}
OTHER_COLOUR = "#8c8c8c"


def number(value: float) -> str:
    """A short human form: thousands separated, two decimals, or three significant digits."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def split_colour(split: str) -> str:
    """The colour of `split` in the charts (grey for a split the card does not know)."""
    return SPLIT_COLOURS.get(split, OTHER_COLOUR)


def _position(value: float, low: float, high: float, start: float, end: float) -> float:
    """`value` in [low, high] mapped onto [start, end]; the middle when the range is empty."""
    if high == low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


def _anchor(x: float, left: float, right: float) -> str:
    """Text anchor that keeps a label at `x` inside [left, right]."""
    if x - left < 50:
        return "start"
    return "end" if right - x < 50 else "middle"


def histogram_svg(name: str, measure: dict[str, Any]) -> str:
    """Bars of `measure["histogram"]`, min/max ticks, the median marked; needs count > 0."""
    edges, counts = measure["histogram"]["edges"], measure["histogram"]["counts"]
    left, right, top, bottom = 44.0, 308.0, 24.0, 148.0
    low, high, tallest = edges[0], edges[-1], max(counts)
    unit = html.escape(measure["unit"])
    bars = []
    for index, count in enumerate(counts):
        if count == 0:
            continue
        if low == high:  # One value: one bar across the whole axis.
            x0, x1 = left, right
        else:
            x0 = _position(edges[index], low, high, left, right)
            x1 = _position(edges[index + 1], low, high, left, right)
        height = count / tallest * (bottom - top)
        tip = f"{number(edges[index])} to {number(edges[index + 1])} {unit}: {count} songs"
        bars.append(f'<rect class="bar" x="{x0:.1f}" y="{bottom - height:.1f}" '
                    f'width="{max(x1 - x0 - 0.5, 0.5):.1f}" height="{height:.1f}">'
                    f"<title>{tip}</title></rect>")  # fmt: skip
    median = measure["median"]
    mx = _position(median, low, high, left, right)
    label = f"{html.escape(name)} ({unit})"
    return f"""<svg viewBox="0 0 320 190" role="img" aria-label="histogram of {label}">
<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>
<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>
{"".join(bars)}
<line class="median" x1="{mx:.1f}" y1="{top - 4}" x2="{mx:.1f}" y2="{bottom}"/>
<text class="median-label" x="{mx:.1f}" y="{top - 8}" text-anchor="{_anchor(mx, left, right)}">\
median {number(median)}</text>
<text x="{left}" y="{bottom + 14}" text-anchor="start">{number(low)}</text>
<text x="{right}" y="{bottom + 14}" text-anchor="end">{number(high)}</text>
<text x="{(left + right) / 2}" y="{bottom + 34}" text-anchor="middle">{label}</text>
<text x="{left - 4}" y="{top + 4}" text-anchor="end">{tallest}</text>
<text x="{left - 4}" y="{bottom}" text-anchor="end">0</text>
<text x="12" y="{(top + bottom) / 2}" text-anchor="middle" \
transform="rotate(-90 12 {(top + bottom) / 2})">songs</text>
</svg>"""


def _padded(values: list[float]) -> tuple[float, float]:
    """The range of `values`, widened to one unit around a single value."""
    low, high = min(values), max(values)
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def scatter_svg(points: list[list[Any]]) -> str:
    """Loudness (x, LUFS) against bandwidth (y, Hz), one dot per song coloured by split."""
    left, right, top, bottom = 64.0, 628.0, 12.0, 312.0
    x_low, x_high = _padded([p[0] for p in points])
    y_low, y_high = _padded([p[1] for p in points])
    dots = "".join(
        f'<circle cx="{_position(x, x_low, x_high, left, right):.1f}" '
        f'cy="{_position(y, y_low, y_high, bottom, top):.1f}" r="2.5" '
        f'fill="{split_colour(split)}" fill-opacity="0.6"/>'
        for x, y, split in points
    )
    middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
    return f"""<svg viewBox="0 0 640 360" role="img" aria-label="loudness against bandwidth">
<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>
<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>
{dots}
<text x="{left}" y="{bottom + 14}" text-anchor="start">{number(x_low)}</text>
<text x="{right}" y="{bottom + 14}" text-anchor="end">{number(x_high)}</text>
<text x="{middle_x}" y="{bottom + 36}" text-anchor="middle">loudness (LUFS)</text>
<text x="{left - 4}" y="{top + 8}" text-anchor="end">{number(y_high)}</text>
<text x="{left - 4}" y="{bottom}" text-anchor="end">{number(y_low)}</text>
<text x="14" y="{middle_y}" text-anchor="middle" \
transform="rotate(-90 14 {middle_y})">bandwidth (Hz)</text>
</svg>"""
