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

Each key goes through one explicit table (`{}` stands for a layer index; a `None` target
drops the key); a key no rule covers is an error naming it. The result is loaded strictly:
missing, unexpected and mis-shaped keys are all reported at once. Unlike the reference
(which loads `mucodec.pt` with `strict=False`, so a missing key silently keeps its random
init), nothing is ever left at its initial value.

Our own format is the encoder's checkpoint layout (`mucodec.encoder.checkpoint`): a directory with
`model.safetensors` (`MuCodecDecoder.state_dict()`), `config.json` (format
`mucodec-decoder`, version, `DecoderConfig`, sha256 of the weights, sha256 of the official
sources) and a `sha256sum`-style checksum file.
Pickles are opened with `mucodec.safe_load.load_checkpoint`, which never runs code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import Tensor, nn

from mucodec.checkpoint_dir import read_checkpoint_dir, sha256_file, write_checkpoint_dir
from mucodec.decoder.config import DecoderConfig
from mucodec.encoder.checkpoint import CheckpointError
from mucodec.safe_load import load_checkpoint

__all__ = [
    "DECODER_FORMAT",
    "DECODER_FORMAT_VERSION",
    "MAIN_KEY_MAP",
    "VAE_KEY_MAP",
    "CheckpointMismatchError",
    "check_manifest",
    "check_state",
    "convert_official",
    "load_decoder_checkpoint",
    "load_official_state",
    "load_strict",
    "map_keys",
    "save_decoder_checkpoint",
]

DECODER_FORMAT = "mucodec-decoder"
DECODER_FORMAT_VERSION = 1

_E = "cfm_wrapper.estimator."
_B = _E + "transformer_blocks.{}."
_F = "flow.estimator."

# mucodec.pt -> ours. First matching rule wins; a rule ending in "." maps a prefix, any
# other rule a whole key.
MAIN_KEY_MAP: tuple[tuple[str, str | None], ...] = (
    (_E + "pos_embed.proj.", _F + "patch_embed."),
    (_E + "adaln_single.emb.timestep_embedder.", _F + "time_embed."),
    (_E + "adaln_single.linear.", _F + "time_modulation."),
    (_B + "scale_shift_table", _F + "blocks.{}.modulation"),
    (_B + "attn1.to_out.0.", _F + "blocks.{}.attn.to_out."),
    (_B + "attn1.", _F + "blocks.{}.attn."),
    (_B + "ff.net.0.proj.", _F + "blocks.{}.mlp.fc1."),
    (_B + "ff.net.2.", _F + "blocks.{}.mlp.fc2."),
    (_E + "scale_shift_table", _F + "final_modulation"),
    (_E + "proj_out.", _F + "proj_out."),
    ("rvq_muencoder_emb.", "flow.conditioner.rvq."),
    ("cond_muencoder_emb.", "flow.conditioner.proj."),
    ("zero_cond_embedding1", "flow.conditioner.null_cond"),
    ("normfeat.", "flow.normalizer."),
    # Encoder side of the same file.
    ("muencoder.", None),
    ("rsp48toclap.kernel", None),
    ("rsq48towav2vec.kernel", None),
    ("rsq48tomuencoder.kernel", None),
)

# audioldm_48k.pth ["state_dict"] -> ours (keys outside first_stage_model. are ignored).
VAE_KEY_MAP: tuple[tuple[str, str | None], ...] = (
    ("first_stage_model.decoder.", "vae.decoder."),
    ("first_stage_model.post_quant_conv.", "vae.post_quant_conv."),
    ("first_stage_model.vocoder.", "vocoder."),
    ("scale_factor", "vae.scale_factor"),
    ("first_stage_model.encoder.", None),
    ("first_stage_model.quant_conv.", None),
)
_VAE_SCOPE = ("first_stage_model.", "scale_factor")


class CheckpointMismatchError(CheckpointError):
    """A decoder checkpoint does not fit the model (the message lists every problem).

    A `mucodec.encoder.checkpoint.CheckpointError`, so callers handle encoder and decoder
    checkpoint problems alike.
    """


def _compile(table: tuple[tuple[str, str | None], ...]) -> list[tuple[re.Pattern[str], Any]]:
    rules = []
    for source, target in table:
        pattern = re.escape(source).replace(r"\{\}", r"(\d+)")
        pattern = "^" + pattern + ("(.+)$" if source.endswith(".") else "$")
        rules.append((re.compile(pattern), target))
    return rules


def _rename(key: str, rules: list[tuple[re.Pattern[str], Any]]) -> tuple[bool, str | None]:
    """(matched, new key or None to drop)."""
    for pattern, target in rules:
        match = pattern.match(key)
        if match is None:
            continue
        if target is None:
            return True, None
        groups = list(match.groups())
        rest = groups.pop() if target.endswith(".") else ""
        return True, target.format(*groups) + rest
    return False, None


def map_keys(
    state: Mapping[str, Any],
    table: tuple[tuple[str, str | None], ...],
    *,
    scope: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Renames official keys to ours through `table`.

    Args:
        state: Official key -> value (tensor, or anything else for shape-only checks).
        table: One of `MAIN_KEY_MAP`, `VAE_KEY_MAP`.
        scope: If given, keys starting with none of these prefixes are ignored.

    Returns:
        Our key -> value, dropped keys removed.

    Raises:
        CheckpointMismatchError: naming every in-scope key that no rule covers.
    """
    rules = _compile(table)
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state.items():
        if scope is not None and not key.startswith(scope):
            continue
        matched, new = _rename(key, rules)
        if not matched:
            unknown.append(key)
        elif new is not None:
            out[new] = value
    if unknown:
        raise CheckpointMismatchError(f"keys not covered by the key map: {sorted(unknown)}")
    return out


def _compare(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]
) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    shapes = [
        f"{k}: checkpoint {tuple(given[k])} vs model {tuple(expected[k])}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k]) != tuple(expected[k])
    ]
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    return problems


def check_state(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Refuses a state dict with any missing, unexpected or mis-shaped key for `module`.

    Raises:
        CheckpointMismatchError: listing every problem at once.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = _compare(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise CheckpointMismatchError("; ".join(problems))


def load_strict(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Loads `state` into `module` after `check_state` (assigning when `module` is meta).

    Raises:
        CheckpointMismatchError: listing every problem at once.
    """
    check_state(module, state)
    is_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(dict(state), strict=True, assign=is_meta)


def check_manifest(module: nn.Module, manifest: Mapping[str, Any], which: str) -> int:
    """Strict key/shape check of a model against an official manifest, without weights.

    Args:
        module: `MuCodecDecoder` (any device, "meta" is enough).
        manifest: A parsed `manifest_*_fullsize.json` (`tensors`: key, shape, dtype).
        which: "main" (mucodec.pt) or "vae" (audioldm_48k.pth).

    Returns:
        Number of our parameters/buffers the manifest covered.

    Raises:
        CheckpointMismatchError: if keys or shapes disagree, in either direction.
    """
    table, prefix = (MAIN_KEY_MAP, "flow.") if which == "main" else (VAE_KEY_MAP, None)
    shapes = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    given = map_keys(shapes, table)
    expected = {
        k: tuple(v.shape)
        for k, v in module.state_dict().items()
        if (k.startswith(prefix) if prefix else not k.startswith("flow."))
    }
    problems = _compare(expected, given)
    if problems:
        raise CheckpointMismatchError(f"{which} manifest: " + "; ".join(problems))
    return len(given)


def _read_state(path: Path) -> Mapping[str, Any]:
    """A state dict from a safetensors file or (safely) from a torch pickle."""
    if path.suffix == ".safetensors":
        return load_file(path)
    data = load_checkpoint(path)
    if not isinstance(data, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a dict, got {type(data).__name__}")
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
        CheckpointMismatchError: on keys no rule covers or a missing `state_dict`.
    """
    main = _read_state(Path(mucodec_path))
    if "state_dict" in main and isinstance(main["state_dict"], Mapping):
        main = main["state_dict"]
    vae = _read_state(Path(audioldm_path))
    if "state_dict" in vae and isinstance(vae["state_dict"], Mapping):
        vae = vae["state_dict"]
    state = {**map_keys(main, MAIN_KEY_MAP), **map_keys(vae, VAE_KEY_MAP, scope=_VAE_SCOPE)}
    non_tensors = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if non_tensors:
        raise CheckpointMismatchError(f"entries that are not tensors: {non_tensors}")
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
    return write_checkpoint_dir(
        directory, DECODER_FORMAT, DECODER_FORMAT_VERSION, config.to_dict(), state, sources
    )


def load_decoder_checkpoint(
    directory: str | Path, *, verify_sha256: bool = True
) -> tuple[DecoderConfig, dict[str, Tensor]]:
    """Reads a directory written by `save_decoder_checkpoint`.

    Returns:
        (config, state dict).

    Raises:
        CheckpointMismatchError: if it is not a decoder checkpoint, has an unknown format
            version, or its weights do not match the recorded sha256.
    """
    header, state = read_checkpoint_dir(
        directory, DECODER_FORMAT, DECODER_FORMAT_VERSION, CheckpointMismatchError, verify_sha256
    )
    return DecoderConfig.from_dict(header["config"]), state


def convert_official(
    mucodec_path: str | Path,
    audioldm_path: str | Path,
    out_dir: str | Path,
    config: DecoderConfig,
) -> str:
    """Official files -> our checkpoint directory, after a strict check against `config`.

    Returns:
        The sha256 of the written weights.

    Raises:
        CheckpointMismatchError: if the official weights do not fit `config` exactly.
    """
    from mucodec.decoder.builders import build_decoder

    state = load_official_state(mucodec_path, audioldm_path)
    check_state(build_decoder(config, device="meta"), state)
    sources = {Path(p).name: sha256_file(p) for p in (mucodec_path, audioldm_path)}
    return save_decoder_checkpoint(out_dir, config, state, sources)
