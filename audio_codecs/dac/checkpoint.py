"""DAC weights on disk: official `.pth` files, our converted directory, Hugging Face ones.

All three load strictly into a `DacModel` (`core.key_map.load_strict`: every missing,
unexpected and mis-shaped key at once); the official `DAC.load` is not strict.

* An official `.pth` (`{"state_dict", "metadata": {"kwargs"}}`, `torch.save` zip), read by
  `core.safe_load` (nothing in the file is executed), its kwargs giving the config, weight
  norm folded and every key renamed by `official_key_map`. `convert_official` turns it
  into our directory.
* Our converted directory (`core.checkpoint_dir`, format "dac-codec"), sha256-checked.
* A local Hugging Face model directory (`config.json` + `model.safetensors`), read with
  `local_files_only=True`; weight-normed convs in it are folded the same way.

`load_converted` reads either directory into a `LoadedModel`.

Weight norm: the official model stores each conv with the old-style weight norm
(`weight_g`, `weight_v`, dim 0); `DacModel` has a plain `weight`. `fold_weight_norm`
computes the effective weight as the official forward does, `torch._weight_norm(v, g, 0)`
(bit-exact), and names it `<conv>.weight`.

Key map: the official modules are numbered by position (`nn.Sequential`): the encoder has
its first conv at `block.0`, one EncoderBlock per stride at `block.1..n`, then a Snake and
the last conv at `block.n+1`, `block.n+2`; the decoder likewise under `model.*`. So the
table is written for a given number of strides n, with literal indices (the key-map
language fills `{}` with the same index, and ours are shifted by one). transformers' own
converter hard-codes n = 4.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import DacConfig, DacModel

from audio_codecs.dac.config import DacCodecConfig
from audio_codecs.dac.model import build_model
from core.checkpoint_dir import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_checkpoint_dir,
    sha256_file,
    write_checkpoint_dir,
)
from core.errors import CheckpointError
from core.key_map import (
    KeyMap,
    as_tensor_dict,
    check_state,
    compare_shapes,
    load_strict,
    map_state,
)
from core.safe_load import load_checkpoint

FORMAT = "dac-codec"
FORMAT_VERSION = 1

# Inside a ResidualUnit: Snake, dilated k7 conv, Snake, k1 conv.
_RESIDUAL_UNIT = {"block.0": "snake1", "block.1": "conv1", "block.2": "snake2", "block.3": "conv2"}


@dataclass(frozen=True)
class LoadedModel:
    """A model with its config and the sha256 of the file its weights came from.

    Attributes:
        model: The filled model, on the device it was loaded to, in eval mode.
        config: Its shape.
        sha256: sha256 of the weights file.
    """

    model: DacModel
    config: DacCodecConfig
    sha256: str


def _residual_unit(official: str, ours: str) -> dict[str, str | None]:
    return {f"{official}.{k}": f"{ours}.{v}" for k, v in _RESIDUAL_UNIT.items()}


def official_key_map(n_strides: int) -> KeyMap:
    """The key map of an official model with `n_strides` encoder (and decoder) blocks.

    Args:
        n_strides: `len(encoder_rates)`.

    Returns:
        Official path -> `DacModel` path, in the `core.key_map` language (after
        `fold_weight_norm`, so conv weights are `<path>.weight`).
    """
    n = n_strides
    table: dict[str, str | None] = {
        "encoder.block.0": "encoder.conv1",
        f"encoder.block.{n + 1}": "encoder.snake1",
        f"encoder.block.{n + 2}": "encoder.conv2",
        "quantizer.quantizers.{}.in_proj": "quantizer.quantizers.{}.in_proj",
        "quantizer.quantizers.{}.out_proj": "quantizer.quantizers.{}.out_proj",
        "quantizer.quantizers.{}.codebook": "quantizer.quantizers.{}.codebook",
        "decoder.model.0": "decoder.conv1",
        f"decoder.model.{n + 1}": "decoder.snake1",
        f"decoder.model.{n + 2}": "decoder.conv2",
    }
    for i in range(1, n + 1):
        encoder, ours = f"encoder.block.{i}", f"encoder.block.{i - 1}"
        for unit in range(3):  # EncoderBlock: 3 ResidualUnits, Snake, strided conv.
            table |= _residual_unit(f"{encoder}.block.{unit}", f"{ours}.res_unit{unit + 1}")
        table[f"{encoder}.block.3"] = f"{ours}.snake1"
        table[f"{encoder}.block.4"] = f"{ours}.conv1"
        decoder, ours = f"decoder.model.{i}", f"decoder.block.{i - 1}"
        table[f"{decoder}.block.0"] = f"{ours}.snake1"  # DecoderBlock: Snake, ConvT, 3 units.
        table[f"{decoder}.block.1"] = f"{ours}.conv_t1"
        for unit in range(3):
            table |= _residual_unit(f"{decoder}.block.{unit + 2}", f"{ours}.res_unit{unit + 1}")
    return table


def fold_weight_norm(state: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, Tensor]:
    """Replaces every `<conv>.weight_g` / `<conv>.weight_v` pair by `<conv>.weight`.

    Args:
        state: An official state dict (other keys pass through unchanged).
        source: Name of the file, for error messages.

    Returns:
        The state dict with effective weights `g * v / |v|` (norm over all dims but 0).

    Raises:
        CheckpointError: if a `weight_g` has no `weight_v` or the other way round.
    """
    folded = {k: v for k, v in state.items() if not k.endswith((".weight_g", ".weight_v"))}
    stems = {k.rsplit(".", 1)[0] for k in state if k.endswith((".weight_g", ".weight_v"))}
    unpaired = sorted(
        s for s in stems if f"{s}.weight_g" not in state or f"{s}.weight_v" not in state
    )
    if unpaired:
        raise CheckpointError(f"{source}: weight_g/weight_v not paired for {unpaired[:10]}")
    for stem in sorted(stems):
        g, v = state[f"{stem}.weight_g"], state[f"{stem}.weight_v"]
        folded[f"{stem}.weight"] = torch._weight_norm(v.float(), g.float(), 0)
    return folded


def fold_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """`fold_weight_norm` for a {key: shape} manifest: the pair becomes `weight` of v's shape.

    Raises:
        CheckpointError: if a `weight_g` is not `[dim0, 1, ..., 1]` of its `weight_v`.
    """
    folded = {k: tuple(s) for k, s in shapes.items() if not k.endswith(".weight_g")}
    for key, shape in shapes.items():
        if key.endswith(".weight_v"):
            stem = key[: -len(".weight_v")]
            expected = (shape[0],) + (1,) * (len(shape) - 1)
            if tuple(shapes.get(f"{stem}.weight_g", ())) != expected:
                raise CheckpointError(f"{stem}.weight_g is not {expected}")
            folded[f"{stem}.weight"] = tuple(folded.pop(key))
    return folded


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


def load_converted(directory: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A model from our converted directory or a local Hugging Face directory, strictly.

    Args:
        directory: Our directory (format "dac-codec") or a Hugging Face one
            (`config.json` + `model.safetensors`); nothing is downloaded.
        device: Where the model goes.

    Returns:
        The model in eval mode, its config and the sha256 of its weights file.

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
    return LoadedModel(model.to(device).eval(), config, digest)
