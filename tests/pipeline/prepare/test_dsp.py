"""Downmix weights, streaming resampling to 48 kHz, and float -> PCM16 conversion."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from pipeline.prepare.dsp import (
    TARGET_RATE,
    downmix_matrix,
    resampled_length,
    stereo_48k,
    to_pcm16,
    to_stereo,
)
from tests.pipeline.helpers import snr_db

C = 0.7071  # ITU-R BS.775 centre / surround weight before normalisation.


def _blocks(audio: np.ndarray, size: int):
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
def test_downmix_weights_are_non_negative_and_sum_to_one_per_output(channels):
    weights = downmix_matrix(channels)
    assert weights.shape == (channels, 2)
    assert (weights >= 0).all()
    if channels == 1:
        np.testing.assert_array_equal(weights, [[1.0, 1.0]])  # Mono is duplicated.
    else:
        np.testing.assert_allclose(weights.sum(axis=0), [1.0, 1.0], atol=1e-6)
    # Every channel but the LFE (index 3 of 5.1 and 7.1) reaches the output.
    reaching = weights.sum(axis=1) > 0
    lfe = [3] if channels in (6, 8) else []
    assert np.flatnonzero(~reaching).tolist() == lfe


@pytest.mark.parametrize(
    ("channels", "left"),
    [
        (3, [1, 0, C]),  # L R C
        (4, [1, 0, C, 0]),  # L R Ls Rs
        (5, [1, 0, C, C, 0]),  # L R C Ls Rs
        (6, [1, 0, C, 0, C, 0]),  # 5.1: L R C LFE Ls Rs
        (8, [1, 0, C, 0, C, 0, C, 0]),  # 7.1: L R C LFE Lb Rb Ls Rs
    ],
)
def test_known_layouts_use_itu_weights_with_lfe_dropped(channels, left):
    weights = downmix_matrix(channels)
    expected_left = np.asarray(left) / np.sum(left)
    np.testing.assert_allclose(weights[:, 0], expected_left, atol=1e-6)
    # The right output mirrors the left: L<->R and Ls<->Rs swap, the centre is shared.
    swap = {3: [1, 0, 2], 4: [1, 0, 3, 2], 5: [1, 0, 2, 4, 3], 6: [1, 0, 2, 3, 5, 4]}
    swap[8] = [1, 0, 2, 3, 5, 4, 7, 6]
    np.testing.assert_allclose(weights[swap[channels], 1], expected_left, atol=1e-6)
    if channels in (6, 8):
        np.testing.assert_array_equal(weights[3], [0.0, 0.0])  # LFE


@pytest.mark.parametrize("channels", [7, 9])
def test_unknown_layouts_alternate_channels_left_and_right(channels):
    weights = downmix_matrix(channels)
    left = np.zeros(channels)
    left[0::2] = 1 / len(range(0, channels, 2))
    right = np.zeros(channels)
    right[1::2] = 1 / len(range(1, channels, 2))
    np.testing.assert_allclose(weights[:, 0], left, atol=1e-6)
    np.testing.assert_allclose(weights[:, 1], right, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_downmix_never_raises_the_peak(channels):
    rng = np.random.default_rng(channels)
    noise = rng.uniform(-1, 1, size=(4096, channels)).astype(np.float32)
    full_scale = np.ones((16, channels), np.float32)  # Every channel in phase at the peak.
    for block in (noise, full_scale, -full_scale):
        stereo = to_stereo(block)
        assert stereo.shape == (len(block), 2)
        assert stereo.dtype == np.float32
        assert np.abs(stereo).max() <= np.abs(block).max() + 1e-6


def test_mono_is_duplicated_and_stereo_passes_through():
    mono = np.linspace(-1, 1, 100, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(to_stereo(mono), np.hstack([mono, mono]))
    stereo = np.random.default_rng(0).uniform(-1, 1, (100, 2)).astype(np.float32)
    np.testing.assert_array_equal(to_stereo(stereo), stereo)


def test_downmix_of_surround_matches_the_weighted_sum():
    block = np.random.default_rng(1).uniform(-1, 1, (50, 6)).astype(np.float32)
    left = (block[:, 0] + C * block[:, 2] + C * block[:, 4]) / (1 + 2 * C)
    right = (block[:, 1] + C * block[:, 2] + C * block[:, 5]) / (1 + 2 * C)
    np.testing.assert_allclose(to_stereo(block), np.stack([left, right], 1), atol=1e-5)


@pytest.mark.parametrize(
    ("frames", "rate", "expected"),
    [(44_100, 44_100, 48_000), (1, 44_100, 1), (8_000, 8_000, 48_000), (192_000, 192_000, 48_000)],
)
def test_resampled_length_is_exact_and_rounded(frames, rate, expected):
    assert resampled_length(frames, rate) == expected


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 32_000, 44_100, 88_200, 96_000, 192_000])
@pytest.mark.parametrize("block", [997, 48_000])
def test_streaming_resample_has_exact_length_and_matches_one_shot_soxr(rate, block):
    seconds = 1.3
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1500 * t + 1)
    audio = np.stack([tone, -tone], axis=1).astype(np.float32)
    out = np.concatenate(list(stereo_48k(_blocks(audio, block), rate)))
    assert out.shape == (resampled_length(len(audio), rate), 2)
    assert out.dtype == np.float32
    reference = soxr.resample(audio, rate, TARGET_RATE, quality="HQ")
    assert len(reference) == len(out)
    assert snr_db(reference, out) > 80


def test_48k_input_is_not_resampled():
    audio = np.random.default_rng(2).uniform(-1, 1, (10_000, 2)).astype(np.float32)
    out = np.concatenate(list(stereo_48k(_blocks(audio, 3000), TARGET_RATE)))
    np.testing.assert_array_equal(out, audio)


def test_pcm16_uses_the_1_over_32768_convention_and_clips():
    audio = np.array([[0.0, 0.5], [-1.0, 1.0], [1.5, -1.5], [1 / 32768, -0.25]], np.float32)
    np.testing.assert_array_equal(
        to_pcm16(audio), [[0, 16384], [-32768, 32767], [32767, -32768], [1, -8192]]
    )
    assert to_pcm16(audio).dtype == np.int16
