"""Drop songs too quiet or too loud (integrated loudness, ITU-R BS.1770, LUFS)."""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def min_loudness(lufs: float) -> Bound:
    """Drops a song quieter than `lufs`."""
    return Bound("min_loudness", "song", "loudness_lufs", lufs, lower=True, unit=" LUFS")


def max_loudness(lufs: float) -> Bound:
    """Drops a song louder than `lufs`."""
    return Bound("max_loudness", "song", "loudness_lufs", lufs, lower=False, unit=" LUFS")
