"""Quality measures against known answers, a time-domain BS.1770 meter and pyloudnorm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import soxr

from pipeline.quality.measures import (
    _HIGH_PASS,
    _HIGH_PASS_POLES,
    _SHELF,
    _SHELF_POLES,
    BANDWIDTH_DROP_DB,
    MEASURE_NAMES,
    RATE,
    AudioStats,
    Measures,
    analyse,
    combine,
    measures,
)
from pipeline.quality.true_peak import _BRANCHES as BRANCHES

SEGMENT = 1_720_320  # 35.84 s: not a whole number of 100 ms frames.


def _stereo(mono: np.ndarray) -> np.ndarray:
    return np.stack([mono, mono], axis=1).astype(np.float32)


def _sine(hz: float, peak: float, seconds: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return _stereo(peak * np.sin(2 * np.pi * hz * t + phase))


def _pink(seconds: float, peak: float, seed: int, lowest_hz: float = 20.0) -> np.ndarray:
    """Independent 1/f noise in each channel, nothing below `lowest_hz` (as in music)."""
    frames = round(seconds * RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal((frames, 2)), axis=0)
    freqs = np.fft.rfftfreq(frames, 1 / RATE)
    spectrum[freqs < lowest_hz] = 0
    spectrum[freqs >= lowest_hz] /= np.sqrt(freqs[freqs >= lowest_hz])[:, None]
    noise = np.fft.irfft(spectrum, frames, axis=0)
    return (noise * peak / np.abs(noise).max()).astype(np.float32)


def _drums(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts decaying in 30 ms, twice a second: transients with silence between."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((round(seconds * RATE), 2))
    for start in range(0, len(audio), RATE // 2):
        hit = rng.standard_normal((min(RATE // 4, len(audio) - start), 2))
        audio[start : start + len(hit)] = 0.5 * hit * np.exp(-np.arange(len(hit)) / 1440)[:, None]
    return audio.astype(np.float32)


def _bass_song(seconds: float, seed: int) -> np.ndarray:
    """Pink noise over a 55 Hz bass tone and 60 Hz kicks: steep K-weighting territory."""
    t = np.arange(round(seconds * RATE)) / RATE
    kick = np.sin(2 * np.pi * 60 * t) * np.exp(-(t % 0.5) / 0.03)
    bass = 0.3 * np.sin(2 * np.pi * 55 * t) + 0.3 * kick
    return (0.5 * _pink(seconds, 0.5, seed) + bass[:, None]).astype(np.float32)


def _gated_tones() -> np.ndarray:
    """10 s of tone, 10 s of silence, 10 s of a tone 20 dB down: the relative gate drops it."""
    silence = np.zeros((10 * RATE, 2), dtype=np.float32)
    return np.concatenate([_sine(1000, 0.5, 10), silence, _sine(500, 0.05, 10)])


def _time_domain_loudness(audio: np.ndarray) -> float:
    """BS.1770-4 with the running K-weighting IIR, blocks of 4 frames as `analyse` forms."""
    sos = np.array([[*_SHELF, *_SHELF_POLES], [*_HIGH_PASS, *_HIGH_PASS_POLES]])
    weighted = scipy.signal.sosfilt(sos, audio.astype(np.float64), axis=0)
    whole = len(weighted) // 4800
    frames = np.square(weighted[: whole * 4800]).reshape(whole, -1).sum(axis=1)
    blocks = np.convolve(frames, np.ones(4), mode="valid") / (4 * 4800)
    audible = blocks[blocks > 10 ** ((-70 + 0.691) / 10)]
    return -0.691 + 10 * np.log10(audible[audible > audible.mean() / 10].mean())


def _pyloudnorm(audio: np.ndarray) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64))


def _brute_true_peak(audio: np.ndarray) -> float:
    """Every point of the three between-sample branches, in float64."""
    peak = np.abs(audio).max()
    for channel in audio.T.astype(np.float64):
        for taps in BRANCHES.T.astype(np.float64):
            peak = max(peak, np.abs(np.convolve(channel, taps[::-1], mode="valid")).max())
    return float(peak)


def _measure(audio: np.ndarray) -> Measures:
    return measures(analyse(audio))


SIGNALS = {
    "sine": lambda: _sine(997, 0.3, 10),
    "pink": lambda: _pink(20, 0.8, seed=1),
    "gated": _gated_tones,
    "drums": lambda: _drums(20, seed=2),
    "bass": lambda: _bass_song(20, seed=3),
}


@pytest.mark.parametrize("level", [-23.0, -33.0])
def test_a_1khz_sine_reads_its_level_as_in_ebu_tech_3341(level):
    # Tech 3341 cases 1 and 2: a stereo 1 kHz sine at -23 (-33) dBFS reads -23 (-33) LUFS.
    loudness = _measure(_sine(1000, 10 ** (level / 20), 20)).loudness_lufs
    assert loudness == pytest.approx(level, abs=0.1)


@pytest.mark.parametrize("name", SIGNALS)
def test_loudness_agrees_with_the_time_domain_filter(name):
    # The kernel runs the same filter, four stretches side by side from 100 ms of warm-up:
    # the figures of one filter over the whole stretch.
    audio = SIGNALS[name]()
    loudness = _measure(audio).loudness_lufs
    assert loudness == pytest.approx(_time_domain_loudness(audio), abs=1e-6)


@pytest.mark.parametrize("hz", [25, 32, 45, 55, 65, 80, 150])
def test_loudness_of_low_tones_agrees_with_the_time_domain_filter(hz):
    # Where the high-pass is steep and its state lasts longest: the warm-up must carry it.
    audio = _sine(hz, 0.5, 10)
    assert _measure(audio).loudness_lufs == pytest.approx(_time_domain_loudness(audio), abs=1e-6)


@pytest.mark.parametrize("name", SIGNALS)
def test_loudness_agrees_with_pyloudnorm(name):
    # pyloudnorm designs its K-weighting from analogue parameters: ~0.04 LU from the tables.
    audio = SIGNALS[name]()
    assert _measure(audio).loudness_lufs == pytest.approx(_pyloudnorm(audio), abs=0.1)


def test_loudness_of_a_song_from_its_segments_agrees_with_pyloudnorm():
    # The drums are quiet here: loud, strictly periodic hits put blocks at the relative gate,
    # and the segments' block grids (40 ms off the song's) would flip them (0.12 LU).
    song = np.concatenate([_pink(30, 0.5, seed=5), _bass_song(30, seed=4), 0.3 * _drums(15, 6)])
    segments = [analyse(song[start : start + SEGMENT]) for start in range(0, len(song), SEGMENT)]
    assert len(segments) == 3
    loudness = measures(combine(segments)).loudness_lufs
    assert loudness == pytest.approx(_pyloudnorm(song), abs=0.1)


def test_silence_is_gated_out_and_has_no_peak():
    result = _measure(np.zeros((3 * RATE, 2), dtype=np.float32))
    assert result.loudness_lufs is None
    assert result.true_peak_dbtp is None and result.sample_peak_dbfs is None
    assert result.silence == 1.0 and result.digital_silence == 1.0
    assert result.bandwidth_hz == 0.0
    assert result.stereo_correlation is None and result.channel_balance_db is None
    assert result.dc_offset == 0.0


def test_silence_shares_count_frames_of_zeros_and_of_quiet_noise():
    rng = np.random.default_rng(7)
    zeros = np.zeros((3 * RATE, 2), dtype=np.float32)
    quiet = (rng.standard_normal((2 * RATE, 2)) * 1e-4).astype(np.float32)  # -80 dBFS RMS.
    audio = np.concatenate([zeros, _sine(440, 0.5, 5), quiet])
    result = _measure(audio)
    assert result.digital_silence == pytest.approx(0.3, abs=1e-9)
    assert result.silence == pytest.approx(0.5, abs=1e-9)


def test_a_partial_frame_counts_with_its_own_length():
    audio = np.concatenate([_sine(440, 0.5, 1), np.zeros((1200, 2), dtype=np.float32)])
    result = _measure(audio)
    assert result.digital_silence == pytest.approx(1200 / len(audio))


def test_stereo_correlation_and_balance():
    rng = np.random.default_rng(8)
    noise = rng.standard_normal((5 * RATE, 2)).astype(np.float32) * 0.1
    same = _measure(_stereo(noise[:, 0]))
    assert same.stereo_correlation == pytest.approx(1.0, abs=1e-6)
    assert same.channel_balance_db == pytest.approx(0.0, abs=1e-6)
    inverted = _measure(noise[:, :1] * np.array([[1.0, -1.0]], dtype=np.float32))
    assert inverted.stereo_correlation == pytest.approx(-1.0, abs=1e-6)
    assert abs(_measure(noise).stereo_correlation) < 0.05
    dead_right = _measure(noise * np.array([[1.0, 0.0]], dtype=np.float32))
    assert dead_right.stereo_correlation is None
    assert dead_right.channel_balance_db >= 100
    quiet_left = _measure(noise * np.array([[1e-4, 1.0]], dtype=np.float32))
    assert quiet_left.channel_balance_db == pytest.approx(-80.0, abs=0.1)


def test_dc_offset():
    noise = np.random.default_rng(9).standard_normal((5 * RATE, 2)).astype(np.float32) * 0.1
    assert _measure(noise + np.float32(0.1)).dc_offset == pytest.approx(0.1, abs=0.005)
    assert _measure(noise).dc_offset < 0.005


def test_true_peak_of_a_quarter_rate_sine_between_its_samples():
    # At fs/4 and 45 degrees the samples sit at +-0.707 of a full-scale sine's peaks.
    result = _measure(_sine(RATE / 4, 1.0, 1, phase=np.pi / 4))
    assert result.sample_peak_dbfs == pytest.approx(-3.01, abs=0.01)
    assert result.true_peak_dbtp == pytest.approx(0.0, abs=0.2)


def test_true_peak_of_a_low_sine_is_its_sample_peak():
    result = _measure(_sine(997, 0.5, 2))
    assert result.true_peak_dbtp == pytest.approx(result.sample_peak_dbfs, abs=0.1)


@pytest.mark.parametrize("drive", [0.0, 1.0, 4.0])
def test_true_peak_is_exact(drive):
    # Bright material, from plain to clipped by a hard tanh: the bound must not skip the peak.
    audio = _bass_song(2, seed=10) + _pink(2, 0.5, seed=11, lowest_hz=4000)
    if drive:
        audio = np.tanh(drive * audio)
    audio = (audio / np.abs(audio).max() * 0.9).astype(np.float32)
    assert analyse(audio).true_peak == pytest.approx(_brute_true_peak(audio), rel=1e-6)


def test_bandwidth_of_white_noise_reaches_the_top():
    noise = np.random.default_rng(12).standard_normal((5 * RATE, 2)).astype(np.float32) * 0.1
    assert _measure(noise).bandwidth_hz >= 23_000


def test_bandwidth_shows_a_22khz_source():
    noise = np.random.default_rng(13).standard_normal((5 * RATE, 2)).astype(np.float32) * 0.1
    through = soxr.resample(soxr.resample(noise, RATE, 22_050), 22_050, RATE)
    assert _measure(through.astype(np.float32)).bandwidth_hz == pytest.approx(11_000, abs=500)


def test_bandwidth_shows_an_mp3_like_brick_wall():
    noise = np.random.default_rng(14).standard_normal((5 * RATE, 2)) * 0.1
    lowpass = scipy.signal.firwin(1023, 16_000, window=("kaiser", 12.0), fs=RATE)
    cut = scipy.signal.oaconvolve(noise, lowpass[:, None], mode="same", axes=0)
    assert _measure(cut.astype(np.float32)).bandwidth_hz == pytest.approx(16_000, abs=500)


def test_bandwidth_of_a_sine_is_its_frequency():
    assert _measure(_sine(1000, 0.5, 5)).bandwidth_hz == pytest.approx(1000, abs=300)
    assert _measure(_sine(997, 0.5, 5)).bandwidth_hz == pytest.approx(1000, abs=300)


def test_bandwidth_threshold_is_a_module_constant():
    assert BANDWIDTH_DROP_DB == 50.0


def test_combined_segments_reproduce_the_whole():
    # No drums: with hits every 0.5 s, blocks sit at the relative gate and moving the block
    # grid flips them, which says nothing about combine().
    audio = np.concatenate([_bass_song(20, seed=15), _pink(20, 0.3, 17)])
    audio[5 * RATE : 6 * RATE] = 0.0
    audio += np.float32(0.01)  # Some DC, and no more digital silence but a quiet second.
    cuts = [0, 7 * RATE + 123, 20 * RATE, 21 * RATE + 4799, len(audio)]  # 0.1 s piece.
    parts = [analyse(audio[a:b]) for a, b in itertools.pairwise(cuts)]
    whole, split = _measure(audio), measures(combine(parts))
    assert split.loudness_lufs == pytest.approx(whole.loudness_lufs, abs=0.05)
    assert split.sample_peak_dbfs == whole.sample_peak_dbfs
    assert split.true_peak_dbtp == pytest.approx(whole.true_peak_dbtp, abs=0.1)
    assert split.silence == pytest.approx(whole.silence, abs=0.01)
    assert split.digital_silence == pytest.approx(whole.digital_silence, abs=0.01)
    assert split.bandwidth_hz == pytest.approx(whole.bandwidth_hz, abs=100)
    assert split.stereo_correlation == pytest.approx(whole.stereo_correlation, abs=1e-5)
    assert split.channel_balance_db == pytest.approx(whole.channel_balance_db, abs=1e-4)
    assert split.dc_offset == pytest.approx(whole.dc_offset, rel=1e-5)


@pytest.mark.parametrize("frames", [0, 1, 5, 100, 4799, 4800, 4801, 19_199])
def test_short_stretches(frames):
    audio = _pink(1, 0.5, seed=18)[:frames]
    stats = analyse(audio)
    assert stats.frames == frames
    result = measures(stats)
    assert result.loudness_lufs is None  # No whole 400 ms block.
    if frames:
        assert result.sample_peak_dbfs == pytest.approx(20 * np.log10(np.abs(audio).max()))
        assert result.true_peak_dbtp >= result.sample_peak_dbfs


def test_combining_nothing_is_empty():
    stats = combine([])
    assert isinstance(stats, AudioStats) and stats.frames == 0
    assert measures(stats).loudness_lufs is None


def test_analyse_takes_any_layout_but_stereo_only():
    audio = _pink(1, 0.5, seed=19)
    fortran = np.asfortranarray(audio.astype(np.float64))
    assert analyse(fortran).true_peak == pytest.approx(analyse(audio).true_peak)
    with pytest.raises(ValueError, match="frames, 2"):
        analyse(audio[:, :1])


def test_to_dict_keys_are_the_measure_names():
    result = _measure(_sine(440, 0.5, 1))
    assert tuple(result.to_dict()) == MEASURE_NAMES
    assert MEASURE_NAMES[0] == "loudness_lufs" and MEASURE_NAMES[-1] == "dc_offset"
