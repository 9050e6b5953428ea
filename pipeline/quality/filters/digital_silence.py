"""Drop segments that are nothing but digital zeros (on by default).

A stretch of exact zeros teaches a language model nothing and is never music: a gap between
tracks, a failed rip. Songs made only of such segments are dropped with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.quality.filters.base import Drop, Level, Measures


@dataclass(frozen=True)
class DigitalSilence:
    """Drops a segment whose every 100 ms frame is exact zeros."""

    name: str = "digital_silence"
    level: Level = "segment"

    def check(self, measures: Measures) -> Drop | None:
        """The drop, or None to keep."""
        share = measures.get("digital_silence")
        if share is None or share < 1.0:
            return None
        return Drop(self.name, "digital_silence", share, "the segment is digital silence")
