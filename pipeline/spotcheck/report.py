"""The spot-check HTML report: summary table, metric distributions, and per-sample cards.

The page is static and self-contained within the output folder (relative links to the
samples' WAVs and spectrograms), so it can be opened from a local copy or any static host.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

import numpy as np

METRICS = (
    ("mel_distance", "multi-scale mel distance", "lower is better"),
    ("stft_distance", "multi-scale STFT distance", "lower is better"),
    ("si_sdr_db", "SI-SDR (dB)", "higher is better"),
    ("loudness_diff_lu", "loudness difference (LU)", "closer to 0 is better"),
)


def _finite(values: list[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def summary_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: count, mean, median, 10th and 90th percentile over finite values."""
    rows = []
    for name, label, direction in METRICS:
        values = _finite([r[name] for r in records])
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


def distributions_png(records: list[dict[str, Any]]) -> bytes:
    """Histograms of every metric over the sampled rows, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3))
    for axis, (name, label, direction) in zip(axes, METRICS, strict=True):
        values = _finite([r[name] for r in records])
        axis.hist(values, bins=min(30, max(5, len(values))), color="#4c72b0")
        axis.set_title(f"{label}\n({direction})", fontsize=9)
        axis.set_ylabel("segments")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def render_report(
    records: list[dict[str, Any]], context: dict[str, Any], samples_dir: str = "samples"
) -> str:
    """The report page; `context` lists run facts (inputs, decoder, counts) shown on top."""
    escape = html.escape
    facts = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in context.items()
    )
    stats = "".join(
        f"<tr><td>{escape(r['label'])}</td><td>{escape(r['direction'])}</td><td>{r['count']}</td>"
        + "".join(f"<td>{_number(r[c])}</td>" for c in ("mean", "median", "p10", "p90"))
        + "</tr>"
        for r in summary_rows(records)
    )
    cards = []
    for record in sorted(records, key=lambda r: r["key"]):
        key = escape(record["key"])
        base = f"{samples_dir}/{key}"
        values = " · ".join(f"{label}: {_number(record[name])}" for name, label, _ in METRICS)
        cards.append(
            f"""<section class="sample" id="{key}">
  <h3>{key}</h3>
  <p class="meta">song {escape(record["song_id"])}, segment {record["segment_index"]},
     {record["start_s"]:.2f} s + {record["duration_s"]:.2f} s — {values}</p>
  <img class="spectrogram" src="{base}/spectrogram.png" alt="spectrograms of {key}">
  <div class="players">
    <label>original <audio controls preload="none" src="{base}/original.wav"></audio></label>
    <label>reconstruction
      <audio controls preload="none" src="{base}/reconstruction.wav"></audio></label>
  </div>
</section>"""
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MuCodec spot-check</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; }}
  table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
  th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
  .sample {{ border-top: 1px solid #ddd; padding-top: 0.5em; }}
  .meta {{ color: #555; font-size: 0.9em; }}
  .spectrogram, .distributions {{ max-width: 100%; }}
  .players label {{ display: inline-flex; align-items: center; gap: 0.4em; margin-right: 1em; }}
</style>
</head>
<body>
<h1>MuCodec spot-check</h1>
<h2>Run</h2>
<table>{facts}</table>
<h2>Summary over {len(records)} segments</h2>
<table>
<tr><th>metric</th><th></th><th>n</th><th>mean</th><th>median</th><th>p10</th><th>p90</th></tr>
{stats}
</table>
<img class="distributions" src="distributions.png" alt="metric distributions">
<h2>Segments</h2>
{"".join(cards)}
</body>
</html>
"""
