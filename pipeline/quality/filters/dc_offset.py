"""Drop songs with a DC offset above a bound (a faulty converter or a bad edit)."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def max_dc_offset(offset: float) -> Bound:
    """Drops a song whose larger channel mean is above `offset` (full scale 1.0)."""
    return Bound("max_dc_offset", "song", "dc_offset", offset, lower=False, magnitude=True)
