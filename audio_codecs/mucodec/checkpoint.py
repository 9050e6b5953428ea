"""MuCodec's official tokenizer weights -> our checkpoint directory.

The tokenizer's weights are two official files: `mucodec.pt` (which holds the RVQ, and
sometimes the MuQ encoder under `muencoder.*`) and MuQ's `muq.pt` (fairseq). Both are read
without executing pickled code, every key and shape verified against the official layout
(`mucodec.encoder.checkpoint`), and only what the configured encoder layer needs is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.checkpoint_dir import sha256_file
from core.errors import UsageError
from mucodec.encoder import checkpoint as encoder_checkpoint
from mucodec.encoder.config import PRESETS, preset
from mucodec.encoder.tokenizer import MuCodecTokenizer

DEFAULT_PRESET = "official"


def convert_official(
    sources: Mapping[str, str], output: Path, preset_name: str | None
) -> dict[str, Any]:
    """Loads the official files strictly and writes our checkpoint directory `output`.

    Args:
        sources: "mucodec" (required) and "muq" (optional when mucodec.pt carries
            `muencoder.*`) -> the official files.
        output: The directory to write.
        preset_name: The tokenizer config the weights are of (default "official").

    Returns:
        A summary: output path, weights sha256, tensor count and the sources' sha256.

    Raises:
        UsageError: an unknown preset.
        CheckpointError: the official files do not verify.
    """
    name = preset_name or DEFAULT_PRESET
    if name not in PRESETS:
        raise UsageError(f"--preset {name}: not a MuCodec preset ({', '.join(PRESETS)})")
    config = preset(name)
    tokenizer = MuCodecTokenizer.from_checkpoint(
        muq=sources.get("muq"), mucodec=sources["mucodec"], config=config, hash_official=False
    )
    files = {
        role: {"file": Path(path).name, "sha256": sha256_file(path)}
        for role, path in sorted(sources.items())
    }
    state = tokenizer.state_dict()
    digest = encoder_checkpoint.save_converted(output, config, state, files)
    return {"output": str(output), "sha256": digest, "tensors": len(state), "sources": files}
