"""Audio quality measures of prepared 48 kHz stereo audio, cheap enough to run on every segment.

Prepare already holds each segment in memory, so `analyse()` reduces a segment to additive
statistics (`AudioStats`), `combine()` merges a song's segments and `measures()` turns the
statistics of a segment or a song into the figures (`Measures`) that filters compare with
thresholds. Nothing per sample is kept: one float per 400 ms block, and one spectrum.

Most figures come from one FFT per 100 ms frame (4800 samples). The stereo frame is read as
one complex signal L + iR, so one complex FFT serves both channels and |Z_k|^2 summed over
all bins is the energy of L and R together (Parseval); the interleaved `[frames, 2]` float32
array already is that complex array, no copy needed. Of the ~13 ms `analyse()` spends on
a 35.84 s segment on a 2-core box, the FFT is 5 ms, the rest of loudness and spectrum ~3,
peaks and sums ~1, the true peak 3.5 (up to ~9 ms, and ~18 ms in all, on crushed masters).

Loudness: ITU-R BS.1770-4 integrated loudness, channel weights 1 for L and R, gated at
-70 LUFS and -10 LU, with the standard's 48 kHz K-weighting (pre-filter shelf S and RLB
high-pass R), which as a running IIR would cost ~22 ms a segment. Instead each frame's
K-weighted energy is a weighted sum of its |Z_k|^2: that is the filter's circular
convolution over the frame, whose response to the frame's end wraps onto its start. Where
the weight is smooth that costs nothing measurable, but below ~100 Hz R is steep and a bass
tone's leakage would be weighted wrongly (by up to -0.35 LU on a pure 45 Hz tone). So the
steep part of R is split off (see `_frame_weights`) and applied to the audio decimated to
1 kHz, by linear convolution over the whole stretch. Against the time-domain filter this
is within 0.01 LU on music-like signals, noise, gated tones and drum hits, and within
0.025 LU on pure tones down to 25 Hz. Gating blocks are four whole frames (400 ms, 100 ms
hop); a partial last frame starts no block. Blocks never straddle two `analyse()` calls: a
song's blocks are its segments' blocks, which leaves out the three blocks across each
segment boundary, a deliberate simplification worth under 0.02 LU on a song (but up to
~0.1 LU for strictly periodic loud hits, whose blocks sit at the relative gate: a segment's
block grid, 40 ms off the song's, gates other blocks).

True peak: see pipeline/quality/true_peak.py; exact, found where it can beat the sample
peak.

Bandwidth: the highest frequency whose power, averaged over the stretch and smoothed over
200 Hz, is within BANDWIDTH_DROP_DB of the mean power between 200 Hz and 4 kHz (or of the
strongest band when nothing is there): an mp3's or a low-rate source's low-pass shows as
its frequency. The spectra are Hann-windowed (by the window's three-bin convolution of the
FFT), as a rectangular frame's leakage lies only ~45 dB under the music and would hide a
cut. Every fourth whole frame feeds the average: a quarter of the cost, for a figure that
is steady over a song. A stretch shorter than one frame adds no spectrum and no blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.fft
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

_SPECTRUM_STRIDE = 4
_SMOOTHING_HZ = 200.0
_REFERENCE_BAND_HZ = (200.0, 4000.0)

# BS.1770-4 tables 1 and 2: the pre-filter (high shelf) and RLB (high-pass) at 48 kHz.
_SHELF = np.array([1.53512485958697, -2.69169618940638, 1.19839281085285])
_SHELF_POLES = np.array([1.0, -1.69065929318241, 0.73248077421585])
_HIGH_PASS = np.array([1.0, -2.0, 1.0])
_HIGH_PASS_POLES = np.array([1.0, -1.99004745483398, 0.99007225036621])
_DECIMATION = 48  # The low band is filtered at 1 kHz, as means of 48 samples.
_LOW_PAD = 64  # Decimated samples of zeros after a stretch: the low-band filter's reach.

_SUM_CHUNK = 2**15  # Frames summed in float32 before the float64 total.
# A channel imbalance past which L - R says too little about the weaker channel in float32.
_WEAK_CHANNEL_SHARE = 1e-3


def _biquad_power(zeros: np.ndarray, poles: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """|H|^2 at `freqs` (Hz) of the biquad with these numerator and denominator taps (no
    scipy.signal here: importing it costs half a second in every prepare worker)."""
    z = np.exp(-2j * np.pi * np.asarray(freqs, dtype=np.float64) / RATE)
    response = np.polyval(zeros[::-1], z) / np.polyval(poles[::-1], z)
    return np.abs(response) ** 2


def _high_pass_power(freqs: np.ndarray) -> np.ndarray:
    """|RLB|^2 at `freqs` (Hz)."""
    return _biquad_power(_HIGH_PASS, _HIGH_PASS_POLES, freqs)


# The RLB's passband gain (its response at the Nyquist frequency), squared.
_PASSBAND_POWER = float(_high_pass_power(np.array([RATE / 2]))[0])


def _dip(freqs: np.ndarray) -> np.ndarray:
    """V = 1 - |RLB|^2 / passband power: the high-pass's share of the power it removes."""
    return 1 - _high_pass_power(freqs) / _PASSBAND_POWER


def _frame_weights() -> np.ndarray:
    """`[2 * FRAME, 2]` float32: per interleaved re/im value of a frame's squared complex FFT,
    the weight that sums it to the frame's energy (column 1) and to its K-weighted energy
    but for the low band's part (column 0; see `_low_band_energy`).

    With S the shelf, V the dip and L the response of the 48-sample mean, |K|^2 / passband
    power = |S|^2 (1 - V) = [|S|^2 - V (|S|^2 - |L|^2)] - V |L|^2. The bracket is smooth (about
    1 below 500 Hz, where S and L are), so a frame's leakage hardly moves the sum; V |L|^2, the
    steep part, is left to the low band.
    """
    bins = np.arange(FRAME)
    freqs = np.minimum(bins, FRAME - bins) * BIN_HZ  # The complex FFT's negative half mirrors.
    shelf_power = _biquad_power(_SHELF, _SHELF_POLES, freqs)
    k_weight = _PASSBAND_POWER * (shelf_power - _dip(freqs) * (shelf_power - _mean_power(freqs)))
    weights = np.stack([np.repeat(k_weight, 2), np.ones(2 * FRAME)], axis=1)
    return (weights / FRAME).astype(np.float32)


def _mean_power(freqs: np.ndarray) -> np.ndarray:
    """|L|^2: the power response of a mean over _DECIMATION samples."""
    phase = np.pi * freqs / RATE
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.sin(_DECIMATION * phase) / (_DECIMATION * np.sin(phase))
    return np.where(phase == 0, 1.0, ratio) ** 2


@functools.lru_cache(maxsize=8)
def _low_band_response(length: int) -> np.ndarray:
    """sqrt(passband power * _DECIMATION * V) at the bins of a `length`-point FFT of the
    decimated audio: filtering it with this leaves the low band's share of each frame's
    K-weighting as its energy (zero phase: only energies are taken)."""
    bins = np.arange(length)
    freqs = np.minimum(bins, length - bins) * (RATE / _DECIMATION / length)
    return np.sqrt(_PASSBAND_POWER * _DECIMATION * _dip(freqs)).astype(np.float32)


_FRAME_WEIGHTS = _frame_weights()


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
    """Statistics of `[frames, 2]` float32 audio at RATE (C-contiguous, or it is copied)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] != 2:
        raise ValueError(f"expected [frames, 2] audio, got shape {audio.shape}")
    frames = len(audio)
    flat = audio.reshape(-1)
    whole = len(audio) // FRAME
    rows = flat[: whole * 2 * FRAME].reshape(whole, 2 * FRAME)  # Interleaved, one per frame.
    tail = audio[whole * FRAME :]  # A partial last frame, counted with its own length.

    high, low = rows.max(axis=1, initial=-np.inf), rows.min(axis=1, initial=np.inf)
    k_energy, energy, dc, spectrum = _frame_spectra(rows)
    lengths = np.full(whole, FRAME)
    if len(tail):
        high = np.append(high, tail.max())
        low = np.append(low, tail.min())
        energy = np.append(energy, np.vdot(tail, tail))
        dc += complex(*tail.sum(axis=0, dtype=np.float64))
        lengths = np.append(lengths, len(tail))
    frame_peak = np.maximum(high, -low)
    sample_peak = float(frame_peak.max(initial=0.0))
    blocks = (
        sliding_window_view(k_energy, _BLOCK_FRAMES).sum(axis=1) / (_BLOCK_FRAMES * FRAME)
        if whole >= _BLOCK_FRAMES
        else np.zeros(0)
    )
    energy_left, energy_right, cross = _channel_energies(audio)
    return AudioStats(
        frames=frames,
        block_power=blocks,
        silent_frames=int(lengths[energy < 2 * lengths * _SILENT_POWER].sum()),
        digital_silent_frames=int(lengths[frame_peak == 0].sum()),
        sample_peak=sample_peak,
        true_peak=true_peak(flat, frame_peak, sample_peak, FRAME),
        sum_left=dc.real,
        sum_right=dc.imag,
        energy_left=energy_left,
        energy_right=energy_right,
        cross=cross,
        spectrum=spectrum,
    )


def _frame_spectra(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, complex, np.ndarray]:
    """From one FFT per whole frame (`rows`: `[frames, 2 * FRAME]` interleaved): each frame's
    K-weighted energy and energy (L + R), the channel sums (as L + iR) and the Hann power
    spectrum."""
    if not len(rows):
        return np.zeros(0), np.zeros(0), 0j, np.zeros(FRAME // 2 + 1)
    frames = rows.view(np.complex64)
    spectra = scipy.fft.fft(frames, axis=1)
    dc = complex(spectra[:, 0].sum(dtype=np.complex128))  # Bin 0 is the frame's sum.
    spectrum = _hann_power(spectra[::_SPECTRUM_STRIDE])
    power = spectra.view(np.float32)
    np.multiply(power, power, out=power)
    k_energy, energy = (power @ _FRAME_WEIGHTS).astype(np.float64).T
    # A frame of deep bass alone leaves a difference of near-equal sums: keep it >= 0.
    k_energy = np.maximum(k_energy - _low_band_energy(frames), 0.0)
    return k_energy, energy, dc, spectrum


def _low_band_energy(frames: np.ndarray) -> np.ndarray:
    """Per whole frame (`frames`: `[frames, FRAME]` complex L + iR), the low band's share of
    the K-weighted energy (see `_frame_weights`): the means of 48 samples, filtered as one
    stretch by linear convolution, so that the high-pass's long response below 500 Hz runs
    from frame to frame as it should."""
    low = frames.reshape(-1, _DECIMATION) @ np.full(_DECIMATION, 1 / _DECIMATION, np.complex64)
    length = _smooth_length(len(low) + _LOW_PAD)
    spectrum = scipy.fft.fft(low, length) * _low_band_response(length)
    filtered = scipy.fft.ifft(spectrum, overwrite_x=True)[: len(low)].view(np.float32)
    return np.square(filtered).reshape(len(frames), -1).sum(axis=1, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _smooth_length(least: int) -> int:
    """The shortest FFT length >= `least` with no prime factor but 2, 3 and 5 (pocketfft is
    twice as slow on the 7- and 11-smooth lengths scipy's next_fast_len also offers)."""
    best = 5 * least
    twos = 1
    while twos < best:
        threes = twos
        while threes < best:
            fives = threes
            while fives < least:
                fives *= 5
            best = min(best, fives)
            threes *= 3
        twos *= 2
    return best


def _hann_power(spectra: np.ndarray) -> np.ndarray:
    """Summed one-sided power of Hann-windowed frames, from the frames' complex FFTs.

    The periodic Hann window is the spectral kernel (-1/4, 1/2, -1/4); scaled by -4 it is
    Z_{k-1} + Z_{k+1} - 2 Z_k. The two bins at the edges of the range (DC and -10 Hz) are
    left at zero: no measure looks there.
    """
    windowed = spectra[:, :-2] + spectra[:, 2:]
    windowed -= spectra[:, 1:-1]
    windowed -= spectra[:, 1:-1]
    squares = windowed.view(np.float32)
    np.multiply(squares, squares, out=squares)
    power = np.zeros(FRAME)
    power[1:-1] = squares.sum(axis=0).reshape(-1, 2).sum(axis=1)
    # Bin k of L + iR holds L and R at +f_k and -f_(N-k): fold the halves together.
    one_sided = power[: FRAME // 2 + 1].copy()
    one_sided[1 : FRAME // 2] += power[: FRAME // 2 : -1]
    return one_sided


def _channel_energies(audio: np.ndarray) -> tuple[float, float, float]:
    """Sum of L^2, of R^2 and of L * R.

    As complex z = L + iR: sum |z|^2 = L^2 + R^2 and sum z^2 = (L^2 - R^2) + 2i L R, two
    BLAS dot products, which sum each product's four real terms apart: identical or
    inverted channels give exactly +-1 and a silent one exactly 0. A channel much weaker
    than the other is summed directly, as the difference of two float32 sums would bury it
    in their rounding.
    """
    z = audio.reshape(-1).view(np.complex64)
    # In chunks, summed in float64: one float32 sum over a whole segment drifts by ~1e-5.
    chunks = [z[start : start + _SUM_CHUNK] for start in range(0, len(z), _SUM_CHUNK)]
    both = sum(float(np.vdot(chunk, chunk).real) for chunk in chunks)
    squared = sum(complex(np.dot(chunk, chunk)) for chunk in chunks)
    left = (both + squared.real) / 2
    right = (both - squared.real) / 2
    if left < _WEAK_CHANNEL_SHARE * both:
        left = float(np.dot(audio[:, 0], audio[:, 0]))
        right = both - left
    elif right < _WEAK_CHANNEL_SHARE * both:
        right = float(np.dot(audio[:, 1], audio[:, 1]))
        left = both - right
    return left, right, squared.imag / 2


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
