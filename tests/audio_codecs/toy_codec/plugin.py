"""The toy codec as a plugin: presets, load, and conversion of its JSON "official" file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audio_codecs.base import Codec, CodecSpec
from audio_codecs.plugin import CodecPlugin
from core.checkpoint_dir import sha256_file, write_checkpoint_dir
from tests.audio_codecs.toy_codec import codec


class ToyPlugin(CodecPlugin):
    """Decodes with the model that made the codes (the defaults of `CodecPlugin`)."""

    name = "toy"
    presets = tuple(codec.PRESETS)
    tiny_preset = "tiny"
    full_size_preset = "full"

    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """The toy codec of `spec`."""
        return codec.load(spec, device)

    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """`{"scale": x}` of its official JSON file, with the config of `preset`."""
        scale = json.loads(Path(sources["source"]).read_text())["scale"]
        config = codec.PRESETS[preset or "full"]
        source = {"file": Path(sources["source"]).name, "sha256": sha256_file(sources["source"])}
        digest = write_checkpoint_dir(
            output, codec.FORMAT, codec.FORMAT_VERSION, config.to_dict(),
            {"scale": torch.tensor(float(scale))}, {"source": source},
        )  # fmt: skip
        return {"output": str(output), "sha256": digest, "tensors": 1, "sources": source}


PLUGIN = ToyPlugin()
