"""DAC as a codec plugin: `transformers.DacModel`, its official `.pth`, its presets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audio_codecs.base import Codec, CodecSpec
from audio_codecs.dac import checkpoint, codec
from audio_codecs.plugin import CodecPlugin


class DacPlugin(CodecPlugin):
    """DAC: decodes with the model that made the codes (from `--checkpoint dac=PATH` when
    the tables were made from a checkpoint); the official `.pth` names its own model."""

    name = "dac"
    presets = codec.PRESETS
    tiny_preset = "tiny"
    full_size_preset = "44khz_8kbps"

    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """The DAC codec of `spec`."""
        return codec.load(spec, device)

    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """The official `.pth` (`--source`) into our directory; its metadata names the model,
        so `preset` is not needed."""
        return checkpoint.convert_official(sources["source"], output)


PLUGIN = DacPlugin()
