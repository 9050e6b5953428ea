"""The dataset card's page (`card.html`), drawn from `card_data`'s dict.

One self-contained file: the shared style sheet inlined, charts as inline SVG, no scripts,
fonts or images, so it opens from a local copy or any static host. Every text from the data
(titles, song ids, artists, source paths, reasons) is escaped: catalogs are untrusted.
Empty sections say so in words rather than draw empty charts.
"""

from __future__ import annotations

from html import escape
from typing import Any

from pipeline.card.charts import histogram_svg, number, scatter_svg, split_colour
from pipeline.report_style import style_sheet

_BAR_EM = 10  # Width of the longest hours bar in the top artists' table.


def _none(text: str) -> str:
    return f'<p class="none">{escape(text)}</p>'


def _hours(value: float) -> str:
    return f"{value:,.2f}"


def _splits(card: dict[str, Any]) -> str:
    """Songs, segments, hours and artists per split, then the totals."""

    def cells(tally: dict[str, Any]) -> str:
        return (f'<td class="number">{tally["songs"]:,}</td>'
                f'<td class="number">{tally["segments"]:,}</td>'
                f'<td class="number">{_hours(tally["hours"])}</td>'
                f'<td class="number">{tally["artists"]:,}</td>')  # fmt: skip

    rows = "".join(
        f"<tr><th>{escape(name)}</th>{cells(tally)}</tr>" for name, tally in card["splits"].items()
    )
    return (f"<table><tr><th>split</th><th>songs</th><th>segments</th><th>hours</th>"
            f"<th>artists</th></tr>{rows}<tr><th>total</th>{cells(card['totals'])}</tr>"
            f"</table>")  # fmt: skip


def _rejects(rejects: dict[str, int]) -> str:
    if not rejects:
        return _none("No songs rejected.")
    rows = "".join(
        f'<tr><td>{escape(reason)}</td><td class="number">{count:,}</td></tr>'
        for reason, count in rejects.items()
    )
    return f"<table><tr><th>reason</th><th>songs</th></tr>{rows}</table>"


def _measure(name: str, measure: dict[str, Any]) -> str:
    """One figure: the histogram and its numbers, or a line saying there are no values."""
    caption = f"{escape(name)} ({escape(measure['unit'])})"
    undefined = f", {measure['undefined']:,} undefined" if measure["undefined"] else ""
    if not measure["count"]:
        body = _none(f"No defined values{undefined}.")
    else:
        body = (f"{histogram_svg(name, measure)}<p class=\"meta\">{measure['count']:,} songs"
                f"{undefined}; median {number(measure['median'])}, 10th to 90th percentile "
                f"{number(measure['p10'])} to {number(measure['p90'])}</p>")  # fmt: skip
    return f'<figure class="chart"><figcaption>{caption}</figcaption>{body}</figure>'


def _measures(measures: dict[str, dict[str, Any]]) -> str:
    if not measures:
        return _none("No measures.")
    figures = "".join(_measure(name, measure) for name, measure in measures.items())
    return f'<div class="charts">{figures}</div>'


def _scatter(points: list[list[Any]]) -> str:
    """The scatter with a legend of the splits it shows (and their song counts)."""
    if not points:
        return _none("No song has both a loudness and a bandwidth.")
    counts: dict[str, int] = {}
    for _, _, split in points:
        counts[split] = counts.get(split, 0) + 1
    legend = "".join(
        f'<li><span class="swatch" style="background: {split_colour(split)}"></span>'
        f"{escape(split)} ({count:,})</li>"
        for split, count in counts.items()
    )
    return (f'<figure class="chart wide">{scatter_svg(points)}'
            f'<ul class="legend">{legend}</ul></figure>')  # fmt: skip


def _duplicates(duplicates: dict[str, Any]) -> str:
    """Each listed group's members (id and source) and the one kept."""
    groups = duplicates["groups"]
    if not groups:
        return _none("No duplicates found.")
    rows = []
    for position, members in enumerate(groups, start=1):
        listed = "<br>".join(f"{escape(m['song_id'])}: {escape(m['source'])}" for m in members)
        kept = ", ".join(escape(m["song_id"]) for m in members if m["kept"]) or "none"
        rows.append(f'<tr><td class="number">{position}</td><td class="long">{listed}</td>'
                    f"<td>{kept}</td></tr>")  # fmt: skip
    shown = len(groups)
    note = f" (the first {shown:,} listed)" if shown < duplicates["count"] else ""
    return (f'<p class="meta">{duplicates["count"]:,} groups{note}.</p><table><tr>'
            f"<th>group</th><th>members</th><th>kept</th></tr>{''.join(rows)}</table>")  # fmt: skip


def _artists(artists: list[dict[str, Any]]) -> str:
    """The artists with most hours, each with a bar in proportion to its hours."""
    if not artists:
        return _none("No songs kept.")
    most = max(a["hours"] for a in artists) or 1.0  # All zero: bars of width zero.
    rows = "".join(
        f'<tr><td class="long">{escape(a["artist"])}</td><td class="hours">'
        f'<span class="hours-bar" style="width: {_BAR_EM * a["hours"] / most:.2f}em"></span>'
        f'{_hours(a["hours"])}</td><td class="number">{a["songs"]:,}</td>'
        f"<td>{escape(', '.join(a['splits']))}</td></tr>"
        for a in artists
    )
    return (f"<table><tr><th>artist</th><th>hours</th><th>songs</th><th>splits</th></tr>"
            f"{rows}</table>")  # fmt: skip


def card_html(card: dict[str, Any]) -> str:
    """The card page for `card` (a `card_data` dict, or the same read back from card.json)."""
    title = escape(card["title"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dataset card: {title}</title>
<style>
{style_sheet()}</style>
</head>
<body>
<h1>Dataset card: {title}</h1>
<p class="meta">card version {card["version"]}</p>
<h2>Splits</h2>
{_splits(card)}
<h2>Rejected songs</h2>
{_rejects(card["rejects"])}
<h2>Song measures</h2>
{_measures(card["measures"])}
<h2>Loudness against bandwidth</h2>
{_scatter(card["loudness_vs_bandwidth"])}
<h2>Duplicate groups</h2>
{_duplicates(card["duplicate_groups"])}
<h2>Top artists by hours</h2>
{_artists(card["top_artists"])}
</body>
</html>
"""
