"""The toy codec: 100 frames/s, one stream of two codebooks, mu-law codes of block means."""

from __future__ import annotations

import json
import math
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
    random_weights,
)
from core.checkpoint_dir import read_checkpoint_dir
from core.config import JsonConfig

FORMAT, FORMAT_VERSION = "toy-codec", 1
BLOCK = 480  # Samples per frame at 48 kHz: 100 frames/s.


@dataclass(frozen=True)
class ToyConfig(JsonConfig):
    """Codebook size (levels of the mu-law quantiser) and mu."""

    levels: int = 256
    mu: float = 255.0


PRESETS = {"tiny": ToyConfig(levels=64, mu=63.0), "full": ToyConfig()}


class ToyCodec(Codec):
    """Codebook 0: the block mean of the channel mean; codebook 1: the block's peak."""

    def __init__(self, config: ToyConfig, info: CodecInfo, scale: float) -> None:
        self.config, self.scale, self._info = config, scale, info

    @property
    def info(self) -> CodecInfo:
        """Provenance: one stream of two codebooks."""
        return self._info

    @property
    def device(self) -> torch.device:
        """The CPU: there is no model."""
        return torch.device("cpu")

    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """Codes `[2, L // 480]` uint16 per segment."""
        out = []
        for segment in segments:
            mono = segment.float().mean(0)[: segment.shape[-1] // BLOCK * BLOCK]
            blocks = mono.reshape(-1, BLOCK) * self.scale
            rows = [self._quantise(blocks.mean(-1)), self._quantise(blocks.abs().amax(-1))]
            out.append(EncodedSegment(np.stack(rows).astype(np.uint16)))
        return out

    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """A step signal of each block's mean, on both channels."""
        out = []
        for segment in encoded:
            means = self._dequantise(torch.from_numpy(segment.codes[0].astype(np.int64)))
            out.append((means / self.scale).repeat_interleave(BLOCK).expand(2, -1).contiguous())
        return out

    def _quantise(self, x: Tensor) -> Tensor:
        mu = self.config.mu
        y = torch.sign(x) * torch.log1p(mu * x.abs().clamp(max=1)) / math.log1p(mu)
        return ((y + 1) / 2 * (self.config.levels - 1)).round().long()

    def _dequantise(self, codes: Tensor) -> Tensor:
        mu = self.config.mu
        y = codes.float() / (self.config.levels - 1) * 2 - 1
        return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def load(spec: CodecSpec, device: torch.device) -> ToyCodec:
    """A preset (its 'random weights': a scale drawn from the seed) or our checkpoint."""
    if spec.checkpoint is not None:
        header, state = read_checkpoint_dir(spec.checkpoint, FORMAT, FORMAT_VERSION)
        config, preset, weights = ToyConfig.from_dict(header["config"]), "", header["sha256"]
        scale = float(state["scale"])
    else:
        config, preset, weights = PRESETS[spec.preset], spec.preset, random_weights(spec.seed)
        scale = 1.0 + torch.rand(1, generator=torch.Generator().manual_seed(spec.seed)).item()
    info = CodecInfo(
        codec="toy", preset=preset, config=json.dumps(config.to_dict()), weights_sha256=weights,
        sample_rate=PIPELINE_SAMPLE_RATE, frame_rate=PIPELINE_SAMPLE_RATE / BLOCK, channels=1,
        num_codebooks=2, codebook_size=config.levels,
    )  # fmt: skip
    return ToyCodec(config, info, scale)
