"""Drop segments that are mostly silent (below -60 dBFS per 100 ms frame)."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def max_silence(share: float) -> Bound:
    """Drops a segment whose share of silent 100 ms frames is above `share`."""
    return Bound("max_silence", "segment", "silence", share, lower=False)
