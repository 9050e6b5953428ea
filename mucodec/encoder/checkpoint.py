"""Encoder-side checkpoints: official MuCodec files and our converted format.

Official files (encoder spec, section 9):

* `muq.pt`: a fairseq checkpoint; its `"model"` dict is MuQModel's state dict, keys
  `model.*`. Read with `core.safe_load.load_checkpoint` (no code from the file runs).
* `mucodec.pt`: PromptCondAudioDiffusion's state dict. The tokenizer needs its RVQ
  (`rvq_muencoder_emb.*`) and resampler kernel (`rsq48tomuencoder.kernel`); it usually also
  holds `muencoder.*`, a copy of the MuQ weights that the official code loads *after*
  muq.pt, so that copy is the one the official tokens come from.

Both go through one explicit key map each (`MUQ_KEY_MAP`, `MUCODEC_KEY_MAP`, in the rule
language of `core.key_map`) and are verified strictly: every key the official model has
must be present with its shape, and any key this code does not know is an error naming it.
Tensors the tokens do not depend on (blocks after the selected layer, the pre-training head,
HF's unused positional conv) are verified and then dropped.

Our format is a directory: `model.safetensors` (the tokenizer's own state dict),
`config.json` (format tag and version, `TokenizerConfig`, the weights' sha256 and where they
came from) and `model.safetensors.sha256` (`sha256sum -c` compatible). Loading checks the
format version and the hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.checkpoint_dir import read_checkpoint_dir, write_checkpoint_dir
from core.errors import CheckpointError
from core.key_map import as_tensor_dict, compare_shapes, invert, map_key, map_state
from core.safe_load import CheckpointFormatError, InertObject, load_checkpoint
from mucodec.encoder.builders import build_conformer_block, build_subsampling
from mucodec.encoder.config import MuEncoderConfig, TokenizerConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MUCODEC_KEY_MAP",
    "MUQ_KEY_MAP",
    "MUQ_UNCHECKED",
    "ConvertedCheckpoint",
    "LoadReport",
    "expected_muq_shapes",
    "load_converted",
    "map_official_state",
    "read_mucodec_checkpoint",
    "read_muq_checkpoint",
    "save_converted",
    "verify_muq_state",
]

FORMAT = "mucodec-encoder"
FORMAT_VERSION = 1

# Official MuQModel paths (without "model.") -> ours; "{}" is a layer index; None marks a
# module that exists in the checkpoint but never influences the tokens.
MUQ_KEY_MAP: dict[str, str | None] = {
    "preprocessor_melspec_2048.mel_stft.spectrogram": "frontend.mel.spectrogram",
    "preprocessor_melspec_2048.mel_stft.mel_scale": "frontend.mel.mel_scale",
    "conv.conv.{}.conv1": "encoder.subsampling.blocks.{}.conv1",
    "conv.conv.{}.bn1": "encoder.subsampling.blocks.{}.bn1",
    "conv.conv.{}.conv2": "encoder.subsampling.blocks.{}.conv2",
    "conv.conv.{}.bn2": "encoder.subsampling.blocks.{}.bn2",
    "conv.conv.{}.conv3": "encoder.subsampling.blocks.{}.skip_conv",
    "conv.conv.{}.bn3": "encoder.subsampling.blocks.{}.skip_bn",
    "conv.linear": "encoder.subsampling.proj",
    "conformer.embed_positions": "encoder.rotary",
    "conformer.layers.{}.ffn1_layer_norm": "encoder.blocks.{}.ffn1.norm",
    "conformer.layers.{}.ffn1.intermediate_dense": "encoder.blocks.{}.ffn1.linear_in",
    "conformer.layers.{}.ffn1.output_dense": "encoder.blocks.{}.ffn1.linear_out",
    "conformer.layers.{}.self_attn_layer_norm": "encoder.blocks.{}.attention.norm",
    "conformer.layers.{}.self_attn.linear_q": "encoder.blocks.{}.attention.linear_q",
    "conformer.layers.{}.self_attn.linear_k": "encoder.blocks.{}.attention.linear_k",
    "conformer.layers.{}.self_attn.linear_v": "encoder.blocks.{}.attention.linear_v",
    "conformer.layers.{}.self_attn.linear_out": "encoder.blocks.{}.attention.linear_out",
    "conformer.layers.{}.conv_module.layer_norm": "encoder.blocks.{}.conv.norm",
    "conformer.layers.{}.conv_module.pointwise_conv1": "encoder.blocks.{}.conv.pointwise_in",
    "conformer.layers.{}.conv_module.depthwise_conv": "encoder.blocks.{}.conv.depthwise",
    "conformer.layers.{}.conv_module.batch_norm": "encoder.blocks.{}.conv.batch_norm",
    "conformer.layers.{}.conv_module.pointwise_conv2": "encoder.blocks.{}.conv.pointwise_out",
    "conformer.layers.{}.ffn2_layer_norm": "encoder.blocks.{}.ffn2.norm",
    "conformer.layers.{}.ffn2.intermediate_dense": "encoder.blocks.{}.ffn2.linear_in",
    "conformer.layers.{}.ffn2.output_dense": "encoder.blocks.{}.ffn2.linear_out",
    "conformer.layers.{}.final_layer_norm": "encoder.blocks.{}.final_norm",
    "conformer.layer_norm": "encoder.final_norm",
    "conformer.pos_conv_embed": None,
    "quantizer_melspec_2048": None,
    "linear": None,
    "cls_token": None,
    # Training-only extras some MuQ configs add (use_rvq_target, reconstruction, masking).
    "rvq": None,
    "recon_proj": None,
    "mask_emb": None,
}

# Dropped MuQ paths whose shapes depend on training options: accepted without a check.
MUQ_UNCHECKED = ("rvq", "recon_proj", "mask_emb")

# PromptCondAudioDiffusion (mucodec.pt) paths the tokenizer reads, besides its embedded
# MuQ copy under "muencoder.model." (mapped by `MUQ_KEY_MAP`). The file's other keys are
# the decoder's (`mucodec.decoder.checkpoint.MAIN_KEY_MAP`) and outside this table's scope.
MUCODEC_KEY_MAP: dict[str, str | None] = {
    "rvq_muencoder_emb": "quantizer",
    "rsq48tomuencoder.kernel": "frontend.resampler.kernel",
}
MUQ_PREFIX = "model."
MUCODEC_MUQ_PREFIX = "muencoder.model."


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def expected_muq_shapes(
    encoder: MuEncoderConfig, pos_conv_style: str = "parametrizations", n_fft: int = 2048
) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the official MuQModel state dict for this config.

    Built from our modules of the full depth on the meta device (no memory), mapped back
    through the inverse of `MUQ_KEY_MAP`, plus the unused tensors' shapes from the config.

    Args:
        encoder: The encoder config (its `depth` is the checkpoint's depth).
        pos_conv_style: "parametrizations" (torch >= 2.1 saves) or "weight_norm" (older).
        n_fft: The mel front end's FFT size (window and filterbank shapes).

    Returns:
        {official key (with "model."): shape}.
    """
    dim, mels = encoder.dim, encoder.n_mels
    with torch.device("meta"):
        subsampling = build_subsampling(encoder)
        block = build_conformer_block(encoder)
    ours: dict[str, tuple[int, ...]] = {
        "frontend.mel.spectrogram.window": (n_fft,),
        "frontend.mel.mel_scale.fb": (n_fft // 2 + 1, mels),
    }
    ours.update({f"encoder.subsampling.{k}": s for k, s in _shapes(subsampling).items()})
    for i in range(encoder.depth):
        ours.update({f"encoder.blocks.{i}.{k}": s for k, s in _shapes(block).items()})
    ours["encoder.rotary.inv_freq"] = (encoder.head_dim // 2,)
    ours["encoder.final_norm.weight"] = ours["encoder.final_norm.bias"] = (dim,)

    inverse = invert(MUQ_KEY_MAP)
    shapes = {MUQ_PREFIX + str(map_key(k, inverse)): s for k, s in ours.items()}
    kernel, groups = encoder.pos_conv_kernel, encoder.pos_conv_groups
    g, v = (
        ("parametrizations.weight.original0", "parametrizations.weight.original1")
        if pos_conv_style == "parametrizations"
        else ("weight_g", "weight_v")
    )
    codebook, code_dim = encoder.pretrain_codebook_size, encoder.pretrain_codebook_dim
    shapes.update(
        {
            "model.cls_token": (dim,),
            "model.conformer.pos_conv_embed.conv.bias": (dim,),
            f"model.conformer.pos_conv_embed.conv.{g}": (1, 1, kernel),
            f"model.conformer.pos_conv_embed.conv.{v}": (dim, dim // groups, kernel),
            "model.linear.weight": (codebook, dim),
            "model.linear.bias": (codebook,),
            "model.quantizer_melspec_2048.random_projection": (mels * 4, code_dim),
            "model.quantizer_melspec_2048.codebook": (codebook, code_dim),
        }
    )
    return shapes


def _unchecked(key: str) -> bool:
    short = key.removeprefix(MUQ_PREFIX)
    return any(short == p or short.startswith(p + ".") for p in MUQ_UNCHECKED)


def verify_muq_state(state: Mapping[str, Tensor], encoder: MuEncoderConfig, source: str) -> None:
    """Checks an official MuQModel state dict against `expected_muq_shapes`.

    Args:
        state: Official key (with "model.") -> tensor.
        encoder: The encoder config the file must match.
        source: Name of the file, for the message.

    Raises:
        CheckpointError: listing missing keys, shape mismatches and unknown keys.
    """
    style = (
        "weight_norm"
        if "model.conformer.pos_conv_embed.conv.weight_g" in state
        else "parametrizations"
    )
    expected = expected_muq_shapes(encoder, style)
    given = {k: tuple(v.shape) for k, v in state.items() if not _unchecked(k)}
    problems = compare_shapes(expected, given)
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def _load(path: str | Path) -> Any:
    try:
        return load_checkpoint(path)
    except CheckpointFormatError as error:
        raise CheckpointError(str(error)) from error


def read_muq_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The MuQModel state dict inside a fairseq checkpoint (`muq.pt`), read safely.

    Args:
        path: The official `muq.pt`.

    Returns:
        Official key (with "model.") -> tensor.

    Raises:
        CheckpointError: if the file has no fairseq `"model"` dict of MuQ weights.
        FileNotFoundError: if there is no such file.
    """
    obj = _load(path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and any(str(k).startswith("muencoder.") for k in obj):
        raise CheckpointError(
            f"{path} looks like mucodec.pt (has 'muencoder.*'); pass it as mucodec"
        )
    if isinstance(obj, InertObject):
        raise CheckpointError(f"{path}: holds a pickled {obj.qualified_name}, not weights")
    state = as_tensor_dict(obj, str(path))
    if not any(k.startswith(MUQ_PREFIX + "conformer.") for k in state):
        raise CheckpointError(f"{path}: no 'model.conformer.*' keys; this is not a MuQ checkpoint")
    return state


def read_mucodec_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """PromptCondAudioDiffusion's state dict (`mucodec.pt`), read safely.

    A `{"state_dict": ...}` or `{"model": ...}` wrapper is unwrapped.

    Args:
        path: The official `mucodec.pt`.

    Returns:
        Official key -> tensor (non-tensor entries left out).

    Raises:
        CheckpointError: if the file has no `rvq_muencoder_emb.*` keys.
    """
    obj = _load(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if isinstance(obj, Mapping):
        obj = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    state = as_tensor_dict(obj, str(path))
    if not any(k.startswith("rvq_muencoder_emb.") for k in state):
        hint = " (it looks like muq.pt)" if any(k.startswith(MUQ_PREFIX) for k in state) else ""
        raise CheckpointError(f"{path}: no 'rvq_muencoder_emb.*' keys; not mucodec.pt{hint}")
    return state


@dataclass
class LoadReport:
    """Where the tokenizer's weights came from and what was dropped.

    Attributes:
        encoder_source: File the MuQ weights were taken from.
        dropped: Official keys verified but not needed for the configured layer.
        differing_copies: Keys whose muq.pt and mucodec.pt copies differ (when both given).
    """

    encoder_source: str
    dropped: list[str] = field(default_factory=list)
    differing_copies: list[str] = field(default_factory=list)


def map_official_state(
    config: TokenizerConfig,
    model_keys: Iterable[str],
    mucodec_state: Mapping[str, Tensor],
    muq_state: Mapping[str, Tensor] | None = None,
    sources: tuple[str, str] = ("mucodec.pt", "muq.pt"),
) -> tuple[dict[str, Tensor], LoadReport]:
    """Verifies official state dicts and maps them to our keys.

    The MuQ weights come from mucodec.pt's `muencoder.*` when present (as in the official
    code, which loads it last), else from muq.pt.

    Args:
        config: Our tokenizer config (depth, layer, RVQ layout).
        model_keys: The keys of our built model, which the result must cover exactly.
        mucodec_state: PromptCondAudioDiffusion state dict.
        muq_state: MuQModel state dict (`model.*`), optional if mucodec.pt has the encoder.
        sources: Names used in error messages.

    Returns:
        ({our key: tensor}, `LoadReport`).

    Raises:
        CheckpointError: on any missing, misshapen or unknown key, or no encoder weights.
    """
    mucodec_name, muq_name = sources
    embedded = {
        MUQ_PREFIX + k.removeprefix(MUCODEC_MUQ_PREFIX): v
        for k, v in mucodec_state.items()
        if k.startswith(MUCODEC_MUQ_PREFIX)
    }
    if embedded:
        verify_muq_state(embedded, config.encoder, f"{mucodec_name} (muencoder.*)")
    if muq_state is not None:
        verify_muq_state(muq_state, config.encoder, muq_name)
    if not embedded and muq_state is None:
        raise CheckpointError(f"{mucodec_name} has no 'muencoder.*' weights; also give muq.pt")
    encoder_state = embedded or dict(muq_state or {})
    report = LoadReport(encoder_source=mucodec_name if embedded else muq_name)
    if embedded and muq_state is not None:
        report.differing_copies = sorted(
            k for k, v in embedded.items() if k in muq_state and not torch.equal(v, muq_state[k])
        )

    wanted = set(model_keys)
    mapped: dict[str, Tensor] = {}
    for key, tensor in encoder_state.items():
        target = map_key(key.removeprefix(MUQ_PREFIX), MUQ_KEY_MAP)
        if target in wanted:
            mapped[target] = tensor
        else:
            report.dropped.append(key)

    rvq_expected = {k for k in wanted if k.startswith("quantizer.")}
    rest = map_state(mucodec_state, MUCODEC_KEY_MAP, scope=MUCODEC_KEY_MAP, source=mucodec_name)
    for ours, tensor in rest.items():
        if ours not in wanted:
            raise CheckpointError(
                f"{mucodec_name}: unknown key {ours!r} after mapping (does the config's RVQ "
                f"layout {config.quantizer} match the checkpoint?)"
            )
        mapped[ours] = tensor
    missing = sorted(wanted - set(mapped))
    if missing:
        hint = " (RVQ)" if set(missing) & rvq_expected else ""
        raise CheckpointError(f"{mucodec_name}: missing keys{hint}: {missing[:8]}")
    return mapped, report


def save_converted(
    directory: str | Path,
    config: TokenizerConfig,
    state: Mapping[str, Tensor],
    sources: Mapping[str, Any] | None = None,
) -> str:
    """Writes our checkpoint directory (weights, config with sha256, checksum file).

    Args:
        directory: Output directory (created).
        config: The tokenizer config the weights belong to.
        state: Our state dict.
        sources: Provenance to record (e.g. official file names and their sha256).

    Returns:
        The sha256 of the weights file.
    """
    return write_checkpoint_dir(directory, FORMAT, FORMAT_VERSION, config.to_dict(), state, sources)


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """A loaded converted checkpoint.

    Attributes:
        config: The tokenizer config it was written with.
        state: Our state dict.
        sha256: The verified sha256 of the weights file.
        sources: Recorded provenance.
    """

    config: TokenizerConfig
    state: dict[str, Tensor]
    sha256: str
    sources: dict[str, Any]


def load_converted(directory: str | Path, verify_sha256: bool = True) -> ConvertedCheckpoint:
    """Reads a directory written by `save_converted`.

    Args:
        directory: The checkpoint directory.
        verify_sha256: Hash the weights and compare with the recorded sha256.

    Returns:
        The config, state dict, verified sha256 and provenance.

    Raises:
        CheckpointError: on an unknown format or version, or a hash mismatch.
    """
    header, state = read_checkpoint_dir(directory, FORMAT, FORMAT_VERSION, verify_sha256)
    return ConvertedCheckpoint(
        config=TokenizerConfig.from_dict(header["config"]),
        state=state,
        sha256=header["sha256"],
        sources=header.get("sources", {}),
    )
