"""The spot-check HTML report: the codecs side by side, then every segment side by side.

Sections: run facts; one row per codec (bitrate and mean metrics); the metric distributions
per codec, bitrate against mel distance, and codebook usage and efficiency (inline PNGs);
then one row per segment: the original's spectrogram and player, then each codec's.
The page is static; samples are relative links, so it opens from a local copy or any
static host.
"""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.report_style import style_sheet
from pipeline.spotcheck.plots import (
    METRICS,
    bitrate_png,
    codebook_png,
    codec_names,
    distributions_png,
    finite,
)


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: count, mean, median, 10th and 90th percentile over finite values."""
    rows = []
    for name, label, direction in METRICS:
        values = finite([r[name] for r in records])
        stats = (
            {
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "p10": float(np.percentile(values, 10)),
                "p90": float(np.percentile(values, 90)),
            }
            if len(values)
            else dict.fromkeys(("mean", "median", "p10", "p90"), math.nan)
        )
        rows.append({"metric": name, "label": label, "direction": direction,
                     "count": len(values), **stats})  # fmt: skip
    return rows


def codec_summaries(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`summary_rows` of each codec's records, in report order."""
    return {c: summary_rows([r for r in records if r["codec"] == c]) for c in codec_names(records)}


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def _inline(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _comparison(records: list[dict[str, Any]]) -> str:
    """One row per codec: bitrate and the mean of every metric."""
    escape = html.escape
    heads = "".join(f"<th>{escape(label)}<br><small>{escape(d)}</small></th>"
                    for _, label, d in METRICS)  # fmt: skip
    rows = []
    for codec, summary in codec_summaries(records).items():
        rate = next(r["bitrate_kbps"] for r in records if r["codec"] == codec)
        cells = "".join(f"<td>{_number(s['mean'])}</td>" for s in summary)
        rows.append(f"<tr><th>{escape(codec)}</th><td>{rate:.2f}</td>"
                    f"<td>{summary[0]['count']}</td>{cells}</tr>")  # fmt: skip
    return (f'<table class="comparison"><tr><th>codec</th><th>bitrate (kbps)</th><th>n</th>'
            f"{heads}</tr>{''.join(rows)}</table>")  # fmt: skip


def _segment(key: str, by_codec: dict[str, dict[str, Any]], codecs: list[str], base: str) -> str:
    """One segment's row: the original, then each codec's spectrogram and player."""
    escape = html.escape
    first = next(iter(by_codec.values()))
    cells = [
        f"""<figure class="cell"><figcaption>original</figcaption>
  <img class="spectrogram" src="{base}/original.png" alt="spectrogram of {key}">
  <audio controls preload="none" src="{base}/original.wav"></audio></figure>"""
    ]
    for codec in codecs:
        record = by_codec.get(codec)
        if record is None:
            continue
        name = escape(codec)
        cells.append(
            f"""<figure class="cell"><figcaption>{name}: mel {_number(record["mel_distance"])},
  SI-SDR {_number(record["si_sdr_db"])} dB</figcaption>
  <img class="spectrogram" src="{base}/{name}/spectrogram.png" alt="{name} spectrogram of {key}">
  <audio controls preload="none" src="{base}/{name}/reconstruction.wav"></audio></figure>"""
        )
    return f"""<section class="sample" id="{key}">
  <h3>{key}</h3>
  <p class="meta">song {escape(first["song_id"])}, segment {first["segment_index"]},
     {first["start_s"]:.2f} s + {first["duration_s"]:.2f} s</p>
  <div class="row">{"".join(cells)}</div>
</section>"""


def render_report(
    records: list[dict[str, Any]],
    context: dict[str, Any],
    codebook_stats: dict[str, dict[str, Any] | None],
    samples_dir: str = "samples",
) -> str:
    """The report page.

    Args:
        records: One `SampleMetrics` dict per decoded (segment, codec).
        context: Run facts (inputs, codecs, decoder, counts) shown on top.
        codebook_stats: Per codec its tokenize `codebook_stats.json`, or None if absent.
        samples_dir: Where the samples are, relative to the page.
    """
    escape = html.escape
    facts = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in context.items()
    )
    codecs = codec_names(records)
    by_key: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        by_key[record["key"]][record["codec"]] = record
    segments = "".join(
        _segment(escape(key), by_key[key], codecs, f"{samples_dir}/{escape(key)}")
        for key in sorted(by_key)
    )
    plots = ""
    if records:
        plots = (_inline(distributions_png(records), "metric distributions per codec")
                 + _inline(bitrate_png(records), "bitrate against mel distance"))  # fmt: skip
    stats = {c: s for c, s in codebook_stats.items() if s}
    codebooks = (
        _inline(codebook_png(stats), "codebook usage and efficiency")
        if stats
        else "<p>No codebook statistics in the token tables.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Codec spot-check</title>
<style>
{style_sheet()}</style>
</head>
<body>
<h1>Codec spot-check: {escape(", ".join(codecs))}</h1>
<h2>Run</h2>
<table>{facts}</table>
<h2>Codecs over {len(by_key)} segments (means)</h2>
{_comparison(records)}
{plots}
<h2>Codebook usage and entropy efficiency</h2>
{codebooks}
<h2>Segments</h2>
{segments}
</body>
</html>
"""
