"""Clipping: the share of samples in flat runs at full scale, counted on the decoded source.

A clipped sample is part of a run of at least MIN_RUN consecutive samples of one channel, all
exactly equal, with |value| >= FULL_SCALE. It is measured at the source's own rate, before
resampling, which turns a flat run into ripples that no longer look clipped. The counter
streams: it takes the decoder's blocks in order, of any size, and runs may span blocks (the
last MIN_RUN - 1 frames of each block are carried over).

Clipped samples are counted per tenth of a second of source time, so the share of a segment,
or of the whole song, can be asked for once the song is decoded. Only full-scale samples
are looked at individually; a block without any costs two reductions.
"""

from __future__ import annotations

import math

import numpy as np

FULL_SCALE = 1.0 - 2.0**-14  # |x| at or above is full scale: 16-bit +32767 reads 0.99997.
MIN_RUN = 3  # Consecutive identical full-scale samples in one channel.

_TENTHS_PER_SECOND = 10
_CARRIED = MIN_RUN - 1  # Frames of one block a run may continue from into the next.


class ClippingCounter:
    """Counts clipped samples of a stream of `[frames, channels]` float32 source blocks."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._rate = sample_rate
        self._channels = channels
        self._frames = 0  # Fed so far.
        self._clipped = np.zeros(0, dtype=np.int64)  # Per tenth of a second, all channels.
        # The last _CARRIED frames fed, and which of their samples are already counted.
        self._carried = np.zeros((0, channels), dtype=np.float32)
        self._counted = np.zeros((0, channels), dtype=bool)

    def feed(self, block: np.ndarray) -> None:
        """Count the next block of source frames."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self._channels:
            raise ValueError(f"expected [frames, {self._channels}] audio, got {block.shape}")
        if not len(block):
            return
        counted = np.zeros((min(len(block), _CARRIED), self._channels), dtype=bool)
        counted = np.concatenate([self._counted, counted])[-_CARRIED:]
        if block.max() >= FULL_SCALE or block.min() <= -FULL_SCALE:
            self._count(block, counted)
        self._carried = np.concatenate([self._carried, block[-_CARRIED:]])[-_CARRIED:]
        self._counted = counted
        self._frames += len(block)

    def _count(self, block: np.ndarray, counted: np.ndarray) -> None:
        """Count the block's newly clipped samples; mark those among the frames carried on."""
        carried = len(self._carried)
        tail_start = len(block) - len(counted)  # Row of the first frame carried on.
        new_rows = []
        for channel in range(self._channels):
            # Rows relative to the block's start; the carried frames are -carried .. -1.
            before = np.flatnonzero(np.abs(self._carried[:, channel]) >= FULL_SCALE)
            rows = np.flatnonzero(np.abs(block[:, channel]) >= FULL_SCALE)
            values = np.concatenate([self._carried[before, channel], block[rows, channel]])
            rows = np.concatenate([before - carried, rows])
            clipped = _in_runs(rows, values)
            already = np.zeros(len(rows), dtype=bool)
            already[: len(before)] = self._counted[before, channel]
            new_rows.append(rows[clipped & ~already])
            kept = rows[clipped] - tail_start
            counted[kept[kept >= 0], channel] = True
        rows = np.concatenate(new_rows)
        if len(rows):
            counts = np.bincount((self._frames + rows) * _TENTHS_PER_SECOND // self._rate)
            if len(counts) > len(self._clipped):
                self._clipped = np.pad(self._clipped, (0, len(counts) - len(self._clipped)))
            self._clipped[: len(counts)] += counts

    def clipped_share(self, start_s: float, end_s: float) -> float:
        """Share of the samples (all channels) in [start_s, end_s) of source time that are
        clipped, by whole tenths of a second: a tenth counts towards the window holding its
        start. 0.0 for a window without samples."""
        first, stop = (math.ceil(round(s * _TENTHS_PER_SECOND, 6)) for s in (start_s, end_s))
        first, stop = max(first, 0), max(stop, first)
        frames = min(self._tenth_start(stop), self._frames) - min(
            self._tenth_start(first), self._frames
        )
        return self._share(int(self._clipped[first:stop].sum()), frames)

    @property
    def song_share(self) -> float:
        """Share of all samples fed so far that are clipped."""
        return self._share(int(self._clipped.sum()), self._frames)

    def _tenth_start(self, tenth: int) -> int:
        """The first frame of a tenth of a second: the least g with 10 g // rate == tenth."""
        return -(-tenth * self._rate // _TENTHS_PER_SECOND)

    def _share(self, clipped: int, frames: int) -> float:
        return clipped / (frames * self._channels) if frames > 0 else 0.0


def _in_runs(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which full-scale samples of one channel (increasing `rows`, their `values`) lie in a
    run of MIN_RUN or more consecutive rows of one value."""
    clipped = np.zeros(len(rows), dtype=bool)
    windows = len(rows) - MIN_RUN + 1
    if windows <= 0:
        return clipped
    # Window j (samples j .. j + MIN_RUN - 1) is a run if its rows are consecutive (they
    # increase, so the span says it) and each value equals the next.
    run = rows[MIN_RUN - 1 :] - rows[:windows] == MIN_RUN - 1
    same = values[1:] == values[:-1]
    for offset in range(MIN_RUN - 1):
        run &= same[offset : offset + windows]
    for offset in range(MIN_RUN):
        clipped[offset : offset + windows] |= run
    return clipped
