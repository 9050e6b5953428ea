"""Reconstruction metrics of the spot-check: how much of a segment the tokens keep.

* Multi-scale mel distance and multi-scale STFT distance as the DAC paper's losses define
  them (Kumar et al., 2023, section 4 and the released training config): L1 between log10
  magnitudes (clamped at 1e-5) over several window sizes, hop = window / 4, Hann windows.
* SI-SDR (Le Roux et al., 2019), in dB; generative decoders do not keep phase, so expect it
  to be low even when the audio sounds right.
* Loudness difference: integrated loudness per ITU-R BS.1770-4 (K-weighting, 400 ms blocks
  with 75 % overlap, -70 LUFS absolute and -10 LU relative gates), reconstruction minus
  reference, in LU.

All functions take float32 waveforms `[channels, samples]` at 48 kHz.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torchaudio
from scipy.signal import lfilter

SAMPLE_RATE = 48_000
# DAC's MelSpectrogramLoss configuration.
MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
# DAC's MultiScaleSTFTLoss configuration.
STFT_WINDOWS = (2048, 512)
CLAMP = 1e-5


def _stft_magnitude(audio: torch.Tensor, window: int) -> torch.Tensor:
    return torch.stft(
        audio,
        n_fft=window,
        hop_length=window // 4,
        window=torch.hann_window(window, device=audio.device),
        return_complex=True,
    ).abs()


def multiscale_mel_distance(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Sum over scales of mean |log10 mel(ref) - log10 mel(est)| (DAC: pow 1, log weight 1)."""
    total = 0.0
    for window, bands in zip(MEL_WINDOWS, MEL_BANDS, strict=True):
        with warnings.catch_warnings():
            # DAC's smallest scales (5 bands over 17 bins) leave some filters empty, by design.
            warnings.simplefilter("ignore", UserWarning)
            filters = torchaudio.functional.melscale_fbanks(
                window // 2 + 1, 0.0, SAMPLE_RATE / 2, bands, SAMPLE_RATE, norm="slaney",
                mel_scale="slaney",
            )  # fmt: skip
        mel_ref = (_stft_magnitude(reference, window).transpose(-1, -2) @ filters).clamp(CLAMP)
        mel_est = (_stft_magnitude(estimate, window).transpose(-1, -2) @ filters).clamp(CLAMP)
        total += float((mel_ref.log10() - mel_est.log10()).abs().mean())
    return total


def multiscale_stft_distance(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Sum over scales of L1(log10 |X|^2) + L1(|X|^2) (DAC: pow 2, both weights 1)."""
    total = 0.0
    for window in STFT_WINDOWS:
        power_ref = _stft_magnitude(reference, window).clamp(CLAMP).pow(2)
        power_est = _stft_magnitude(estimate, window).clamp(CLAMP).pow(2)
        total += float((power_ref.log10() - power_est.log10()).abs().mean())
        total += float((power_ref - power_est).abs().mean())
    return total


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant SDR in dB over all channels; -inf-safe for silent references."""
    reference = reference.double().flatten() - reference.double().mean()
    estimate = estimate.double().flatten() - estimate.double().mean()
    energy = float(reference @ reference)
    if energy == 0.0:
        return float("nan")
    scale = float(estimate @ reference) / energy
    target = scale * reference
    noise = estimate - target
    return 10 * math.log10(max(float(target @ target), 1e-20) / max(float(noise @ noise), 1e-20))


# BS.1770-4 K-weighting at 48 kHz: a high-shelf pre-filter, then the RLB high-pass.
_SHELF_B = np.array([1.53512485958697, -2.69169618940638, 1.19839281085285])
_SHELF_A = np.array([1.0, -1.69065929318241, 0.73248077421585])
_HIGHPASS_B = np.array([1.0, -2.0, 1.0])
_HIGHPASS_A = np.array([1.0, -1.99004745483398, 0.99007225036621])


def integrated_loudness(audio: torch.Tensor) -> float:
    """BS.1770-4 integrated loudness in LUFS; -inf for silence or audio under 400 ms."""
    signal = audio.double().cpu().numpy()
    weighted = lfilter(_HIGHPASS_B, _HIGHPASS_A, lfilter(_SHELF_B, _SHELF_A, signal, axis=-1))
    block, step = int(0.4 * SAMPLE_RATE), int(0.1 * SAMPLE_RATE)
    if weighted.shape[-1] < block:
        return float("-inf")
    starts = range(0, weighted.shape[-1] - block + 1, step)
    # Mean square per block, summed over channels (L and R weigh 1.0).
    power = np.array([(weighted[:, s : s + block] ** 2).mean(axis=-1).sum() for s in starts])
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(power)
    gated = power[loudness > -70.0]
    if len(gated) == 0:
        return float("-inf")
    relative_gate = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    gated = power[(loudness > -70.0) & (loudness > relative_gate)]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def reconstruction_metrics(reference: torch.Tensor, estimate: torch.Tensor) -> dict[str, float]:
    """All spot-check metrics of `estimate` against `reference` (trimmed to equal length)."""
    length = min(reference.shape[-1], estimate.shape[-1])
    reference, estimate = reference[..., :length].float(), estimate[..., :length].float()
    return {
        "mel_distance": multiscale_mel_distance(reference, estimate),
        "stft_distance": multiscale_stft_distance(reference, estimate),
        "si_sdr_db": si_sdr(reference, estimate),
        "loudness_diff_lu": integrated_loudness(estimate) - integrated_loudness(reference),
    }
