"""DAC weights from three sources, each loaded strictly into a `DacModel`.

* An official `.pth` (`{"state_dict", "metadata": {"kwargs"}}`, `torch.save` zip), read by
  `core.safe_load` (nothing in the file is executed), its kwargs giving the config, every
  key going through `official_keys` (weight norm folded, one key map). The official
  `DAC.load` is not strict; this is. `convert_official` turns it into our directory.
* Our converted directory (`core.checkpoint_dir`, format "dac-codec"), sha256-checked.
* A local Hugging Face model directory (`config.json` + `model.safetensors`), read with
  `local_files_only=True`; weight-normed convs in it are folded the same way.

Every loader reports every missing, unexpected and mis-shaped key at once (`load_strict`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import DacConfig, DacModel

from audio_codecs.dac.config import DacCodecConfig
from audio_codecs.dac.model import build_model
from audio_codecs.dac.official_keys import fold_shapes, fold_weight_norm, official_key_map
from core.checkpoint_dir import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_checkpoint_dir,
    sha256_file,
    write_checkpoint_dir,
)
from core.key_map import (
    CheckpointError,
    as_tensor_dict,
    check_state,
    compare_shapes,
    load_strict,
    map_state,
)
from core.safe_load import load_checkpoint

FORMAT = "dac-codec"
FORMAT_VERSION = 1


def read_official(path: str | Path) -> tuple[DacCodecConfig, dict[str, Tensor]]:
    """An official `.pth` as (config, our state dict), never unpickling code.

    Args:
        path: The official weights file (e.g. `weights_44khz_8kbps_0.0.1.pth`).

    Returns:
        The config from `metadata["kwargs"]` and the state dict under `DacModel`'s names.

    Raises:
        CheckpointError: if the file is not the official layout, its kwargs are not plain
            data or not expressible, or a key has no rule.
    """
    source = str(path)
    content = load_checkpoint(path)
    if not isinstance(content, Mapping) or not {"state_dict", "metadata"} <= set(content):
        raise CheckpointError(f"{source}: expected a dict with 'state_dict' and 'metadata'")
    metadata = content["metadata"]
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("kwargs"), Mapping):
        raise CheckpointError(f"{source}: metadata has no 'kwargs' dict")
    config = DacCodecConfig.from_official_kwargs(metadata["kwargs"], source)
    state = fold_weight_norm(as_tensor_dict(content["state_dict"], source), source)
    return config, map_state(state, official_key_map(len(config.encoder_rates)), source=source)


def check_official_shapes(
    kwargs: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Problems between an official {key: shape} manifest and our model of its kwargs.

    Builds `DacModel` on the meta device, maps the manifest through the key map.

    Args:
        kwargs: The official constructor kwargs.
        shapes: Official key -> shape (weight-norm pairs included).

    Returns:
        The disagreements (empty when every key and shape agrees).

    Raises:
        CheckpointError: if the kwargs cannot be expressed (e.g. 44khz_16kbps).
    """
    config = DacCodecConfig.from_official_kwargs(kwargs)
    model = build_model(config, seed=None, device="meta")
    mapped = map_state(fold_shapes(shapes), official_key_map(len(config.encoder_rates)))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return compare_shapes(expected, mapped)


def convert_official(pth_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Converts an official `.pth` into our checkpoint directory (for `jobs.convert_checkpoint`).

    Args:
        pth_path: The official weights file.
        out_dir: Directory to write (`model.safetensors`, `config.json`, checksum).

    Returns:
        A summary: format, out_dir, sha256 of our weights, sha256 of the source, tensor
        count and the config.

    Raises:
        CheckpointError: if the file does not fit the model of its own kwargs exactly.
    """
    config, state = read_official(pth_path)
    check_state(build_model(config, seed=None, device="meta"), state, str(pth_path))
    source_sha = sha256_file(pth_path)
    sources = {"official_file": Path(pth_path).name, "official_sha256": source_sha}
    digest = write_checkpoint_dir(
        out_dir, FORMAT, FORMAT_VERSION, config.to_dict(), state, sources=sources
    )
    return {
        "format": FORMAT,
        "out_dir": str(out_dir),
        "sha256": digest,
        "source_sha256": source_sha,
        "tensors": len(state),
        "config": config.to_dict(),
    }


def _hf_state(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """A Hugging Face state dict with any weight norm (old-style or parametrised) folded."""
    renamed = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        renamed[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    return fold_weight_norm(renamed, source)


def is_converted_dir(directory: str | Path) -> bool:
    """Whether `directory` is one of ours (its `config.json` names our format)."""
    header = Path(directory) / CONFIG_FILE
    if not header.is_file():
        return False
    try:
        return json.loads(header.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, AttributeError):
        return False


def load_checkpoint_dir(
    directory: str | Path, device: torch.device | str = "cpu"
) -> tuple[DacModel, DacCodecConfig, str]:
    """A model from our converted directory or a local Hugging Face directory, strictly.

    Args:
        directory: Our directory (format "dac-codec") or a Hugging Face one
            (`config.json` + `model.safetensors`); nothing is downloaded.
        device: Where the model goes.

    Returns:
        (model in eval mode, its config, sha256 of the weights file).

    Raises:
        CheckpointError: on a missing file, a changed hash, or any key or shape mismatch.
    """
    directory = Path(directory)
    if is_converted_dir(directory):
        header, state = read_checkpoint_dir(directory, FORMAT, FORMAT_VERSION)
        config = DacCodecConfig.from_dict(header["config"])
        digest = header["sha256"]
    else:
        weights = directory / WEIGHTS_FILE
        if not (directory / CONFIG_FILE).is_file() or not weights.is_file():
            raise CheckpointError(
                f"{directory}: neither our converted DAC checkpoint nor a Hugging Face "
                f"directory ({CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        hf = DacConfig.from_pretrained(str(directory), local_files_only=True)
        config = DacCodecConfig.from_hf(hf)
        state = _hf_state(load_file(str(weights)), str(weights))
        digest = sha256_file(weights)
    model = build_model(config, seed=None, device="meta")
    load_strict(model, state, str(directory))
    return model.to(device).eval(), config, digest
