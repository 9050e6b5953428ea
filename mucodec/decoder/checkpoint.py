"""Decoder checkpoints: official key maps, strict checks, and our safetensors format.

The official weights come in two torch pickles (decoder spec section 11):

* `mucodec.pt`: a flat state dict of `PromptCondAudioDiffusion`; the decoder side is
  `cfm_wrapper.estimator.*`, `rvq_muencoder_emb.*`, `cond_muencoder_emb.*`,
  `zero_cond_embedding1` and `normfeat.*`; `muencoder.*` and the torchaudio resampler
  kernels are encoder side and dropped.
* `audioldm_48k.pth`: `["state_dict"]` of a latent-diffusion model; the decoder side is
  `first_stage_model.{decoder,post_quant_conv,vocoder}.*` and `scale_factor`; the VAE
  encoder is dropped and everything outside `first_stage_model.` (AudioLDM's own UNet and
  conditioners) is ignored, as the reference's loader ignores it.

Each file has one explicit table in the rule language of `core.key_map` (`{}` stands for
a layer index, a `None` target drops the key, a path covers every key below it); a key no
rule covers is an error naming it. The result is loaded strictly (`core.key_map.
load_strict`): missing, unexpected and mis-shaped keys are all reported at once. Unlike the
reference (which loads `mucodec.pt` with `strict=False`, so a missing key silently keeps
its random init), nothing is ever left at its initial value.

Our own format is the encoder's checkpoint layout (`mucodec.encoder.checkpoint`): a directory with
`model.safetensors` (`MuCodecDecoder.state_dict()`), `config.json` (format
`mucodec-decoder`, version, `DecoderConfig`, sha256 of the weights, sha256 of the official
sources) and a `sha256sum`-style checksum file.
Pickles are opened with `core.safe_load.load_checkpoint`, which never runs code.

Loading builds the model through `mucodec.decoder.builders` and fills it here, so the model
module imports neither (`load_decoder`, `load_official_decoder`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from core.checkpoint_dir import read_checkpoint_dir, sha256_file, write_checkpoint_dir
from core.errors import CheckpointError
from core.key_map import check_state, compare_shapes, load_strict, map_state
from core.precision import Precision
from core.safe_load import CheckpointFormatError, load_checkpoint
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.config import DecoderConfig
from mucodec.decoder.model import MuCodecDecoder

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAIN_KEY_MAP",
    "VAE_KEY_MAP",
    "check_manifest",
    "convert_official",
    "load_converted",
    "load_decoder",
    "load_official_decoder",
    "load_official_state",
    "save_decoder_checkpoint",
]

FORMAT = "mucodec-decoder"
FORMAT_VERSION = 1

_E = "cfm_wrapper.estimator."
_B = _E + "transformer_blocks.{}."
_F = "flow.estimator."

# mucodec.pt -> ours.
MAIN_KEY_MAP: dict[str, str | None] = {
    _E + "pos_embed.proj": _F + "patch_embed",
    _E + "adaln_single.emb.timestep_embedder": _F + "time_embed",
    _E + "adaln_single.linear": _F + "time_modulation",
    _B + "scale_shift_table": _F + "blocks.{}.modulation",
    _B + "attn1.to_out.0": _F + "blocks.{}.attn.to_out",  # More specific than "attn1".
    _B + "attn1": _F + "blocks.{}.attn",
    _B + "ff.net.0.proj": _F + "blocks.{}.mlp.fc1",
    _B + "ff.net.2": _F + "blocks.{}.mlp.fc2",
    _E + "scale_shift_table": _F + "final_modulation",
    _E + "proj_out": _F + "proj_out",
    "rvq_muencoder_emb": "flow.conditioner.rvq",
    "cond_muencoder_emb": "flow.conditioner.proj",
    "zero_cond_embedding1": "flow.conditioner.null_cond",
    "normfeat": "flow.normalizer",
    # Encoder side of the same file.
    "muencoder": None,
    "rsp48toclap.kernel": None,
    "rsq48towav2vec.kernel": None,
    "rsq48tomuencoder.kernel": None,
}

# audioldm_48k.pth ["state_dict"] -> ours. Keys outside `VAE_SCOPE` (AudioLDM's own UNet
# and conditioners) are not the decoder's business and are ignored, as the reference does.
VAE_KEY_MAP: dict[str, str | None] = {
    "first_stage_model.decoder": "vae.decoder",
    "first_stage_model.post_quant_conv": "vae.post_quant_conv",
    "first_stage_model.vocoder": "vocoder",
    "scale_factor": "vae.scale_factor",
    "first_stage_model.encoder": None,
    "first_stage_model.quant_conv": None,
}
VAE_SCOPE = ("first_stage_model", "scale_factor")


def check_manifest(module: nn.Module, manifest: Mapping[str, Any], which: str) -> int:
    """Strict key/shape check of a model against an official manifest, without weights.

    Args:
        module: `MuCodecDecoder` (any device, "meta" is enough).
        manifest: A parsed `manifest_*_fullsize.json` (`tensors`: key, shape, dtype).
        which: "main" (mucodec.pt) or "vae" (audioldm_48k.pth).

    Returns:
        Number of our parameters/buffers the manifest covered.

    Raises:
        CheckpointError: if keys or shapes disagree, in either direction.
    """
    table, prefix = (MAIN_KEY_MAP, "flow.") if which == "main" else (VAE_KEY_MAP, None)
    shapes = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    given = map_state(shapes, table, source=f"{which} manifest")
    expected = {
        k: tuple(v.shape)
        for k, v in module.state_dict().items()
        if (k.startswith(prefix) if prefix else not k.startswith("flow."))
    }
    problems = compare_shapes(expected, given)
    if problems:
        raise CheckpointError(f"{which} manifest: " + "; ".join(problems))
    return len(given)


def _read_state(path: Path) -> Mapping[str, Any]:
    """A state dict from a safetensors file or (safely) from a torch pickle."""
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        data = load_checkpoint(path)
    except CheckpointFormatError as error:
        raise CheckpointError(str(error)) from error
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def load_official_state(mucodec_path: str | Path, audioldm_path: str | Path) -> dict[str, Tensor]:
    """Reads both official files into our key layout (float32 tensors).

    Args:
        mucodec_path: `mucodec.pt` (flat state dict) or a safetensors file of it.
        audioldm_path: `audioldm_48k.pth` (`["state_dict"]` inside) or a safetensors file
            of that state dict.

    Returns:
        Our key -> tensor for `MuCodecDecoder`.

    Raises:
        CheckpointError: on keys no rule covers or a missing `state_dict`.
    """
    main = _read_state(Path(mucodec_path))
    if "state_dict" in main and isinstance(main["state_dict"], Mapping):
        main = main["state_dict"]
    vae = _read_state(Path(audioldm_path))
    if "state_dict" in vae and isinstance(vae["state_dict"], Mapping):
        vae = vae["state_dict"]
    state = {
        **map_state(main, MAIN_KEY_MAP, source=str(mucodec_path)),
        **map_state(vae, VAE_KEY_MAP, scope=VAE_SCOPE, source=str(audioldm_path)),
    }
    non_tensors = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if non_tensors:
        raise CheckpointError(f"entries that are not tensors: {non_tensors}")
    return {k: v.float().contiguous() for k, v in state.items()}


def save_decoder_checkpoint(
    directory: str | Path,
    config: DecoderConfig,
    state: Mapping[str, Tensor],
    sources: Mapping[str, Any] | None = None,
) -> str:
    """Writes our decoder checkpoint directory, in the encoder's layout.

    `model.safetensors` (our state dict), `config.json` (format tag and version, the
    `DecoderConfig`, the weights' sha256 and their provenance) and
    `model.safetensors.sha256` (`sha256sum -c` compatible). The weights are written to a
    temporary name and renamed, and `config.json` last, so a crash never leaves a
    directory that loads.

    Args:
        directory: Output directory (created).
        config: The config the weights belong to.
        state: `MuCodecDecoder` state dict.
        sources: Provenance, e.g. official file name -> sha256.

    Returns:
        The sha256 of the weights file.
    """
    return write_checkpoint_dir(directory, FORMAT, FORMAT_VERSION, config.to_dict(), state, sources)


def load_converted(
    directory: str | Path, *, verify_sha256: bool = True
) -> tuple[DecoderConfig, dict[str, Tensor]]:
    """Reads a directory written by `save_decoder_checkpoint`.

    Args:
        directory: The checkpoint directory.
        verify_sha256: Hash the weights and compare with the recorded sha256.

    Returns:
        (config, state dict).

    Raises:
        CheckpointError: if it is not a decoder checkpoint, has an unknown format
            version, or its weights do not match the recorded sha256.
    """
    header, state = read_checkpoint_dir(directory, FORMAT, FORMAT_VERSION, verify_sha256)
    return DecoderConfig.from_dict(header["config"]), state


def convert_official(
    mucodec_path: str | Path,
    audioldm_path: str | Path,
    out_dir: str | Path,
    config: DecoderConfig,
) -> str:
    """Official files -> our checkpoint directory, after a strict check against `config`.

    Args:
        mucodec_path: Official `mucodec.pt` (or a safetensors file of its state dict).
        audioldm_path: Official `audioldm_48k.pth` (or a safetensors file of its
            `state_dict`).
        out_dir: Output directory (created).
        config: The decoder config the weights must fit exactly.

    Returns:
        The sha256 of the written weights.

    Raises:
        CheckpointError: if the official weights do not fit `config` exactly.
    """
    state = load_official_state(mucodec_path, audioldm_path)
    check_state(build_decoder(config, device="meta"), state, str(mucodec_path))
    sources = {Path(p).name: sha256_file(p) for p in (mucodec_path, audioldm_path)}
    return save_decoder_checkpoint(out_dir, config, state, sources)


def _filled(
    config: DecoderConfig,
    state: Mapping[str, Tensor],
    source: str,
    device: torch.device | str,
    precision: Precision,
) -> MuCodecDecoder:
    """The decoder of `config` built without initialisation and filled strictly."""
    decoder = build_decoder(config, device="meta", precision=precision)
    load_strict(decoder, state, source)
    decoder.flow.normalizer.check_frozen()
    return decoder.to(device).eval()


def load_decoder(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    precision: Precision = "float32",
) -> MuCodecDecoder:
    """Loads our converted checkpoint directory (config + sha256-verified weights).

    Args:
        path: A directory written by `save_decoder_checkpoint` / `convert_official`.
        device: Where the weights go.
        precision: Autocast dtype of the estimator and the VAE for every decode
            (`MuCodecDecoder.precision`); the weights stay float32.

    Returns:
        The decoder in eval mode.

    Raises:
        CheckpointError: on an unknown format or version, a hash mismatch, or any key or
            shape that does not fit the recorded config.
    """
    config, state = load_converted(path)
    return _filled(config, state, str(path), device, precision)


def load_official_decoder(
    mucodec_path: str | Path,
    audioldm_path: str | Path,
    *,
    config: DecoderConfig | None = None,
    device: torch.device | str = "cpu",
    precision: Precision = "float32",
) -> MuCodecDecoder:
    """Loads the official `mucodec.pt` + `audioldm_48k.pth` safely and strictly.

    Args:
        mucodec_path: Official `mucodec.pt` (or a safetensors file of its state dict).
        audioldm_path: Official `audioldm_48k.pth` (or a safetensors file of its
            `state_dict`).
        config: The decoder config the files must fit; default the `official` preset.
        device: Where the weights go.
        precision: Autocast dtype of the estimator and the VAE for every decode.

    Returns:
        The decoder in eval mode.

    Raises:
        CheckpointError: on keys no rule covers, or keys or shapes that do not fit.
    """
    state = load_official_state(mucodec_path, audioldm_path)
    return _filled(config or DecoderConfig(), state, str(mucodec_path), device, precision)
