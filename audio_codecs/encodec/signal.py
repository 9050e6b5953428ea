"""The signal arithmetic of EnCodec around the network: chunks, scales, overlap-add, rates.

Pure tensor functions, each the official algorithm (`encodec/model.py`, `encodec/utils.py`)
written out, so that the model code can read top to bottom.
"""

from __future__ import annotations

import torch
from torch import Tensor

from audio_codecs.resampling import SincResampler

__all__ = [
    "RESAMPLER",
    "chunk_offsets",
    "chunk_scale",
    "linear_overlap_add",
    "to_mono",
]

# torchaudio's windowed-sinc resampler with julius' defaults (the official CLI's
# `convert_audio` uses `julius.resample_frac`: 24 zero crossings, roll-off 0.945).
RESAMPLER = SincResampler(lowpass_filter_width=24, rolloff=0.945)

SCALE_FLOOR = 1e-8  # Added to every chunk's RMS, as the official `_encode_frame` does.


def chunk_offsets(n_samples: int, stride: int | None) -> list[int]:
    """Start samples of the chunks: `range(0, n, stride)`, or `[0]` without chunking.

    Args:
        n_samples: Input length.
        stride: Samples between chunk starts, or None for one chunk holding everything.

    Returns:
        The offsets; each chunk is `x[..., o : o + segment_length]`, not padded.
    """
    if stride is None:
        return [0]
    return list(range(0, n_samples, stride))


def chunk_scale(chunk: Tensor) -> Tensor:
    """The official per-chunk normalisation: `1e-8 + RMS over time of the channel mean`.

    Args:
        chunk: `[B, C, n]`.

    Returns:
        `[B, 1, 1]`, the factor the chunk is divided by before encoding.
    """
    mono = chunk.mean(dim=1, keepdim=True)  # [B, 1, n]
    return SCALE_FLOOR + mono.pow(2).mean(dim=2, keepdim=True).sqrt()


def linear_overlap_add(frames: list[Tensor], stride: int) -> Tensor:
    """Joins decoded chunks with triangular weights, as the official `_linear_overlap_add`.

    The weight is a triangle over the first chunk's length (`linspace(0, 1, n + 2)[1:-1]`,
    peaking mid-chunk); a shorter chunk uses its first samples. Every position is divided by
    the sum of the weights covering it, so a position only one chunk covers is unchanged.

    Args:
        frames: Decoded chunks `[..., n_i]`, in order, starting `stride` samples apart.
        stride: Samples between chunk starts.

    Returns:
        `[..., stride * (len(frames) - 1) + n_last]`.
    """
    if not frames:
        raise ValueError("linear_overlap_add: no frames")
    first = frames[0]
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    t = torch.linspace(0, 1, first.shape[-1] + 2, device=first.device, dtype=first.dtype)[1:-1]
    weight = 0.5 - (t - 0.5).abs()  # [n_0], the triangle
    out = torch.zeros(*first.shape[:-1], total, device=first.device, dtype=first.dtype)
    weight_sum = torch.zeros(total, device=first.device, dtype=first.dtype)
    for i, frame in enumerate(frames):
        start, n = i * stride, frame.shape[-1]
        out[..., start : start + n] += weight[:n] * frame
        weight_sum[start : start + n] += weight[:n]
    if weight_sum.min() <= 0:
        raise ValueError("linear_overlap_add: a position no chunk covers (stride too long)")
    return out / weight_sum


def to_mono(audio: Tensor) -> Tensor:
    """Averages the channels (`[..., C, n]` -> `[..., 1, n]`), as the official `convert_audio`."""
    return audio.mean(dim=-2, keepdim=True)
