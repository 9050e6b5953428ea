"""Integrated loudness (ITU-R BS.1770-4) exactly as the official DAC tool measures it.

The official `compress` measures loudness with audiotools' `Meter` on the CPU: K-weighting
by two biquads (pyloudnorm's coefficients, applied with torchaudio's `lfilter` in float32),
400 ms blocks with 75 % overlap (the last block zero-padded), an absolute gate at -70 LUFS
and a relative gate 10 LU below the absolutely-gated mean, channel weights 1 (1.41 for
channels 4 and 5), a result clamped to >= -70, and signals under 0.5 s zero-padded to
0.5 s first. This module repeats those steps in the same order and dtypes (the gating in
float64, as the Meter's float64 channel weights make it), so the result is bit-exact.

Legend: B batch, C channels, T samples, N blocks, W block length.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchaudio.functional import lfilter

from core.precision import float32_region

MIN_LOUDNESS = -70.0  # LUFS; the official clamp, also the absolute gate.
BLOCK_SECONDS = 0.400
OVERLAP = 0.75
MIN_SECONDS = 0.5  # Shorter signals are zero-padded to this for the measurement.
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: int) -> tuple[Tensor, Tensor]:
    """RBJ-cookbook biquad as pyloudnorm computes it: (b, a) normalised by a0, float32."""
    a_lin = 10 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * q)
    cos, root = np.cos(w0), 2 * np.sqrt(a_lin) * alpha
    if kind == "high_shelf":
        b = [
            a_lin * ((a_lin + 1) + (a_lin - 1) * cos + root),
            -2 * a_lin * ((a_lin - 1) + (a_lin + 1) * cos),
            a_lin * ((a_lin + 1) + (a_lin - 1) * cos - root),
        ]
        a = [
            (a_lin + 1) - (a_lin - 1) * cos + root,
            2 * ((a_lin - 1) - (a_lin + 1) * cos),
            (a_lin + 1) - (a_lin - 1) * cos - root,
        ]
    else:  # high_pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        a = [1 + alpha, -2 * cos, 1 - alpha]
    b_arr, a_arr = np.array(b) / a[0], np.array(a) / a[0]
    return torch.from_numpy(b_arr).float(), torch.from_numpy(a_arr).float()


def k_weighting(audio: Tensor, rate: int) -> Tensor:
    """The BS.1770 K-weighting filter (head shelf, then RLB high-pass), `[B, C, T]`."""
    for kind, gain_db, q, fc in (
        ("high_shelf", 4.0, 1 / np.sqrt(2), 1500.0),
        ("high_pass", 0.0, 0.5, 38.0),
    ):
        b, a = _biquad(kind, gain_db, q, fc, rate)
        audio = lfilter(audio, a, b, clamp=False)
    return audio


def _block_energies(filtered: Tensor, rate: int) -> Tensor:
    """Mean square of each 400 ms block, 75 % overlap: `[B, C, T]` -> `[B, C, N]` float32."""
    size = int(BLOCK_SECONDS * rate)
    step = int(BLOCK_SECONDS * rate * (1.0 - OVERLAP))
    length = filtered.shape[-1]
    n_blocks = math.ceil((max(length, size) - size) / step) + 1
    padded = F.pad(filtered, (0, (n_blocks - 1) * step + size - length)).contiguous()
    batch, channels, _ = padded.shape
    blocks = padded.as_strided(
        (batch, channels, n_blocks, size), (*padded.stride()[:2], step, 1)
    ).transpose(-1, -2)  # [B, C, W, N]
    return (1.0 / (BLOCK_SECONDS * rate)) * blocks.square().sum(2)


def integrated_loudness(audio: Tensor, rate: int) -> Tensor:
    """Integrated loudness per batch item, as the official `AudioSignal.loudness()`.

    Args:
        audio: `[B, C, T]` float at `rate`.
        rate: Sample rate (Hz).

    Returns:
        LUFS `[B]` float32, clamped to >= -70.
    """
    with float32_region(audio.device):  # Never autocast: the gates compare small energies.
        return _integrated_loudness(audio.float(), rate)


def _integrated_loudness(audio: Tensor, rate: int) -> Tensor:
    """`integrated_loudness` of float32 `[B, C, T]`."""
    length = audio.shape[-1]
    if length / rate < MIN_SECONDS:
        audio = F.pad(audio, (0, int((MIN_SECONDS - length / rate) * rate)))
    channels = audio.shape[1]
    weights = torch.tensor(_CHANNEL_WEIGHTS, dtype=torch.float64)[:channels]
    energy = _block_energies(k_weighting(audio, rate), rate)  # [B, C, N]
    # Block loudness over channels, in float64 (the weights are float64): [B, C, N].
    block_db = -0.691 + 10.0 * torch.log10((weights[None, :, None] * energy).sum(1, keepdim=True))
    block_db = block_db.expand_as(energy)
    # Absolute gate, then the relative threshold from the absolutely-gated mean.
    absolute = block_db > MIN_LOUDNESS
    energy = torch.where(absolute, energy, torch.zeros_like(energy))
    mean = energy.sum(2) / absolute.sum(2)  # [B, C]
    relative = -0.691 + 10.0 * torch.log10((mean * weights[None]).sum(-1)) - 10.0  # [B]
    kept = absolute * (block_db > relative[:, None, None])
    energy = torch.where(kept, energy, torch.zeros_like(energy))
    mean = energy.sum(2) / kept.sum(2)
    mean = torch.where(mean.isnan(), torch.zeros_like(mean), mean)
    finfo = np.finfo(np.float32)
    mean = mean.clamp(float(finfo.min), float(finfo.max))
    lufs = (-0.691 + 10.0 * torch.log10((weights[None] * mean).sum(1))).float()  # [B]
    return torch.maximum(lufs, torch.full_like(lufs, MIN_LOUDNESS))


def gain_to(target_db: Tensor | float, measured_db: Tensor) -> Tensor:
    """The official `AudioSignal.normalize` factor: exp((target - measured) * ln10 / 20)."""
    return torch.exp((target_db - measured_db) * (math.log(10) / 20))
