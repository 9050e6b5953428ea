"""Codebook statistics of a tokenize run: usage and entropy-based bitrate efficiency.

Following the DAC paper (Kumar et al., 2023, "High-Fidelity Audio Compression with Improved
RVQGAN", section 3.2), the efficiency of a codebook is the entropy of its empirical code
distribution divided by its capacity, log2(codebook_size): 1.0 means every code is used
equally often, so the nominal bitrate is fully spent. Usage is the fraction of codes that
occur at least once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from schemas.codebook_stats import CODEBOOK_STATS_VERSION


@dataclass
class CodebookHistogram:
    """Code counts `[n_codebooks, codebook_size]`, accumulated over a run."""

    counts: np.ndarray

    @classmethod
    def empty(cls, n_codebooks: int, codebook_size: int) -> CodebookHistogram:
        """All-zero counts for `n_codebooks` codebooks of `codebook_size` codes."""
        return cls(np.zeros((n_codebooks, codebook_size), dtype=np.int64))

    def add(self, codes: np.ndarray) -> None:
        """Count `codes` `[n_codebooks, n_frames]`."""
        for book, row in enumerate(codes):
            self.counts[book] += np.bincount(row, minlength=self.counts.shape[1])

    def merge(self, other: CodebookHistogram) -> None:
        """Add `other`'s counts (same shape) to these, in place."""
        self.counts += other.counts

    def to_dict(self) -> dict:
        """Sparse form: per codebook, the used codes and their counts."""
        books = []
        for row in self.counts:
            used = np.flatnonzero(row)
            books.append({"codes": used.tolist(), "counts": row[used].tolist()})
        return {"codebook_size": int(self.counts.shape[1]), "codebooks": books}

    @classmethod
    def from_dict(cls, data: dict) -> CodebookHistogram:
        """The inverse of `to_dict`."""
        books = data["codebooks"]
        counts = np.zeros((len(books), data["codebook_size"]), dtype=np.int64)
        for index, book in enumerate(books):
            counts[index, book["codes"]] = book["counts"]
        return cls(counts)


def codebook_report(histogram: CodebookHistogram, token_rate: float) -> dict:
    """Per-codebook usage, entropy (bits), efficiency, and the effective bitrate.

    Args:
        histogram: The run's code counts.
        token_rate: Frames per second, to turn bits per frame into bits per second.

    Returns:
        The `codebook_stats.json` content (schemas/codebook_stats.py), with its version.
    """
    size = histogram.counts.shape[1]
    capacity = float(np.log2(size))
    books = []
    for index, row in enumerate(histogram.counts):
        total = int(row.sum())
        p = row[row > 0] / max(total, 1)
        entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
        books.append(
            {
                "codebook": index,
                "tokens": total,
                "codes_used": int((row > 0).sum()),
                "usage": float((row > 0).mean()),
                "entropy_bits": entropy,
                "efficiency": entropy / capacity if capacity else 0.0,
            }
        )
    return {
        "version": CODEBOOK_STATS_VERSION,
        "codebook_size": size,
        "token_rate": token_rate,
        "nominal_bitrate_bps": token_rate * capacity * len(books),
        "entropy_bitrate_bps": token_rate * sum(b["entropy_bits"] for b in books),
        "codebooks": books,
    }


def plot_codebook_usage(histogram: CodebookHistogram, report: dict) -> bytes:
    """PNG: per codebook, code frequencies sorted from most to least used (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_books = histogram.counts.shape[0]
    figure, axes = plt.subplots(n_books, 1, figsize=(8, 2.6 * n_books), squeeze=False)
    for index, axis in enumerate(axes[:, 0]):
        row = np.sort(histogram.counts[index])[::-1]
        total = max(int(row.sum()), 1)
        axis.semilogy(np.arange(1, len(row) + 1), np.maximum(row / total, 1e-12), lw=1)
        axis.axhline(1 / len(row), color="grey", ls="--", lw=0.8, label="uniform")
        book = report["codebooks"][index]
        axis.set_title(
            f"codebook {index}: {book['usage']:.1%} of codes used, "
            f"efficiency {book['efficiency']:.1%} ({book['entropy_bits']:.2f} bits)"
        )
        axis.set_xlabel("code rank")
        axis.set_ylabel("frequency")
        axis.set_ylim(bottom=1e-7)
        axis.legend(loc="upper right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()
