"""Audio quality measures of prepared 48 kHz stereo audio, cheap enough to run on every segment.

Prepare already holds each segment in memory, so `analyse()` reduces a segment to additive
statistics (`AudioStats`), `combine()` merges a song's segments and `measures()` turns the
statistics of a segment or a song into the figures (`Measures`) that filters compare with
thresholds. Nothing per sample is kept: one float per 400 ms block, and one spectrum.

The per-sample loops run in C (`native/quality_kernels.c`): one pass gives each 100 ms
frame's (4800 samples) K-weighted energy and energy and the channel sums, in double; the
spectrum comes from an FFT of every eighth frame. `analyse()` takes ~6 ms on a 35.84 s
segment on a 2-core box (see docs/benchmarks.md).

Loudness: ITU-R BS.1770-4 integrated loudness, channel weights 1 for L and R, gated at
-70 LUFS and -10 LU, with the standard's 48 kHz K-weighting (pre-filter shelf S and RLB
high-pass R, tables 1 and 2) run as the IIR it is. Four stretches of frames are filtered
side by side (one vector register), each from rest 100 ms before its first frame, which
leaves e^-24 of the state it should have had: the same figures as one filter over the whole
stretch. Gating blocks are four whole frames (400 ms, 100 ms hop); a partial last frame
starts no block. Blocks never straddle two `analyse()` calls: a song's blocks are its
segments' blocks, which leaves out the three blocks across each segment boundary, a
deliberate simplification worth under 0.02 LU on a song (but up to ~0.1 LU for strictly
periodic loud hits, whose blocks sit at the relative gate: a segment's block grid, 40 ms off
the song's, gates other blocks). Each `analyse()` starts its filter from rest.

True peak: see pipeline/quality/true_peak.py; exact, found where it can beat the sample
peak.

Bandwidth: the highest frequency whose power, averaged over the stretch and smoothed over
200 Hz, is within BANDWIDTH_DROP_DB of the mean power between 200 Hz and 4 kHz (or of the
strongest band when nothing is there): an mp3's or a low-rate source's low-pass shows as
its frequency. The spectra are Hann-windowed (by the window's three-bin convolution of the
FFT), as a rectangular frame's leakage lies only ~45 dB under the music and would hide a
cut. Every eighth whole frame feeds the average (4.5 s of a 35.84 s segment): the figure is
steady over a song. A stretch shorter than one frame adds no spectrum and no blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import quality_kernels
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.quality.true_peak import true_peak

RATE = 48_000
SILENCE_DBFS = -60.0  # A 100 ms frame whose RMS (both channels) is below this is silent.
BANDWIDTH_DROP_DB = 50.0

FRAME = RATE // 10  # 100 ms.
BIN_HZ = RATE / FRAME

_BLOCK_FRAMES = 4  # A 400 ms gating block with a 100 ms hop: 75% overlap.
_LUFS_OFFSET = -0.691
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_SILENT_POWER = 10.0 ** (SILENCE_DBFS / 10)
_CHANNEL_BALANCE_LIMIT_DB = 120.0

_SPECTRUM_STRIDE = 8
_SMOOTHING_HZ = 200.0
_REFERENCE_BAND_HZ = (200.0, 4000.0)

# BS.1770-4 tables 1 and 2: the pre-filter (high shelf) and RLB (high-pass) at 48 kHz.
_SHELF = np.array([1.53512485958697, -2.69169618940638, 1.19839281085285])
_SHELF_POLES = np.array([1.0, -1.69065929318241, 0.73248077421585])
_HIGH_PASS = np.array([1.0, -2.0, 1.0])
_HIGH_PASS_POLES = np.array([1.0, -1.99004745483398, 0.99007225036621])
# As the kernel takes them: b0 b1 b2 a1 a2 of each biquad.
_K_WEIGHTING = np.array(
    [[*_SHELF, *_SHELF_POLES[1:]], [*_HIGH_PASS, *_HIGH_PASS_POLES[1:]]], dtype=np.float64
)
_WARMUP = FRAME  # Samples each side-by-side filter runs before its first frame.


class NotFinite(ValueError):
    """The audio holds NaN or infinity: it has no measures."""


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields have no truth value.
class AudioStats:
    """Additive statistics of a stretch of 48 kHz stereo audio; `combine()` merges them."""

    frames: int  # Audio frames (samples per channel) covered.
    block_power: np.ndarray  # Per 400 ms gating block: K-weighted mean square, L + R.
    silent_frames: int  # Audio frames inside 100 ms frames quieter than SILENCE_DBFS.
    digital_silent_frames: int  # Audio frames inside 100 ms frames of exact zeros.
    sample_peak: float
    true_peak: float
    sum_left: float
    sum_right: float
    energy_left: float  # Sum of squares.
    energy_right: float
    cross: float  # Sum of L * R.
    spectrum: np.ndarray  # Summed Hann-windowed power (L + R) per BIN_HZ bin, 0..RATE / 2.


def analyse(audio: np.ndarray) -> AudioStats:
    """Statistics of `[frames, 2]` float32 audio at RATE (C-contiguous, or it is copied).

    Raises:
        ValueError: if the audio is not stereo.
        NotFinite: if it holds NaN or infinity.
    """
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] != 2:
        raise ValueError(f"expected [frames, 2] audio, got shape {audio.shape}")
    frames = len(audio)
    flat = audio.reshape(-1)
    whole = len(audio) // FRAME
    rows = flat[: whole * 2 * FRAME].reshape(whole, 2 * FRAME)  # Interleaved, one per frame.
    tail = audio[whole * FRAME :].astype(np.float64)  # A partial last frame, on its own.

    high, low = rows.max(axis=1, initial=-np.inf), rows.min(axis=1, initial=np.inf)
    if len(tail):
        high, low = np.append(high, tail.max()), np.append(low, tail.min())
    frame_peak = np.maximum(high, -low)
    sample_peak = float(frame_peak.max(initial=0.0))
    # NaN and infinity carry through the frame maxima: refused before any other work.
    if not np.isfinite(sample_peak):
        raise NotFinite("audio contains NaN or infinity")

    k_energy, energy = np.empty(whole), np.empty(whole)
    sums = quality_kernels.frame_energies(
        flat, frames, FRAME, _WARMUP, _K_WEIGHTING, k_energy, energy
    )
    sum_left, sum_right, energy_left, energy_right, cross = sums
    lengths = np.full(whole, FRAME)
    if len(tail):
        energy = np.append(energy, np.vdot(tail, tail))
        lengths = np.append(lengths, len(tail))
    blocks = (
        sliding_window_view(k_energy, _BLOCK_FRAMES).sum(axis=1) / (_BLOCK_FRAMES * FRAME)
        if whole >= _BLOCK_FRAMES
        else np.zeros(0)
    )
    return AudioStats(
        frames=frames,
        block_power=blocks,
        silent_frames=int(lengths[energy < 2 * lengths * _SILENT_POWER].sum()),
        digital_silent_frames=int(lengths[frame_peak == 0].sum()),
        sample_peak=sample_peak,
        true_peak=true_peak(flat, sample_peak),
        sum_left=sum_left,
        sum_right=sum_right,
        energy_left=energy_left,
        energy_right=energy_right,
        cross=cross,
        spectrum=_spectrum(rows),
    )


def _spectrum(rows: np.ndarray) -> np.ndarray:
    """The Hann power spectrum (L + R) summed over every _SPECTRUM_STRIDE-th whole frame
    (`rows`: `[frames, 2 * FRAME]` interleaved), one complex FFT per frame: the stereo frame
    read as L + iR (the interleaved float32 already is that complex array)."""
    if not len(rows):
        return np.zeros(FRAME // 2 + 1)
    frames = rows[::_SPECTRUM_STRIDE].view(np.complex64).astype(np.complex128)
    # numpy's FFT, in double: 0.5 ms a segment more than scipy's in single precision, and
    # not scipy.fft's 0.15 s of imports in every prepare unit's child process.
    return _hann_power(np.fft.fft(frames, axis=1))


def _hann_power(spectra: np.ndarray) -> np.ndarray:
    """Summed one-sided power of Hann-windowed frames, from the frames' complex FFTs.

    The periodic Hann window is the spectral kernel (-1/4, 1/2, -1/4); scaled by -4 it is
    Z_{k-1} + Z_{k+1} - 2 Z_k. The two bins at the edges of the range (DC and -10 Hz) are
    left at zero: no measure looks there.
    """
    windowed = spectra[:, :-2] + spectra[:, 2:]
    windowed -= spectra[:, 1:-1]
    windowed -= spectra[:, 1:-1]
    squares = windowed.view(np.float64)
    np.multiply(squares, squares, out=squares)
    power = np.zeros(FRAME)
    power[1:-1] = squares.sum(axis=0).reshape(-1, 2).sum(axis=1)
    # Bin k of L + iR holds L and R at +f_k and -f_(N-k): fold the halves together.
    one_sided = power[: FRAME // 2 + 1].copy()
    one_sided[1 : FRAME // 2] += power[: FRAME // 2 : -1]
    return one_sided


def combine(parts: Sequence[AudioStats]) -> AudioStats:
    """The statistics of consecutive stretches (a song's segments, in order) as one."""
    if not parts:
        return analyse(np.zeros((0, 2), dtype=np.float32))
    return AudioStats(
        frames=sum(part.frames for part in parts),
        block_power=np.concatenate([part.block_power for part in parts]),
        silent_frames=sum(part.silent_frames for part in parts),
        digital_silent_frames=sum(part.digital_silent_frames for part in parts),
        sample_peak=max(part.sample_peak for part in parts),
        true_peak=max(part.true_peak for part in parts),
        sum_left=sum(part.sum_left for part in parts),
        sum_right=sum(part.sum_right for part in parts),
        energy_left=sum(part.energy_left for part in parts),
        energy_right=sum(part.energy_right for part in parts),
        cross=sum(part.cross for part in parts),
        spectrum=np.sum([part.spectrum for part in parts], axis=0),
    )


@dataclass(frozen=True)
class Measures:
    """The quality figures of a segment or a song; None where a figure does not exist."""

    loudness_lufs: float | None  # BS.1770-4 integrated, gated; None when all is gated out.
    true_peak_dbtp: float | None  # None for all-zero audio, as is the sample peak.
    sample_peak_dbfs: float | None
    silence: float  # Share of 100 ms frames below SILENCE_DBFS.
    digital_silence: float  # Share of 100 ms frames of exact zeros.
    bandwidth_hz: float  # 0.0 for silence.
    stereo_correlation: float | None  # sum LR / sqrt(sum L^2 sum R^2); None if a channel is 0.
    channel_balance_db: float | None  # 10 log10(energy L / energy R); None if both are 0.
    dc_offset: float  # Max over channels of |mean sample value|.

    def to_dict(self) -> dict[str, float | None]:
        """Field name -> value, in field order."""
        return asdict(self)


MEASURE_NAMES: tuple[str, ...] = tuple(field.name for field in fields(Measures))


def measures(stats: AudioStats) -> Measures:
    """The figures of a stretch from its statistics."""
    frames = max(stats.frames, 1)
    left, right = stats.energy_left, stats.energy_right
    return Measures(
        loudness_lufs=_gated_loudness(stats.block_power),
        true_peak_dbtp=_decibels(stats.true_peak),
        sample_peak_dbfs=_decibels(stats.sample_peak),
        silence=stats.silent_frames / frames,
        digital_silence=stats.digital_silent_frames / frames,
        bandwidth_hz=spectrum_bandwidth(stats.spectrum),
        stereo_correlation=float(np.clip(stats.cross / np.sqrt(left * right), -1.0, 1.0))
        if left > 0 and right > 0
        else None,
        channel_balance_db=_balance(left, right),
        dc_offset=max(abs(stats.sum_left), abs(stats.sum_right)) / frames,
    )


def _decibels(amplitude: float) -> float | None:
    return 20 * float(np.log10(amplitude)) if amplitude > 0 else None


def _gated_loudness(block_power: np.ndarray) -> float | None:
    """BS.1770-4 gating: blocks above -70 LUFS, then those within 10 LU of their mean."""
    absolute = block_power[block_power > 10 ** ((_ABSOLUTE_GATE_LUFS - _LUFS_OFFSET) / 10)]
    if not len(absolute):
        return None
    gated = absolute[absolute > absolute.mean() * 10 ** (_RELATIVE_GATE_LU / 10)]
    return _LUFS_OFFSET + 10 * float(np.log10(gated.mean()))


def spectrum_bandwidth(spectrum: np.ndarray) -> float:
    """Bandwidth (see the module docstring) of a one-sided power spectrum whose bins are
    BIN_HZ apart from 0 Hz, of any top frequency; its scale does not matter."""
    if not spectrum.any():
        return 0.0
    width = round(_SMOOTHING_HZ / BIN_HZ) | 1  # Odd, so the average is centred on its bin.
    smoothed = np.convolve(spectrum, np.ones(width) / width, mode="same")
    low, high = (round(hz / BIN_HZ) for hz in _REFERENCE_BAND_HZ)
    reference = spectrum[low:high].mean() or smoothed.max()
    meaningful = np.flatnonzero(smoothed >= reference * 10 ** (-BANDWIDTH_DROP_DB / 10))
    return float(meaningful[-1] * BIN_HZ)


def _balance(left: float, right: float) -> float | None:
    if left == 0 and right == 0:
        return None
    limit = _CHANNEL_BALANCE_LIMIT_DB
    if left == 0 or right == 0:
        return limit if right == 0 else -limit
    return float(np.clip(10 * np.log10(left / right), -limit, limit))
