"""The simulated codec: a device that takes a set time per segment, and codes of a real shape.

The time is spent in `time.sleep`, which releases the CPU as a process waiting on a GPU
does, so the rest of the pipeline runs at the speed it would beside a real device. The
codes are a cheap deterministic function of each segment's length and a few of its
samples: the same shard gives the same table, shaped like the released model's codes.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from audio_codecs.base import (
    PIPELINE_SAMPLE_RATE,
    Codec,
    CodecInfo,
    CodecSpec,
    EncodedSegment,
)
from core.errors import InvalidSetting

_DIGEST_SAMPLES = 256  # Samples from each end of a segment that choose its codes.


@dataclass(frozen=True)
class CodeShape:
    """The code layout of a released model (frames per second, streams, codebooks)."""

    frame_rate: float
    channels: int
    num_codebooks: int
    codebook_size: int


# The shapes of each built-in codec's full-size preset: MuCodec official (one joint-stereo
# stream, 25 frames/s, one 16384-code book), DAC 44 kHz 8 kbps (a stream per channel,
# 9 books of 1024, 44100 / 512 frames/s), EnCodec 48 kHz at 24 kbps (joint stereo, 150
# frames/s, 16 books of 1024).
PRESETS = {
    "mucodec": CodeShape(25.0, 1, 1, 16384),
    "dac": CodeShape(44100 / 512, 2, 9, 1024),
    "encodec": CodeShape(150.0, 1, 16, 1024),
}
OPTIONS = ("device_ms",)  # Milliseconds the device holds each segment (default 0).


class SimulatedCodec(Codec):
    """Holds a batch `device_seconds` per segment, then returns its codes; like one GPU,
    it works on one batch at a time.

    Args:
        info: Provenance (codec "simulated", the shape's preset).
        device_seconds: Seconds the simulated device spends on one segment.
    """

    def __init__(self, info: CodecInfo, device_seconds: float) -> None:
        self._info, self.device_seconds = info, device_seconds
        self._device = threading.Lock()  # One device: concurrent calls take turns on it.

    @property
    def info(self) -> CodecInfo:
        """Provenance and the code layout of the preset's real codec."""
        return self._info

    @property
    def device(self) -> torch.device:
        """The CPU holds the tensors; the device itself is simulated."""
        return torch.device("cpu")

    def encode_pcm16(
        self,
        pcm: Sequence[Tensor],
        *,
        song_peaks: Sequence[float] | None = None,
        gains: Sequence[float] | None = None,
    ) -> list[EncodedSegment]:
        """The PCM as it is: a device would convert it, and its time is the sleep."""
        return self._hold([p.T for p in pcm])

    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """Codes `[channels * num_codebooks, frames]` per `[2, L]` segment."""
        return self._hold(segments)

    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """Refused: simulated codes stand for no audio."""
        raise InvalidSetting("the simulated codec's codes stand for no audio; nothing decodes them")

    def _hold(self, segments: Sequence[Tensor]) -> list[EncodedSegment]:
        with self._device:
            time.sleep(self.device_seconds * len(segments))
        return [self._codes(segment) for segment in segments]

    def _codes(self, segment: Tensor) -> EncodedSegment:
        info, samples = self._info, segment.shape[-1]
        frames = math.ceil(samples * info.frame_rate / PIPELINE_SAMPLE_RATE)
        ends = torch.cat([segment[..., :_DIGEST_SAMPLES], segment[..., -_DIGEST_SAMPLES:]], -1)
        digest = zlib.crc32(ends.contiguous().numpy().tobytes()) + samples
        count = info.channels * info.num_codebooks * frames
        codes = (digest + np.arange(count, dtype=np.int64) * 7919) % info.codebook_size
        return EncodedSegment(codes.astype(np.uint16).reshape(-1, frames))


def load(spec: CodecSpec) -> SimulatedCodec:
    """The simulated codec of `spec`: its preset's shape, option `device_ms` (>= 0).

    Raises:
        InvalidSetting: a checkpoint, an unknown option, or a `device_ms` that is not a
            non-negative number.
    """
    if spec.checkpoint is not None:
        raise InvalidSetting("the simulated codec has no weights; give a preset")
    unknown = sorted({name for name, _ in spec.options} - set(OPTIONS))
    if unknown:
        raise InvalidSetting(f"simulated: unknown option(s) {unknown}; known: {list(OPTIONS)}")
    text = spec.option("device_ms", "0")
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1.0
    if not milliseconds >= 0:
        raise InvalidSetting(f"simulated: device_ms={text!r} is not a number of ms >= 0")
    shape = PRESETS[spec.preset]
    info = CodecInfo(
        codec="simulated", preset=spec.preset, config=f"device_ms={milliseconds:g}",
        weights_sha256="", sample_rate=PIPELINE_SAMPLE_RATE, frame_rate=shape.frame_rate,
        channels=shape.channels, num_codebooks=shape.num_codebooks,
        codebook_size=shape.codebook_size,
    )  # fmt: skip
    return SimulatedCodec(info, milliseconds / 1000)
