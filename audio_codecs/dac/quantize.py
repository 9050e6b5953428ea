"""The residual vector quantiser's encode path, with the official nearest-code rule.

transformers' `DacVectorQuantize.decode_latents` scores codes as
`-(|e|^2 - 2 e.c) + |c|^2`, the official `dac.nn.quantize.VectorQuantize` as
`-(|e|^2 - 2 e.c + |c|^2)`. On L2-normalised vectors |c|^2 is 1 up to ~4e-7, so the two
agree except on near-ties; this module computes the official score so that near-ties
resolve as the official tool resolves them. Everything else (projections, codebooks) is
read from the `DacResidualVectorQuantizer` of a `DacModel`.

Legend: B batch, D latent channels, d codebook_dim, N stages used, T frames, C codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Quantized:
    """What the official `DAC.encode` returns, as a dataclass.

    Attributes:
        z: Quantised latent, the sum of the stages' `out_proj` outputs `[B, D, T]`.
        codes: Code indices `[B, N, T]` int64.
        latents: Every stage's `in_proj` output, concatenated `[B, N*d, T]`.
        commitment_loss: Sum over stages of the batch-mean MSE(z_e, z_q) `[]`.
        codebook_loss: The same value in eval (it differs only in which side is detached).
    """

    z: Tensor
    codes: Tensor
    latents: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


def nearest_codes(latents: Tensor, codebook: Tensor) -> Tensor:
    """The official lookup: the code with the highest cosine score, `[B, d, T]` -> `[B, T]`.

    Args:
        latents: One stage's `in_proj` output `[B, d, T]`.
        codebook: The stage's codebook `[C, d]`.

    Returns:
        Indices `[B, T]` int64.
    """
    batch = latents.shape[0]
    encodings = F.normalize(latents.transpose(1, 2).reshape(-1, latents.shape[1]))  # [B*T, d]
    codes = F.normalize(codebook)  # [C, d]
    distance = (
        encodings.pow(2).sum(1, keepdim=True)
        - 2 * encodings @ codes.t()
        + codes.pow(2).sum(1, keepdim=True).t()
    )  # [B*T, C]; the official subtracts |c|^2 (transformers adds it).
    return (-distance).max(1)[1].reshape(batch, -1)


def quantize(quantizer: nn.Module, features: Tensor, n_quantizers: int | None = None) -> Quantized:
    """The official `ResidualVectorQuantize.forward` in eval mode.

    Args:
        quantizer: A `DacResidualVectorQuantizer` (its `quantizers` hold in_proj, out_proj
            and the codebook of each stage).
        features: Encoder output `[B, D, T]`.
        n_quantizers: Stages to use; None: all.

    Returns:
        The quantised latent, codes, latents and losses.
    """
    stages = list(quantizer.quantizers)
    used = len(stages) if n_quantizers is None else min(n_quantizers, len(stages))
    z: Tensor | float = 0.0
    residual = features  # [B, D, T]
    commitment: Tensor | float = 0.0
    codebook_loss: Tensor | float = 0.0
    codes, latents = [], []
    for stage in stages[:used]:
        z_e = stage.in_proj(residual)  # [B, d, T]
        indices = nearest_codes(z_e, stage.codebook.weight)  # [B, T]
        z_q = F.embedding(indices, stage.codebook.weight).transpose(1, 2)  # [B, d, T]
        # Per item, as the official code, then the batch mean of each stage is summed.
        commitment = commitment + F.mse_loss(z_e, z_q, reduction="none").mean([1, 2]).mean()
        codebook_loss = codebook_loss + F.mse_loss(z_q, z_e, reduction="none").mean([1, 2]).mean()
        z_i = stage.out_proj(z_e + (z_q - z_e))  # [B, D, T]; the straight-through form.
        z = z + z_i
        residual = residual - z_i
        codes.append(indices)
        latents.append(z_e)
    assert isinstance(z, Tensor) and isinstance(commitment, Tensor)
    assert isinstance(codebook_loss, Tensor)
    return Quantized(
        z=z,
        codes=torch.stack(codes, dim=1),  # [B, N, T]
        latents=torch.cat(latents, dim=1),  # [B, N*d, T]
        commitment_loss=commitment,
        codebook_loss=codebook_loss,
    )


def from_codes(quantizer: nn.Module, codes: Tensor) -> tuple[Tensor, Tensor]:
    """The official `ResidualVectorQuantize.from_codes`: codes `[B, N, T]` -> (z, latents).

    Args:
        quantizer: A `DacResidualVectorQuantizer`.
        codes: Code indices `[B, N, T]` (N may be fewer than the stages).

    Returns:
        z `[B, D, T]` (sum of `out_proj` of the codebook rows) and the rows `[B, N*d, T]`.
    """
    z, rows = quantizer.from_codes(codes)[:2]
    return z, rows
