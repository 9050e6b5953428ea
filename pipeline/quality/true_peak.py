"""The true peak of interleaved stereo audio: its 4x-oversampled maximum, found cheaply.

4x oversampling (ITU-R BS.1770-4 Annex 2) with a 49-tap Kaiser-windowed sinc whose polyphase
branch 0 is the samples themselves, so only the three branches between samples need
computing, and only where they can beat the sample peak. A branch value is a linear
interpolation of its two neighbouring samples plus the window's second differences weighted
by fixed taps (summation by parts), so it is at most max(|x_n|, |x_n+1|) plus the largest
second difference nearby times those taps' L1 norm. That bound, per 64-sample block, selects
the few places worth interpolating even in loud masters whose samples are near full scale
everywhere (where the plain bound, window peak times the branch's L1 norm, selects nearly
every sample). Interpolated points whose 12-sample window would run off either end of the
stretch (6 at each end) are skipped. Exact, but for a cap on the work where no bound helps,
in full-band noise or crushed audio (see `true_peak`).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

_OVERSAMPLE = 4
_INTERPOLATION_TAPS = 49
_WINDOW = (_INTERPOLATION_TAPS - 1) // _OVERSAMPLE  # Input samples under one branch: 12.
_BEFORE = _WINDOW // 2 - 1  # Samples before x_n in the window of the points after x_n: 5.
_TP_BLOCK = 64  # Points (per channel) in one block of the true-peak screen.
_TP_GAP_FRAMES = 4  # Hot frames this close are screened as one run.
_FIRST_TP_BLOCKS = 32  # The most promising blocks, interpolated first to raise the bar.
_MAX_TP_BLOCKS = 2**17 // (2 * _TP_BLOCK)  # At most 2^17 points interpolated (~3 ms).


def _interpolation_branches() -> tuple[np.ndarray, float, float]:
    """The three between-sample branches of the 4x interpolator and the bound's two gains.

    Returns `[_WINDOW, 3]` float32 taps (row j multiplies x_{n - _BEFORE + j}, column p - 1
    gives the point p/4 of the way from x_n to x_n+1), the largest |a| + |b| of the branches'
    linear parts a x_n + b x_n+1, and the largest L1 norm of their second-difference taps.
    """
    # A Kaiser-windowed sinc cut at the original Nyquist frequency (scipy's firwin, written
    # out: importing scipy.signal costs half a second in every prepare worker).
    offsets = np.arange(_INTERPOLATION_TAPS) - _INTERPOLATION_TAPS // 2
    prototype = np.sinc(offsets / _OVERSAMPLE) * np.kaiser(_INTERPOLATION_TAPS, 8.0)
    j = np.arange(_WINDOW)
    centre = _INTERPOLATION_TAPS // 2
    branches = np.stack(
        [prototype[centre + _OVERSAMPLE * (_BEFORE - j) + p] for p in range(1, _OVERSAMPLE)], 1
    )
    linear_gain = curvature_gain = 0.0
    for taps in branches.T:
        # a + b and the first moment match the branch's, so the rest has zero sum and zero
        # first moment and is a second difference of its double cumulative sum.
        b = (j * taps).sum() - _BEFORE * taps.sum()
        a = taps.sum() - b
        rest = taps.copy()
        rest[_BEFORE] -= a
        rest[_BEFORE + 1] -= b
        linear_gain = max(linear_gain, abs(a) + abs(b))
        curvature_gain = max(curvature_gain, np.abs(np.cumsum(np.cumsum(rest))).sum())
    return branches.astype(np.float32), linear_gain, curvature_gain


_BRANCHES, _LINEAR_GAIN, _CURVATURE_GAIN = _interpolation_branches()
_BRANCH_L1 = float(np.abs(_BRANCHES).sum(axis=0).max())


def true_peak(
    flat: np.ndarray, frame_peak: np.ndarray, sample_peak: float, frame_length: int
) -> float:
    """Largest |value| of the 4x-oversampled interleaved audio (see the module docstring),
    given the peak of each frame of `frame_length` samples and the sample peak.

    Frames whose points cannot beat the sample peak even by the coarse bound (their
    windows' peak times the branches' L1 norm; a window reaches 6 samples into the next
    frame) are skipped. The others' blocks are interpolated in the order of their bounds:
    the most promising first, which raises the bar the rest must clear, then every block
    that still clears it, up to _MAX_TP_BLOCKS (beyond that, in noise-like or crushed audio
    with a steep second difference everywhere, the result is the largest point found).
    """
    frames = len(flat) // 2
    if sample_peak == 0.0 or frames < _WINDOW:
        return sample_peak
    near = frame_peak.copy()
    near[1:] = np.maximum(near[1:], frame_peak[:-1])
    near[:-1] = np.maximum(near[:-1], frame_peak[1:])
    hot = np.flatnonzero(near * _BRANCH_L1 >= sample_peak)
    # Runs of hot frames; short gaps are bridged, as each run has a fixed overhead.
    runs = np.split(hot, np.flatnonzero(np.diff(hot) > _TP_GAP_FRAMES) + 1)
    blocks = [
        _block_bounds(flat, run[0] * frame_length, min((run[-1] + 1) * frame_length, frames))
        for run in runs
    ]
    first, linear, curvature = (np.concatenate(part) for part in zip(*blocks, strict=True))
    bound = linear + curvature
    peak = sample_peak
    budget = _MAX_TP_BLOCKS
    for share in (_FIRST_TP_BLOCKS, budget):
        open_ = np.flatnonzero(bound >= peak)
        if not len(open_) or budget <= 0:
            break
        if len(open_) > share:
            open_ = open_[np.argpartition(bound[open_], -share)[-share:]]
        peak = max(peak, _interpolated_peak(flat, first[open_], curvature[open_], peak))
        bound[open_] = -np.inf
        budget -= len(open_)
    return peak


def _block_bounds(flat: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """Per block of _TP_BLOCK points after samples start .. stop - 1: its first sample, and
    the two parts of the bound of the module docstring: the linear gain times the block's
    largest max(|x_n|, |x_n+1|), and the curvature gain times the largest second difference
    that its points read (centred on n - 4 .. n + 5: within the block and its neighbours).
    """
    frames = len(flat) // 2
    stop = min(stop, frames - _WINDOW + _BEFORE + 1)  # Later points' windows leave the stretch.
    if start >= stop:
        return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
    low, high = max(start - _BEFORE, 0), stop + _WINDOW - _BEFORE - 1
    audio = flat[2 * low : 2 * high]
    # Neighbours of one channel are 2 interleaved values apart. Value i of `curvature` is
    # centred on value i + 2 of `audio`.
    scratch = np.empty_like(audio)
    slope = np.subtract(audio[2:], audio[:-2], out=scratch[2:])
    curvature = slope[2:] - slope[:-2]
    np.abs(curvature, out=curvature)
    # The last block runs on to the end of `audio`, which only widens its bound.
    offsets = np.arange(2 * (start - low), 2 * (stop - low), 2 * _TP_BLOCK)
    peak = np.maximum.reduceat(np.abs(audio, out=scratch), offsets)
    peak[:-1] = np.maximum(peak[:-1], peak[1:])  # x_n+1 of a block's last point.
    steepest = np.maximum.reduceat(curvature, np.maximum(offsets - 2, 0))
    steepest[0] = max(steepest[0], curvature[: max(offsets[0] - 2, 0)].max(initial=0.0))
    spread = steepest.copy()
    spread[1:] = np.maximum(spread[1:], steepest[:-1])
    spread[:-1] = np.maximum(spread[:-1], steepest[1:])
    first = start + _TP_BLOCK * np.arange(len(offsets))
    return first, _LINEAR_GAIN * peak, _CURVATURE_GAIN * spread


def _interpolated_peak(
    flat: np.ndarray, firsts: np.ndarray, curvature: np.ndarray, floor: float
) -> float:
    """Largest |value| of the three between-sample branches over the points of the blocks
    starting at samples `firsts` whose own bound (with their block's `curvature` part)
    reaches `floor`; points whose window would leave the stretch are skipped."""
    frames = len(flat) // 2
    points = (2 * firsts[:, None] + np.arange(2 * _TP_BLOCK)).ravel()  # 2 n + channel.
    reach = np.repeat(curvature, 2 * _TP_BLOCK)
    inside = (points >= 2 * _BEFORE) & (points < 2 * (frames - _WINDOW + _BEFORE + 1))
    points, reach = points[inside], reach[inside]
    linear = _LINEAR_GAIN * np.maximum(np.abs(flat[points]), np.abs(flat[points + 2]))
    points = points[linear + reach >= floor]
    if not len(points):
        return 0.0
    # Row r: interleaved values r, r + 2, ..., one channel's window starting at value r.
    windows = as_strided(
        flat,
        shape=(len(flat) - 2 * (_WINDOW - 1), _WINDOW),
        strides=(flat.itemsize, 2 * flat.itemsize),
    )
    return float(np.abs(windows[points - 2 * _BEFORE] @ _BRANCHES).max())
