"""Drop songs whose true peak (4x oversampled) is above a ceiling, in dBTP."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def max_true_peak(dbtp: float) -> Bound:
    """Drops a song whose true peak is above `dbtp`."""
    return Bound("max_true_peak", "song", "true_peak_dbtp", dbtp, lower=False, unit=" dBTP")
