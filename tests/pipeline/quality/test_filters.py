"""Quality filters: each drops what lies beyond its threshold, names itself and the value,
and lets undefined measures through; the config builds exactly the filters it sets."""

from __future__ import annotations

import json
import re

import pytest

from core.errors import InvalidSetting
from pipeline.quality.filters.config import FilterConfig, read_filter_file, threshold_names

SONG = {
    "loudness_lufs": -14.0,
    "true_peak_dbtp": 0.4,
    "clipping": 0.02,
    "bandwidth_hz": 16_000.0,
    "stereo_correlation": 1.0,
    "channel_balance_db": -45.0,
    "dc_offset": -0.08,
}


def _drops(config: FilterConfig, level: str, measures: dict) -> dict[str, float | None]:
    found = [f.check(measures) for f in config.filters() if f.level == level]
    return {d.rule: d.value for d in found if d is not None}


def test_only_digital_silence_is_dropped_by_default():
    config = FilterConfig()
    assert [f.name for f in config.filters()] == ["digital_silence"]
    assert _drops(config, "segment", {"digital_silence": 1.0}) == {"digital_silence": 1.0}
    assert _drops(config, "segment", {"digital_silence": 0.99}) == {}
    assert _drops(config, "song", SONG) == {}
    assert FilterConfig(drop_digital_silence=False).filters() == []


def test_each_threshold_drops_beyond_it_and_names_the_value():
    config = FilterConfig(
        min_loudness_lufs=-10, max_true_peak_dbtp=0.0, max_clipping=0.01,
        min_bandwidth_hz=17_000, max_stereo_correlation=0.999, max_channel_balance_db=30,
        max_dc_offset=0.05,
    )  # fmt: skip
    assert _drops(config, "song", SONG) == {
        "min_loudness": -14.0,
        "max_true_peak": 0.4,
        "max_clipping": 0.02,
        "min_bandwidth": 16_000.0,
        "max_stereo_correlation": 1.0,
        "max_channel_balance": -45.0,  # The measured value, signed; compared as |value|.
        "max_dc_offset": -0.08,
    }
    relaxed = FilterConfig(min_loudness_lufs=-20, max_loudness_lufs=-5, min_bandwidth_hz=15_000,
                           min_stereo_correlation=-0.5, max_channel_balance_db=50)  # fmt: skip
    assert _drops(relaxed, "song", SONG) == {}


def test_reason_says_what_was_measured_against_what():
    drop = FilterConfig(min_bandwidth_hz=17_000).filters()[1].check(SONG)
    assert drop is not None
    assert drop.reason == "bandwidth_hz 1.6e+04 Hz is below the minimum 1.7e+04 Hz"


def test_undefined_measure_passes_a_bound():
    config = FilterConfig(min_loudness_lufs=-30, max_stereo_correlation=0.999)
    assert _drops(config, "song", {"loudness_lufs": None, "stereo_correlation": None}) == {}


def test_silence_is_a_segment_filter():
    config = FilterConfig(max_silence=0.5)
    assert _drops(config, "segment", {"silence": 0.6, "digital_silence": 0.0}) == {
        "max_silence": 0.6
    }
    assert _drops(config, "song", {"silence": 0.6}) == {}


def test_shares_outside_zero_to_one_are_refused():
    with pytest.raises(InvalidSetting, match="max_clipping"):
        FilterConfig(max_clipping=5)


def test_config_file_json_and_toml(tmp_path):
    (tmp_path / "f.json").write_text(json.dumps({"min_bandwidth_hz": 17000, "max_silence": 0.4}))
    assert read_filter_file(str(tmp_path / "f.json")) == {
        "min_bandwidth_hz": 17000,
        "max_silence": 0.4,
    }
    (tmp_path / "f.toml").write_text("[filters]\nmax_clipping = 0.01\n")
    assert read_filter_file(str(tmp_path / "f.toml")) == {"max_clipping": 0.01}
    (tmp_path / "bad.json").write_text(json.dumps({"max_loudnes": -5}))
    with pytest.raises(InvalidSetting, match=re.escape("bad.json: unknown keys ['max_loudnes']")):
        read_filter_file(str(tmp_path / "bad.json"))
    with pytest.raises(InvalidSetting, match=re.escape("missing.toml")):
        read_filter_file(str(tmp_path / "missing.toml"))


def test_every_threshold_builds_a_filter():
    config = FilterConfig(**{name: 0.5 for name in threshold_names()})
    assert len(config.filters()) == len(threshold_names()) + 1
