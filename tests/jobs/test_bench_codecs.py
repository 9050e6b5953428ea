"""`python -m jobs.bench codecs`: every codec encodes the same segments, figures per codec."""

from __future__ import annotations

import json

import pytest

from jobs import bench
from jobs.benchmarks.codecs import SEGMENT_SECONDS, segments


def test_segments_are_35_84_s_of_48khz_stereo_within_full_scale() -> None:
    audio = segments(2)
    assert [tuple(a.shape) for a in audio] == [(2, 1_720_320)] * 2
    assert all(float(a.abs().max()) <= 1.0 for a in audio)
    assert not audio[0].equal(audio[1])


def test_figures_per_codec(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["codecs", "--codec", "mucodec", "--segments", "1", "--batch-size", "1"])
    result = json.loads(capsys.readouterr().out)

    figures = result["codecs"]["mucodec"]
    assert figures["preset"] == "tiny" and figures["frames_per_segment"] == 896
    assert figures["x_real_time"] == pytest.approx(SEGMENT_SECONDS / figures["seconds"], rel=0.02)
    assert figures["bitrate_kbps"] == pytest.approx(0.25)
