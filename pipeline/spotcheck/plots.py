"""The spot-check report's plots (matplotlib, PNG bytes): how the codecs compare.

* `distributions_png`: per metric, one box (with every segment as a dot) per codec.
* `bitrate_png`: nominal bitrate (x) against mean mel distance (y), one point per codec.
* `codebook_png`: per codec and codebook, the share of codes used and the entropy
  efficiency (DAC paper, section 3.2; `pipeline.tokenize.codebook_stats`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

METRICS = (
    ("mel_distance", "multi-scale mel distance", "lower is better"),
    ("stft_distance", "multi-scale STFT distance", "lower is better"),
    ("si_sdr_db", "SI-SDR (dB)", "higher is better"),
    ("loudness_diff_lu", "loudness difference (LU)", "closer to 0 is better"),
)


def finite(values: list[float]) -> np.ndarray:
    """`values` as an array without NaN or infinities."""
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def codec_names(records: list[dict[str, Any]]) -> list[str]:
    """The codecs in `records`, in the order the report shows them (by bitrate, then name)."""
    rates = {r["codec"]: r["bitrate_kbps"] for r in records}
    return sorted(rates, key=lambda c: (rates[c], c))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    _pyplot().close(figure)
    return buffer.getvalue()


def distributions_png(records: list[dict[str, Any]]) -> bytes:
    """Per metric a box per codec over its segments, each segment a jittered dot."""
    plt = _pyplot()
    codecs = codec_names(records)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(3.6 * len(METRICS), 3.4))
    rng = np.random.default_rng(0)  # Jitter only; the same picture every run.
    for axis, (name, label, direction) in zip(axes, METRICS, strict=True):
        values = [finite([r[name] for r in records if r["codec"] == c]) for c in codecs]
        axis.boxplot(values, showfliers=False)
        for position, points in enumerate(values, start=1):
            jitter = rng.uniform(-0.12, 0.12, len(points))
            axis.plot(position + jitter, points, "o", ms=3, alpha=0.6, color="#4c72b0")
        axis.set_xticks(range(1, len(codecs) + 1), codecs, rotation=20, fontsize=8)
        axis.set_title(f"{label}\n({direction})", fontsize=9)
    return _png(figure)


def bitrate_png(records: list[dict[str, Any]]) -> bytes:
    """Bitrate (kbps, x) against mean multi-scale mel distance (y), one labelled point per
    codec: down and to the left is better."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for codec in codec_names(records):
        rows = [r for r in records if r["codec"] == codec]
        mel = finite([r["mel_distance"] for r in rows])
        x, y = rows[0]["bitrate_kbps"], float(mel.mean()) if len(mel) else float("nan")
        axis.plot([x], [y], "o", ms=7)
        axis.annotate(codec, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axis.set_xlabel("bitrate (kbps)")
    axis.set_ylabel("mean mel distance (lower is better)")
    axis.grid(alpha=0.3)
    return _png(figure)


def codebook_png(stats: dict[str, dict[str, Any]]) -> bytes:
    """Bars per codec and codebook: share of codes used, and entropy / log2(size)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    width = 0.8 / max(1, len(stats))
    for offset, (codec, data) in enumerate(sorted(stats.items())):
        books = data["codebooks"]
        x = np.arange(len(books)) + offset * width
        axes[0].bar(x, [b["usage"] for b in books], width, label=codec)
        axes[1].bar(x, [b["efficiency"] for b in books], width, label=codec)
    for axis, title in zip(axes, ("codes used (share)", "entropy efficiency"), strict=True):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("codebook")
        axis.set_ylim(0, 1.05)
        axis.legend(fontsize=8)
    return _png(figure)
