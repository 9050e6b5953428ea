"""The official DAC state dict -> `DacModel`'s: weight norm folded, then one key map.

The official model stores each conv with the old-style weight norm (`weight_g`, `weight_v`,
dim 0); `DacModel` has a plain `weight`. `fold_weight_norm` computes the effective weight as
the official forward does, `torch._weight_norm(v, g, 0)` (bit-exact), and names it
`<conv>.weight`. Then `official_key_map` renames the official module tree to transformers'.

The official modules are numbered by position (`nn.Sequential`): the encoder has its first
conv at `block.0`, one EncoderBlock per stride at `block.1..n`, then a Snake and the last
conv at `block.n+1`, `block.n+2`; the decoder likewise under `model.*`. So the table is
written for a given number of strides n, with literal indices (the key-map language fills
`{}` with the same index, and ours are shifted by one). transformers' own converter
hard-codes n = 4.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from core.key_map import CheckpointError, KeyMap

# Inside a ResidualUnit: Snake, dilated k7 conv, Snake, k1 conv.
_RESIDUAL_UNIT = {"block.0": "snake1", "block.1": "conv1", "block.2": "snake2", "block.3": "conv2"}


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
