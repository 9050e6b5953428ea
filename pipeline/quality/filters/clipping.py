"""Drop clipped songs: the share of source samples in runs at full scale."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def max_clipping(share: float) -> Bound:
    """Drops a song whose clipped share of samples is above `share`."""
    return Bound("max_clipping", "song", "clipping", share, lower=False)
