"""The true peak of interleaved stereo audio: its 4x-oversampled maximum, found cheaply.

4x oversampling (ITU-R BS.1770-4 Annex 2) with a 49-tap Kaiser-windowed sinc whose polyphase
branch 0 is the samples themselves, so only the three branches between samples need
computing, and only where they can beat the sample peak. A branch value is a linear
interpolation of its two neighbouring samples plus the window's second differences weighted
by fixed taps (summation by parts), so it is at most max(|x_n|, |x_n+1|) times the linear
part's gain plus the largest second difference nearby times those taps' L1 norm. That
bound, per block of 64 points, selects the few places worth interpolating even in loud
masters whose samples are near full scale everywhere (where the plain bound, window peak
times the branch's L1 norm, selects nearly every sample). The screen and the interpolation
run in C (`quality_kernels.true_peak`); the result is exact. Interpolated points whose
12-sample window would run off either end of the stretch (6 at each end) are skipped.
"""

from __future__ import annotations

import numpy as np
import quality_kernels

_OVERSAMPLE = 4
_INTERPOLATION_TAPS = 49
_WINDOW = (_INTERPOLATION_TAPS - 1) // _OVERSAMPLE  # Input samples under one branch: 12.
_BEFORE = _WINDOW // 2 - 1  # Samples before x_n in the window of the points after x_n: 5.


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


def true_peak(flat: np.ndarray, sample_peak: float) -> float:
    """Largest |value| of the 4x-oversampled interleaved float32 audio `flat` (C order),
    given its sample peak."""
    if sample_peak == 0.0:
        return 0.0
    frames = len(flat) // 2
    return quality_kernels.true_peak(
        flat, frames, _BRANCHES, _LINEAR_GAIN, _CURVATURE_GAIN, sample_peak
    )
