"""EnCodec weights on disk: official `.th` files, our converted directory, Hugging Face ones.

All three load strictly (`core.key_map.load_strict`: every key and shape, or an error
naming them):

* Official `encodec_24khz-d7cc33bc.th` / `encodec_48khz-7e698e3e.th`: a flat `torch.save`
  of the state dict, read by `core.safe_load` (no code from the file runs) and renamed
  through `OFFICIAL_KEY_MAP`. The builder arguments are not in the file; the preset says
  them.
* Our converted directory (`core.checkpoint_dir`, format "encodec-codec"), written by
  `convert_official`, whose weights' sha256 is checked on every load.
* A local Hugging Face model directory (`config.json` + `model.safetensors`), read with no
  network; its config says the shape.

`load_converted` reads either directory into a `LoadedModel`.
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
from transformers import EncodecConfig, EncodecModel

from audio_codecs.encodec.config import EncodecCodecConfig, from_hf_config, preset
from audio_codecs.encodec.model import build_model
from core.checkpoint_dir import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_checkpoint_dir,
    sha256_file,
    write_checkpoint_dir,
)
from core.errors import CheckpointError
from core.key_map import KeyMap, as_tensor_dict, compare_shapes, load_strict, map_state
from core.safe_load import load_checkpoint

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "OFFICIAL_KEY_MAP",
    "LoadedModel",
    "convert_official",
    "load_converted",
    "load_official",
    "manifest_problems",
]

FORMAT = "encodec-codec"
FORMAT_VERSION = 1


def _conv(theirs: str, ours: str) -> dict[str, str]:
    """Rules for one official `SConv1d`/`SConvTranspose1d` wrapper at `theirs` (4 tensors)."""
    return {
        f"{theirs}": f"{ours}.conv",  # .weight and .bias of the plain conv (time_group_norm)
        f"{theirs}.weight_g": f"{ours}.conv.parametrizations.weight.original0",
        f"{theirs}.weight_v": f"{ours}.conv.parametrizations.weight.original1",
    }


# Official key path -> transformers' (`{}` is a layer index). SEANet layers are
# `model.<i>` upstream and `layers.<i>` here; the official conv wrappers nest the conv one
# level deeper (`conv.conv`, `convtr.convtr`) and keep the GroupNorm beside it (`conv.norm`);
# old-style weight norm stores g and v, transformers' parametrisation original0/original1.
OFFICIAL_KEY_MAP: KeyMap = {
    **_conv("encoder.model.{}.conv.conv", "encoder.layers.{}"),
    "encoder.model.{}.conv.norm": "encoder.layers.{}.norm",
    **_conv("encoder.model.{}.block.{}.conv.conv", "encoder.layers.{}.block.{}"),
    "encoder.model.{}.block.{}.conv.norm": "encoder.layers.{}.block.{}.norm",
    **_conv("encoder.model.{}.shortcut.conv.conv", "encoder.layers.{}.shortcut"),
    "encoder.model.{}.shortcut.conv.norm": "encoder.layers.{}.shortcut.norm",
    "encoder.model.{}.lstm": "encoder.layers.{}.lstm",
    **_conv("decoder.model.{}.conv.conv", "decoder.layers.{}"),
    "decoder.model.{}.conv.norm": "decoder.layers.{}.norm",
    **_conv("decoder.model.{}.convtr.convtr", "decoder.layers.{}"),
    "decoder.model.{}.convtr.norm": "decoder.layers.{}.norm",
    **_conv("decoder.model.{}.block.{}.conv.conv", "decoder.layers.{}.block.{}"),
    "decoder.model.{}.block.{}.conv.norm": "decoder.layers.{}.block.{}.norm",
    **_conv("decoder.model.{}.shortcut.conv.conv", "decoder.layers.{}.shortcut"),
    "decoder.model.{}.shortcut.conv.norm": "decoder.layers.{}.shortcut.norm",
    "decoder.model.{}.lstm": "decoder.layers.{}.lstm",
    "quantizer.vq.layers.{}._codebook": "quantizer.layers.{}.codebook",
}

# Hugging Face directories saved before the weight-norm parametrisation keep g and v.
_HF_LEGACY_SUFFIXES = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}


@dataclass(frozen=True)
class LoadedModel:
    """A model with its config and the sha256 of the file its weights came from.

    Attributes:
        model: The filled model, in eval mode, on the loader's device (`load_official`: CPU).
        config: Its shape.
        sha256: sha256 of the weights file.
    """

    model: EncodecModel
    config: EncodecCodecConfig
    sha256: str


def _strict_model(
    config: EncodecCodecConfig, state: Mapping[str, Tensor], source: str
) -> EncodecModel:
    """A CPU model of `config` holding exactly `state` (copied in after the strict check).

    Built on the CPU rather than on meta: the convs' non-persistent buffers (stride,
    kernel size) are in no state dict and must be real.
    """
    model = build_model(config, "cpu")
    load_strict(model, state, source)
    return model.eval()


def official_state(th_path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official `.th`, renamed to transformers' keys (nothing unpickled).

    Raises:
        CheckpointError: if the file holds anything but a flat dict of tensors (e.g. a
            pickle naming code to run) or a key no rule of `OFFICIAL_KEY_MAP` covers.
    """
    source = str(th_path)
    raw = as_tensor_dict(load_checkpoint(th_path), source)
    return map_state(raw, OFFICIAL_KEY_MAP, source=source)


def load_official(th_path: str | Path, preset_name: str) -> LoadedModel:
    """Loads an official `.th` into the model of preset `preset_name` ("24khz", "48khz").

    Args:
        th_path: The official checkpoint (zip or legacy torch format).
        preset_name: The preset whose shape the file has.

    Returns:
        The model, its config and the file's sha256.

    Raises:
        CheckpointError: on any unreadable file, unknown key, missing key or wrong shape.
    """
    config = preset(preset_name)
    model = _strict_model(config, official_state(th_path), str(th_path))
    return LoadedModel(model, config, sha256_file(th_path))


def convert_official(th_path: str | Path, out_dir: str | Path, preset_name: str) -> dict[str, Any]:
    """Converts an official `.th` into our checkpoint directory (for `jobs.convert_checkpoint`).

    Args:
        th_path: The official checkpoint.
        out_dir: The directory to write (created).
        preset_name: The preset whose shape the file has ("24khz" or "48khz").

    Returns:
        A summary: output directory, preset, tensor count, the source's and the weights'
        sha256.
    """
    loaded = load_official(th_path, preset_name)
    state = loaded.model.state_dict()
    digest = write_checkpoint_dir(
        out_dir,
        FORMAT,
        FORMAT_VERSION,
        loaded.config.to_dict(),
        state,
        sources={"official": Path(th_path).name, "official_sha256": loaded.sha256},
    )
    return {
        "output": str(out_dir),
        "preset": preset_name,
        "tensors": len(state),
        "source": str(th_path),
        "source_sha256": loaded.sha256,
        "sha256": digest,
    }


def load_converted(directory: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Loads our converted directory or a local Hugging Face model directory, strictly.

    Args:
        directory: Holds `config.json` and `model.safetensors`. Ours has `"format":
            "encodec-codec"` in its config; a Hugging Face one has `"model_type": "encodec"`.
        device: Where the model goes (built on the CPU first, see `_strict_model`).

    Returns:
        The model, its config and the sha256 of `model.safetensors`.

    Raises:
        CheckpointError: if the directory is neither, or keys, shapes or the recorded
            sha256 disagree.
    """
    directory = Path(directory)
    header_path = directory / CONFIG_FILE
    if not header_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a model directory")
    header = json.loads(header_path.read_text())
    if header.get("format") == FORMAT:
        header, state = read_checkpoint_dir(directory, FORMAT, FORMAT_VERSION)
        config = EncodecCodecConfig.from_dict(header["config"])
        model = _strict_model(config, state, str(directory))
        return LoadedModel(model.to(device), config, header["sha256"])
    if header.get("model_type") == "encodec":
        config = from_hf_config(EncodecConfig.from_pretrained(directory, local_files_only=True))
        weights = directory / WEIGHTS_FILE
        state = {_hf_key(k): v for k, v in load_file(weights).items()}
        model = _strict_model(config, state, str(weights))
        return LoadedModel(model.to(device), config, sha256_file(weights))
    raise CheckpointError(
        f"{header_path}: neither our {FORMAT!r} format nor a Hugging Face encodec model"
    )


def _hf_key(key: str) -> str:
    """A Hugging Face key in the current weight-norm naming."""
    for old, new in _HF_LEGACY_SUFFIXES.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def manifest_problems(manifest: Mapping[str, Any], preset_name: str) -> list[str]:
    """Every disagreement between an official key/shape manifest and our preset's model.

    The manifest's names go through `OFFICIAL_KEY_MAP`; the model is built on the meta
    device, so full-size models cost no memory.

    Args:
        manifest: A `manifest_encodec_*.json` ({"tensors": [{"name", "shape"}, ...]}).
        preset_name: The preset to compare with ("24khz" or "48khz").

    Returns:
        Problems as `core.key_map.compare_shapes` words them; empty when all agree.
    """
    shapes = {t["name"]: tuple(t["shape"]) for t in manifest["tensors"]}
    mapped = map_state(shapes, OFFICIAL_KEY_MAP, source="manifest")
    model = build_model(preset(preset_name), torch.device("meta"))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = compare_shapes(expected, mapped)
    if len(mapped) != len(shapes):
        problems.append(f"{len(shapes) - len(mapped)} manifest keys dropped by the key map")
    return problems
