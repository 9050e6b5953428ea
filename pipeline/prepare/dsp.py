"""Signal conversion: any channel layout -> stereo, any rate -> 48 kHz (soxr), float -> PCM16.

Downmix happens before resampling (half the work for multichannel input). Each output
channel is a weighted sum whose weights add up to 1, so a downmix never raises the peak.
Known layouts (WAV channel order) follow the ITU-R BS.775 weights with LFE dropped; any other
count alternates channels left/right.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr

from audio_codecs.base import PCM16_SCALE

TARGET_RATE = 48_000
PCM16_MAX_FLOAT = 32767.0 / PCM16_SCALE  # Loudest float that survives 16-bit unclipped.

_CENTRE = 0.7071
_SURROUND = 0.7071
# Rows: left, right. Columns: the source channels in WAV (WAVEFORMATEXTENSIBLE) order.
_LAYOUTS = {
    3: [[1, 0, _CENTRE], [0, 1, _CENTRE]],  # L R C
    4: [[1, 0, _SURROUND, 0], [0, 1, 0, _SURROUND]],  # L R Ls Rs
    5: [[1, 0, _CENTRE, _SURROUND, 0], [0, 1, _CENTRE, 0, _SURROUND]],  # L R C Ls Rs
    6: [[1, 0, _CENTRE, 0, _SURROUND, 0], [0, 1, _CENTRE, 0, 0, _SURROUND]],  # 5.1
    8: [  # 7.1: L R C LFE Lb Rb Ls Rs
        [1, 0, _CENTRE, 0, _SURROUND, 0, _SURROUND, 0],
        [0, 1, _CENTRE, 0, 0, _SURROUND, 0, _SURROUND],
    ],
}


def downmix_matrix(channels: int) -> np.ndarray:
    """Weights `[channels, 2]` that turn `[frames, channels]` into stereo by a matmul."""
    if channels == 1:
        return np.ones((1, 2), dtype=np.float32)
    if channels == 2:
        return np.eye(2, dtype=np.float32)
    if channels in _LAYOUTS:
        weights = np.asarray(_LAYOUTS[channels], dtype=np.float64)
    else:
        weights = np.zeros((2, channels))
        weights[0, 0::2] = 1.0
        weights[1, 1::2] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.T.astype(np.float32)


def to_stereo(block: np.ndarray) -> np.ndarray:
    """`[frames, channels]` float32 -> `[frames, 2]` float32."""
    channels = block.shape[1]
    if channels == 2:
        return block
    if channels == 1:
        return np.repeat(block, 2, axis=1)
    return block @ downmix_matrix(channels)


def resampled_length(frames: int, source_rate: int, target_rate: int = TARGET_RATE) -> int:
    """Frames at `target_rate` for `frames` at `source_rate`, rounded to nearest (exact ints)."""
    return (frames * target_rate + source_rate // 2) // source_rate


def stereo_48k(blocks: Iterator[np.ndarray], source_rate: int) -> Iterator[np.ndarray]:
    """Stream source blocks to stereo 48 kHz float32 blocks `[frames, 2]`.

    soxr's streaming resampler has a warm-up delay and flushes on the last chunk; we trim or
    pad the tail so the total is exactly `resampled_length(total source frames)`, which makes
    the segment count depend only on the source's duration.
    """
    if source_rate == TARGET_RATE:
        for block in blocks:
            yield to_stereo(block)
        return
    resampler = soxr.ResampleStream(source_rate, TARGET_RATE, 2, dtype="float32", quality="HQ")
    source_frames = 0
    produced = 0
    for block in blocks:
        source_frames += len(block)
        out = resampler.resample_chunk(to_stereo(block), last=False)
        produced += len(out)
        if len(out):
            yield out
    tail = resampler.resample_chunk(np.zeros((0, 2), dtype=np.float32), last=True)
    # Before the flush soxr lags by its filter delay, so it never runs ahead of the ratio.
    missing = resampled_length(source_frames, source_rate) - produced
    if missing > 0:
        tail = tail[:missing]
        if len(tail) < missing:
            tail = np.concatenate([tail, np.zeros((missing - len(tail), 2), dtype=np.float32)])
        yield tail


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float `[-1, 1)` -> int16 with the 1/32768 convention readers use; clips the rest."""
    # One temporary, rounded and clipped in place: this runs over every stored sample.
    scaled = audio * np.float32(PCM16_SCALE)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype(np.int16)
