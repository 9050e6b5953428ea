"""The simulated codec as a plugin: one preset per real codec's code shape, no weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audio_codecs.base import Codec, CodecSpec
from audio_codecs.plugin import CodecPlugin
from audio_codecs.simulated import codec
from core.errors import UsageError


class SimulatedPlugin(CodecPlugin):
    """A codec for measuring the pipeline around a device (`--codec simulated`)."""

    name = "simulated"
    presets = tuple(codec.PRESETS)
    tiny_preset = "mucodec"
    full_size_preset = "mucodec"

    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """The simulated codec of `spec` (the device is simulated, so `device` is unused)."""
        return codec.load(spec)

    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """Refused: there are no weights to convert."""
        raise UsageError("the simulated codec has no weights to convert")


PLUGIN = SimulatedPlugin()
