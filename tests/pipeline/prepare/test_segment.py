"""Segment planning: full windows back to back, then the tail per policy."""

from __future__ import annotations

import math

import pytest

from pipeline.prepare.segment import SegmentConfig, plan_segments

RATE = 48_000


def test_default_segment_is_35_84_seconds_keeping_tails_of_10_seconds():
    config = SegmentConfig()
    assert config.segment_frames == 1_720_320  # 35.84 s * 48 kHz = 896 tokens at 25 Hz.
    assert (config.tail_policy, config.min_tail_frames) == ("keep", 480_000)


@pytest.mark.parametrize("policy", ["keep", "pad", "drop"])
@pytest.mark.parametrize("seconds", [5.0, 35.84, 40.0, 45.84, 46.0, 80.0, 107.52, 110.0, 200.3])
def test_segment_count_is_full_windows_plus_tail_per_policy(policy, seconds):
    config = SegmentConfig(tail_policy=policy, min_tail_seconds=10.0)
    frames = round(seconds * RATE)
    spans = plan_segments(frames, config)
    full = frames // config.segment_frames
    tail = frames - full * config.segment_frames
    keeps_tail = policy != "drop" and tail > 0 and tail >= config.min_tail_frames
    assert len(spans) == full + keeps_tail
    assert full == math.floor(seconds / 35.84 + 1e-9)
    for i, span in enumerate(spans[:full]):
        assert (span.index, span.start, span.frames) == (i, i * config.segment_frames, 1_720_320)
        assert span.stored_frames == span.frames
    if keeps_tail:
        last = spans[-1]
        assert (last.index, last.start, last.frames) == (full, full * 1_720_320, tail)
        assert last.stored_frames == (1_720_320 if policy == "pad" else tail)


def test_windows_tile_the_song_without_gaps_or_overlap():
    config = SegmentConfig(segment_seconds=2.0, tail_policy="keep", min_tail_seconds=0.0)
    spans = plan_segments(7 * RATE + 5, config)
    assert [s.start for s in spans] == [0, 2 * RATE, 4 * RATE, 6 * RATE]
    assert sum(s.frames for s in spans) == 7 * RATE + 5


def test_min_tail_zero_keeps_any_nonempty_tail_and_exact_multiples_have_no_tail():
    config = SegmentConfig(segment_seconds=1.0, tail_policy="keep", min_tail_seconds=0.0)
    assert len(plan_segments(3 * RATE + 1, config)) == 4
    assert len(plan_segments(3 * RATE, config)) == 3


def test_song_shorter_than_one_segment_keeps_a_long_enough_tail_only():
    keep = SegmentConfig(segment_seconds=10.0, tail_policy="keep", min_tail_seconds=4.0)
    assert [s.frames for s in plan_segments(5 * RATE, keep)] == [5 * RATE]
    assert plan_segments(3 * RATE, keep) == []
    drop = SegmentConfig(segment_seconds=10.0, tail_policy="drop", min_tail_seconds=0.0)
    assert plan_segments(5 * RATE, drop) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tail_policy": "trim"},
        {"segment_seconds": 0},
        {"segment_seconds": -1},
        {"min_tail_seconds": -0.5},
    ],
)
def test_invalid_segment_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SegmentConfig(**kwargs)
