"""Which quality filters a run applies: thresholds from flags or a config file.

By default only digital silence is dropped: every other measure is recorded and kept until
its threshold is set. A config file (JSON or TOML) holds the same keys as `FilterConfig`;
flags given on the command line override it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields

from core.config import JsonConfig
from core.errors import InvalidSetting
from pipeline.quality.filters import (
    bandwidth,
    clipping,
    dc_offset,
    loudness,
    silence,
    stereo,
    true_peak,
)
from pipeline.quality.filters.base import QualityFilter
from pipeline.quality.filters.digital_silence import DigitalSilence


@dataclass(frozen=True)
class FilterConfig(JsonConfig):
    """Thresholds; None leaves a measure unfiltered. Shares are 0..1."""

    drop_digital_silence: bool = True  # Segments of exact zeros.
    max_silence: float | None = None  # Segment: share of 100 ms frames below -60 dBFS.
    min_loudness_lufs: float | None = None  # Song.
    max_loudness_lufs: float | None = None  # Song.
    max_true_peak_dbtp: float | None = None  # Song.
    max_clipping: float | None = None  # Song: share of samples in full-scale runs.
    min_bandwidth_hz: float | None = None  # Song: e.g. 17000 drops 128 kbit/s mp3 sources.
    max_stereo_correlation: float | None = None  # Song: e.g. 0.999 drops mono as stereo.
    min_stereo_correlation: float | None = None  # Song: e.g. -0.5 drops inverted polarity.
    max_channel_balance_db: float | None = None  # Song: e.g. 30 drops a dead channel.
    max_dc_offset: float | None = None  # Song.

    def __post_init__(self) -> None:
        for name in ("max_silence", "max_clipping"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidSetting(f"{name} is a share between 0 and 1, not {value}")

    def filters(self) -> list[QualityFilter]:
        """The filters these thresholds switch on, in a fixed order."""
        chosen: list[QualityFilter] = [DigitalSilence()] if self.drop_digital_silence else []
        builders = (
            (self.max_silence, silence.max_silence),
            (self.min_loudness_lufs, loudness.min_loudness),
            (self.max_loudness_lufs, loudness.max_loudness),
            (self.max_true_peak_dbtp, true_peak.max_true_peak),
            (self.max_clipping, clipping.max_clipping),
            (self.min_bandwidth_hz, bandwidth.min_bandwidth),
            (self.max_stereo_correlation, stereo.max_stereo_correlation),
            (self.min_stereo_correlation, stereo.min_stereo_correlation),
            (self.max_channel_balance_db, stereo.max_channel_balance),
            (self.max_dc_offset, dc_offset.max_dc_offset),
        )
        chosen += [build(threshold) for threshold, build in builders if threshold is not None]
        return chosen


def threshold_names() -> list[str]:
    """The config keys that take a number (each is also a `--flag` of jobs.prepare)."""
    return [f.name for f in fields(FilterConfig) if f.name != "drop_digital_silence"]


def read_filter_file(path: str) -> dict[str, object]:
    """The thresholds a JSON or TOML file sets (its top level, or its `[filters]` table).

    Raises:
        InvalidSetting: naming the file, when it cannot be read or has unknown keys.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle) if path.endswith(".toml") else json.load(handle)
    except (OSError, ValueError) as error:
        raise InvalidSetting(f"filter config {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("filters"), dict):
        data = data["filters"]
    known = {f.name for f in fields(FilterConfig)}
    if not isinstance(data, dict) or set(data) - known:
        unknown = sorted(set(data) - known) if isinstance(data, dict) else data
        raise InvalidSetting(
            f"filter config {path}: unknown keys {unknown}; known: {sorted(known)}"
        )
    return data
