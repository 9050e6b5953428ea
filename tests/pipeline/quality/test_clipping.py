"""Clipping: runs of identical full-scale samples, counted across blocks and per tenth."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from pipeline.quality.clipping import FULL_SCALE, MIN_RUN, ClippingCounter

RATE = 44_100


def _clipped_sine(seconds: float = 10.0) -> np.ndarray:
    """Sines at twice full scale, clipped to [-1, 1] and read back from 16-bit PCM."""
    t = np.arange(round(seconds * RATE)) / RATE
    left, right = 2 * np.sin(2 * np.pi * 440 * t), 2 * np.sin(2 * np.pi * 331 * t + 1)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.stack([left, right], axis=1), -1, 1), RATE, format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="float32")[0]


def _count(audio: np.ndarray, sizes: list[int] | None = None) -> ClippingCounter:
    counter = ClippingCounter(RATE, audio.shape[1])
    start = 0
    for size in sizes or [len(audio)]:
        counter.feed(audio[start : start + size])
        start += size
    counter.feed(audio[start:])
    return counter


def test_a_sine_at_twice_full_scale_is_clipped_two_thirds_of_the_time():
    # |2 sin| >= 1 for a third of each half period on either side of its peak: 2/3.
    assert _count(_clipped_sine()).song_share == pytest.approx(2 / 3, rel=0.01)


def test_any_block_sizes_give_the_same_counts():
    audio = _clipped_sine(3)
    whole = _count(audio)
    sizes = list(np.random.default_rng(0).choice([1, 2, 3, 5, 64, 1000, 4410], size=200))
    pieces = _count(audio, sizes)
    np.testing.assert_array_equal(pieces._clipped, whole._clipped)
    assert pieces.song_share == whole.song_share
    for start, end in [(0.0, 1.0), (0.5, 2.35), (2.0, 3.0)]:
        assert pieces.clipped_share(start, end) == whole.clipped_share(start, end)


def test_runs_crossing_blocks_count_once():
    run = np.full((5, 1), 1.0, dtype=np.float32)
    audio = np.concatenate([np.zeros((3, 1)), run, np.zeros((3, 1)), run[:2]]).astype(np.float32)
    for sizes in ([len(audio)], [1] * len(audio), [4, 1, 1, 2, 3, 2]):
        counter = ClippingCounter(RATE, 1)
        start = 0
        for size in sizes:
            counter.feed(audio[start : start + size])
            start += size
        assert counter.song_share == pytest.approx(5 / len(audio))  # The run of 2 is not.


def test_only_equal_full_scale_samples_in_runs_count():
    assert MIN_RUN == 3
    samples = [0.5, -1.0, -1.0, -1.0, 0.2, FULL_SCALE, FULL_SCALE, 0.99, 0.99, 0.99, 0.99]
    counter = ClippingCounter(RATE, 1)
    counter.feed(np.array(samples, dtype=np.float32)[:, None])
    assert counter.song_share == pytest.approx(3 / len(samples))


def test_an_unclipped_sine_has_no_clipping():
    t = np.arange(2 * RATE) / RATE
    sine = (0.99 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert _count(np.stack([sine, sine], axis=1)).song_share == 0.0


def test_float_samples_over_full_scale_are_not_clipped_unless_flat():
    t = np.arange(2 * RATE) / RATE
    hot = (1.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]  # Peaks above 1.
    assert _count(hot).song_share == 0.0
    flat = np.clip(hot, -1.2, 1.2)  # A float source clipped above full scale still is.
    assert _count(flat).song_share > 0.3


def test_shares_by_window_of_source_time():
    audio = np.zeros((5 * RATE, 2), dtype=np.float32)
    audio[2 * RATE : 2 * RATE + 441, 0] = 1.0  # 10 ms clipped in one channel, from 2.0 s.
    counter = _count(audio)
    assert counter.clipped_share(2.0, 3.0) == pytest.approx(441 / (2 * RATE))
    assert counter.clipped_share(2.0, 2.1) == pytest.approx(441 / (2 * RATE // 10))
    assert counter.clipped_share(0.0, 2.0) == 0.0
    assert counter.clipped_share(2.1, 5.0) == 0.0
    assert counter.clipped_share(1.95, 2.05) == pytest.approx(441 / (2 * RATE // 10))
    assert counter.clipped_share(6.0, 7.0) == 0.0  # Past the end: no samples.
    assert counter.song_share == pytest.approx(441 / (2 * 5 * RATE))


def test_a_tenth_counts_towards_the_window_holding_its_start():
    rate = 11_025  # A tenth is 1102.5 frames: tenths start at frames 0, 1103, 2205, ...
    audio = np.zeros((rate, 1), dtype=np.float32)
    audio[1100:1106, 0] = -1.0  # Frames 1100-1102 in tenth 0, 1103-1105 in tenth 1.
    counter = ClippingCounter(rate, 1)
    counter.feed(audio)
    assert counter.clipped_share(0.0, 0.1) == pytest.approx(3 / 1103)
    assert counter.clipped_share(0.1, 0.2) == pytest.approx(3 / 1102)


def test_multichannel_and_empty_blocks():
    audio = np.zeros((100, 6), dtype=np.float32)
    audio[10:20, 3] = 1.0
    counter = ClippingCounter(RATE, 6)
    counter.feed(audio[:0])
    counter.feed(audio)
    assert counter.song_share == pytest.approx(10 / 600)
    with pytest.raises(ValueError, match="frames, 6"):
        counter.feed(audio[:, :2])
