"""The official EnCodec `encode` / `decode` on `transformers.EncodecModel`, chunk by chunk.

transformers' own `EncodecModel.encode` pads only the last chunk before stacking and raises
when two chunks are short (e.g. 95,140 samples at 48 kHz); its feature extractor pads to
whole chunks, which changes frames and scales. So the chunk loop is ours, around the
model's encoder, quantiser and decoder, and gives the official codes bit for bit:

    offsets = range(0, n, stride)                      # stride = int((1 - overlap) * segment)
    chunk   = x[..., o : o + segment]                  # not padded
    scale   = 1e-8 + RMS(mean over channels of chunk)  # 48 kHz (normalize); none at 24 kHz
    codes   = quantizer(encoder(chunk / scale))        # [B, K, T_chunk]
    decode  = overlap_add([decoder(codes_i) * scale_i], stride)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import EncodecModel

from audio_codecs.encodec.config import EncodecCodecConfig
from audio_codecs.encodec.signal import chunk_offsets, chunk_scale, linear_overlap_add
from core.precision import autocast_dtype

__all__ = ["Frame", "decode_frames", "encode_frames", "quantize"]


@dataclass(frozen=True)
class Frame:
    """One chunk's codes, as the official `encode` returns them per chunk.

    Attributes:
        codes: int64 `[B, K, T]`.
        scale: float32 `[B]`, what the chunk was divided by; None without `normalize`.
    """

    codes: Tensor
    scale: Tensor | None


@contextlib.contextmanager
def _autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to the precision's dtype for the SEANet convs (no-op for float32)."""
    dtype = autocast_dtype(precision)
    if dtype is None or not torch.amp.is_autocast_available(device.type):
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def quantize(model: EncodecModel, embeddings: Tensor, n_q: int) -> Tensor:
    """Residual vector quantisation with the first `n_q` codebooks, in float32.

    Args:
        model: The model whose codebooks to use.
        embeddings: `[B, D, T]`.
        n_q: Codebooks to use.

    Returns:
        int64 codes `[n_q, B, T]` (the official quantiser's order).
    """
    residual = embeddings.float()
    codes = []
    for layer in model.quantizer.layers[:n_q]:
        indices = layer.encode(residual)  # [B, T], nearest code (Euclidean)
        residual = residual - layer.decode(indices)  # [B, D, T]
        codes.append(indices)
    return torch.stack(codes)


@torch.no_grad()
def encode_frames(
    model: EncodecModel,
    config: EncodecCodecConfig,
    audio: Tensor,
    n_q: int,
    precision: str = "float32",
) -> list[Frame]:
    """The official `EncodecModel.encode`: one `Frame` per chunk.

    Args:
        model: The model, in eval mode, on the device of `audio`.
        config: Its config (chunking, normalisation).
        audio: `[B, C, n]` at the model's rate with its channel count.
        n_q: Codebooks to use (see `codebooks_for_bandwidth`).
        precision: Autocast dtype of the encoder; the quantiser always runs in float32.

    Returns:
        The chunks' frames, in time order.
    """
    length = config.segment_length or audio.shape[-1]
    frames = []
    for offset in chunk_offsets(audio.shape[-1], config.segment_stride):
        chunk = audio[..., offset : offset + length]  # [B, C, n_i]
        scale = None
        if config.normalize:
            scale = chunk_scale(chunk)  # [B, 1, 1]
            chunk = chunk / scale
        with _autocast(audio.device, precision):
            embeddings = model.encoder(chunk)  # [B, D, ceil(n_i / hop)]
        codes = quantize(model, embeddings, n_q).transpose(0, 1)  # [B, K, T_i]
        frames.append(Frame(codes, None if scale is None else scale.reshape(-1)))
    return frames


@torch.no_grad()
def decode_frames(
    model: EncodecModel,
    config: EncodecCodecConfig,
    frames: Sequence[Frame],
    precision: str = "float32",
) -> Tensor:
    """The official `EncodecModel.decode`: each chunk decoded and rescaled, then joined.

    Args:
        model: The model, in eval mode.
        config: Its config (chunk stride).
        frames: Frames from `encode_frames` (codes on the model's device).
        precision: Autocast dtype of the decoder.

    Returns:
        float32 `[B, C, stride * (n_chunks - 1) + hop * T_last]`; at least as long as the
        input (the last chunk is rounded up to whole frames).
    """
    decoded = []
    for frame in frames:
        embeddings = model.quantizer.decode(frame.codes.transpose(0, 1))  # [B, D, T_i]
        with _autocast(frame.codes.device, precision):
            audio = model.decoder(embeddings).float()  # [B, C, hop * T_i]
        if frame.scale is not None:
            audio = audio * frame.scale.view(-1, 1, 1)
        decoded.append(audio)
    return linear_overlap_add(decoded, config.segment_stride or 1)
