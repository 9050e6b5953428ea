"""Cutting a song into fixed windows, with an explicit policy for the final partial window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import JsonConfig
from core.errors import InvalidSetting
from pipeline.prepare.dsp import TARGET_RATE

TailPolicy = Literal["keep", "pad", "drop"]
TAIL_POLICIES: tuple[TailPolicy, ...] = ("keep", "pad", "drop")


@dataclass(frozen=True)
class SegmentConfig(JsonConfig):
    """Window length and what to do with the remainder.

    The default keeps a tail of at least `min_tail_seconds` as a short segment: it is real
    music (often the song's ending) and the tokenizer handles short segments without padding,
    whereas padding would teach a language model silence that is not in the song. Shorter
    tails carry too little context to be worth a sample and are dropped.
    """

    segment_seconds: float = 35.84  # 896 tokens at 25 Hz.
    tail_policy: TailPolicy = "keep"
    min_tail_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.tail_policy not in TAIL_POLICIES:
            raise InvalidSetting(
                f"tail_policy must be one of {TAIL_POLICIES}, not {self.tail_policy!r}"
            )
        if self.segment_seconds <= 0 or self.min_tail_seconds < 0:
            raise InvalidSetting("segment_seconds must be > 0 and min_tail_seconds >= 0")

    @property
    def segment_frames(self) -> int:
        """One segment's length in 48 kHz frames."""
        return round(self.segment_seconds * TARGET_RATE)

    @property
    def min_tail_frames(self) -> int:
        """The shortest tail kept, in 48 kHz frames."""
        return round(self.min_tail_seconds * TARGET_RATE)


@dataclass(frozen=True)
class SegmentSpan:
    """Frames [start, start + frames) of the 48 kHz song, zero-padded to `stored_frames`."""

    index: int
    start: int
    frames: int
    stored_frames: int


def plan_segments(total_frames: int, config: SegmentConfig) -> list[SegmentSpan]:
    """Full windows back to back, then the tail per policy."""
    size = config.segment_frames
    full, tail = divmod(total_frames, size)
    spans = [SegmentSpan(i, i * size, size, size) for i in range(full)]
    if tail and config.tail_policy != "drop" and tail >= config.min_tail_frames:
        stored = size if config.tail_policy == "pad" else tail
        spans.append(SegmentSpan(full, full * size, tail, stored))
    return spans
