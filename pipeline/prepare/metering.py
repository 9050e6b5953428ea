"""Quality measures of a song, taken while prepare decodes it.

Clipping is counted on the source samples (resampling smears the flat runs that give it
away); everything else is measured on the 48 kHz stereo stream, one segment window at a
time, so each segment's measures come from exactly its samples and the song's from its
segments' statistics combined. Windows run back to back from the song's start, as
`plan_segments` cuts them; one window's copy is the only audio held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.prepare.audio import DecodeError
from pipeline.prepare.dsp import TARGET_RATE
from pipeline.prepare.segment import SegmentSpan
from pipeline.quality.clipping import ClippingCounter
from pipeline.quality.measures import AudioStats, NotFinite, analyse, combine, measures

Quality = dict[str, float | None]


@dataclass(frozen=True)
class SongQuality:
    """The measures of each planned segment (by span index) and of the song over them."""

    segments: dict[int, Quality]
    song: Quality


class SongMeter:
    """Feeds on a song's source blocks and its 48 kHz blocks as they stream past."""

    def __init__(self, source_rate: int, source_channels: int, window_frames: int) -> None:
        self._clipping = ClippingCounter(source_rate, source_channels)
        self._window = np.empty((window_frames, 2), dtype=np.float32)
        self._filled = 0
        self._windows: list[AudioStats] = []

    def source(self, blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Pass the source blocks through, counting clipped samples."""
        for block in blocks:
            self._clipping.feed(block)
            yield block

    def resampled(self, block: np.ndarray) -> None:
        """Take the next 48 kHz stereo block: each full window is analysed, then reused.

        Raises:
            DecodeError: if a window holds NaN or infinity.
        """
        while len(block):
            room = len(self._window) - self._filled
            taken = block[:room]
            self._window[self._filled : self._filled + len(taken)] = taken
            self._filled += len(taken)
            block = block[room:]
            if self._filled == len(self._window):
                self._analyse(self._window)
                self._filled = 0

    def close(self) -> None:
        """Analyse the last, partial window: the stream has ended (raises as `resampled`)."""
        if self._filled:
            self._analyse(self._window[: self._filled])
            self._filled = 0

    @property
    def peak(self) -> float:
        """The largest |sample| of the 48 kHz stream so far (of its analysed windows)."""
        return max((stats.sample_peak for stats in self._windows), default=0.0)

    def _analyse(self, window: np.ndarray) -> None:
        try:
            self._windows.append(analyse(window))
        except NotFinite:
            raise DecodeError("corrupt: decoded samples contain NaN or infinity") from None

    def finish(self, spans: list[SegmentSpan]) -> SongQuality:
        """The measures of the planned `spans` of the closed stream (windows the plan
        dropped are left out)."""
        segments: dict[int, Quality] = {}
        for span in spans:
            start_s = span.start / TARGET_RATE
            end_s = (span.start + span.frames) / TARGET_RATE
            segments[span.index] = self._quality(
                self._windows[span.index], self._clipping.clipped_share(start_s, end_s)
            )
        if not spans:
            return SongQuality(segments, {})
        end_s = (spans[-1].start + spans[-1].frames) / TARGET_RATE
        song = combine([self._windows[span.index] for span in spans])
        return SongQuality(segments, self._quality(song, self._clipping.clipped_share(0.0, end_s)))

    @staticmethod
    def _quality(stats: AudioStats, clipping: float) -> Quality:
        return {**measures(stats).to_dict(), "clipping": clipping}
