"""Drop songs whose stereo is not stereo: mono dressed as stereo, polarity, a dead channel.

Identical channels correlate at 1.0, a channel with inverted polarity near -1.0, and a dead
channel shows as a channel balance of tens of dB.
"""

from __future__ import annotations

from pipeline.quality.filters.base import Bound


def max_stereo_correlation(correlation: float) -> Bound:
    """Drops a song whose channels correlate above `correlation` (mono as stereo)."""
    return Bound("max_stereo_correlation", "song", "stereo_correlation", correlation, lower=False)


def min_stereo_correlation(correlation: float) -> Bound:
    """Drops a song whose channels correlate below `correlation` (inverted polarity)."""
    return Bound("min_stereo_correlation", "song", "stereo_correlation", correlation, lower=True)


def max_channel_balance(db: float) -> Bound:
    """Drops a song whose channels differ in energy by more than `db` (a dead channel)."""
    return Bound("max_channel_balance", "song", "channel_balance_db", db, lower=False,
                 unit=" dB", magnitude=True)  # fmt: skip
