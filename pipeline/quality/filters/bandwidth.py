"""Drop songs with too little bandwidth: a low-bitrate lossy source dressed as 48 kHz."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def min_bandwidth(hz: float) -> Bound:
    """Drops a song whose effective bandwidth is below `hz`."""
    return Bound("min_bandwidth", "song", "bandwidth_hz", hz, lower=True, unit=" Hz")
