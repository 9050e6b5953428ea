"""EnCodec as a codec plugin: `transformers.EncodecModel`, its official `.th`, its presets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audio_codecs.base import Codec, CodecSpec
from audio_codecs.encodec import checkpoint, codec
from audio_codecs.plugin import CodecPlugin
from core.errors import UsageError


class EncodecPlugin(CodecPlugin):
    """EnCodec: decodes with the model that made the codes; the official `.th` is a bare
    state dict, so converting it needs the preset of its model (24khz or 48khz)."""

    name = "encodec"
    presets = codec.PRESETS
    tiny_preset = "tiny"
    full_size_preset = "48khz"

    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """The EnCodec codec of `spec`."""
        return codec.load(spec, device)

    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """The official `.th` (`--source`) of the `preset` model into our directory."""
        if preset not in self.presets:
            raise UsageError(f"--codec encodec needs --preset, one of {', '.join(self.presets)}")
        return checkpoint.convert_official(sources["source"], output, preset)


PLUGIN = EncodecPlugin()
