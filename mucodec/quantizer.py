"""Residual vector quantiser with factorised, L2-normalised codes (DAC style).

MuCodec quantises the MuEncoder features with the "improved RVQGAN" quantiser of
Kumar et al., 2023 (High-Fidelity Audio Compression with Improved RVQGAN, section 3.2):
each stage projects the residual to a low-dimensional space (factorised codes), L2
normalises both the projection and the codebook, and picks the nearest code, i.e. the
code of maximum cosine similarity. The quantised vector handed to the next stage is the
*raw* codebook row projected back to the model width.

Einstein notation used in shape comments:
    B batch, D model width (input_dim), T frames, N stages (n_codebooks),
    d code width (codebook_dim), K codebook size.

State-dict keys match the official `descript_quantize3.ResidualVectorQuantize` exactly
(modulo the `rvq_muencoder_emb.` prefix inside `mucodec.pt`):
`quantizers.{i}.in_proj.{weight_g,weight_v,bias}`, `quantizers.{i}.out_proj.{...}`,
`quantizers.{i}.codebook.weight` and the training-only buffer `quantizers.{i}.stale_counter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.precision import float32_region
from mucodec.config import QuantizerConfig

__all__ = [
    "QuantizedResult",
    "QuantizerConfig",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "WeightNormConv1d",
]

# Rows of the (rows x K) distance matrix computed at once; bounds memory to ~256 MB at
# K = 16384 (a batch of 32 segments of 896 frames would otherwise need 1.9 GB).
_DISTANCE_ELEMENTS_PER_CHUNK = 2**26


class WeightNormConv1d(nn.Module):
    """A 1-D convolution whose weight is `g * v / ||v||` (weight norm over dim 0).

    It stores `weight_g` [C_out, 1, 1], `weight_v` [C_out, C_in, k] and `bias`, the key
    names of the legacy `torch.nn.utils.weight_norm` the reference was trained with, and
    forms the weight with the same primitive (`torch._weight_norm`) so results are
    bit-identical. A plain module avoids the deprecated hook-based API.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        """Creates the layers with fresh weights.

        Args:
            in_channels: Input channels C_in.
            out_channels: Output channels C_out.
            kernel_size: Kernel size k.
        """
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight_v, a=5**0.5)
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(1, 2), keepdim=True))

    @property
    def weight(self) -> Tensor:
        """The effective weight [C_out, C_in, k]."""
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: Tensor) -> Tensor:
        """Applies the weight-normalised convolution.

        Args:
            x: [B, C_in, T].

        Returns:
            [B, C_out, T].
        """
        return F.conv1d(x, self.weight, self.bias)


@dataclass(frozen=True)
class QuantizedResult:
    """Output of `ResidualVectorQuantizer.forward`.

    Attributes:
        codes: [B, N, T] int64 code indices.
        z_q: [B, D, T] sum of the stages' quantised outputs.
        latents: [B, N*d, T] each stage's projection before quantisation, concatenated.
    """

    codes: Tensor
    z_q: Tensor
    latents: Tensor


class VectorQuantizer(nn.Module):
    """One stage: project D -> d, pick the nearest L2-normalised code, project back."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        """Creates the layers with fresh weights.

        Args:
            input_dim: Feature width D.
            codebook_size: Codes K.
            codebook_dim: Width d of the factorised code space.
        """
        super().__init__()
        self.in_proj = WeightNormConv1d(input_dim, codebook_dim)
        self.out_proj = WeightNormConv1d(codebook_dim, input_dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        # Training-only usage counter of the reference; kept so checkpoints load strictly.
        self.register_buffer("stale_counter", torch.zeros(codebook_size))

    def lookup(self, z_e: Tensor) -> Tensor:
        """Nearest normalised code of every frame.

        Args:
            z_e: [B, d, T] projected residual.

        Returns:
            [B, T] int64 indices into the codebook.
        """
        batch, _, frames = z_e.shape
        encodings = F.normalize(z_e.transpose(1, 2).reshape(batch * frames, -1))  # [BT, d]
        codebook = F.normalize(self.codebook.weight)  # [K, d]
        codebook_sq = codebook.pow(2).sum(1, keepdim=True).t()  # [1, K]
        rows = max(1, _DISTANCE_ELEMENTS_PER_CHUNK // codebook.shape[0])
        indices = []
        for chunk in encodings.split(rows):
            # Squared euclidean distance written as the reference writes it, so that the
            # float rounding (and hence any near-tie) resolves identically.
            dist = (
                chunk.pow(2).sum(1, keepdim=True) - 2 * chunk @ codebook.t() + codebook_sq
            )  # [rows, K]
            indices.append((-dist).max(1)[1])
        return torch.cat(indices).reshape(batch, frames)

    def embed(self, codes: Tensor) -> Tensor:
        """Looks codes up in the codebook.

        Args:
            codes: [B, T] int indices.

        Returns:
            [B, d, T] raw (unnormalised) codebook rows.
        """
        return F.embedding(codes, self.codebook.weight).transpose(1, 2)

    def forward(self, residual: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantises one residual.

        Args:
            residual: [B, D, T].

        Returns:
            (q, codes, z_e): the stage output [B, D, T], codes [B, T], projection [B, d, T].
        """
        z_e = self.in_proj(residual)  # [B, d, T]
        codes = self.lookup(z_e)  # [B, T]
        z_c = self.embed(codes)  # [B, d, T]
        # The reference's straight-through form; numerically z_c up to rounding, kept so
        # the residual handed to the next stage is bit-identical to the official one.
        z_c = z_e + (z_c - z_e)
        return self.out_proj(z_c), codes, z_e


class ResidualVectorQuantizer(nn.Module):
    """N stages of `VectorQuantizer`, each quantising what the previous ones left.

    Public API (stable; the decoder side uses `from_codes`):
        `encode(z) -> codes`, `from_codes(codes) -> z_q`, `forward(z) -> QuantizedResult`.
    """

    def __init__(self, config: QuantizerConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: Widths, codebook count and size.
        """
        super().__init__()
        self.config = config
        self.quantizers = nn.ModuleList(
            VectorQuantizer(config.input_dim, config.codebook_size, config.codebook_dim)
            for _ in range(config.n_codebooks)
        )

    @property
    def n_codebooks(self) -> int:
        """Number of residual stages (N)."""
        return len(self.quantizers)

    @property
    def codebook_size(self) -> int:
        """Entries per codebook (K)."""
        return self.config.codebook_size

    def forward(self, z: Tensor) -> QuantizedResult:
        """Quantises features with every stage, always in float32.

        Args:
            z: [B, D, T] encoder features (any float dtype).

        Returns:
            `QuantizedResult` with codes [B, N, T], z_q [B, D, T], latents [B, N*d, T].
        """
        with float32_region(z.device):
            residual = z.float()
            z_q = torch.zeros_like(residual)
            codes, latents = [], []
            for stage in self.quantizers:
                q, stage_codes, z_e = stage(residual)
                z_q = z_q + q
                residual = residual - q
                codes.append(stage_codes)
                latents.append(z_e)
            return QuantizedResult(
                codes=torch.stack(codes, dim=1),  # [B, N, T]
                z_q=z_q,
                latents=torch.cat(latents, dim=1),  # [B, N*d, T]
            )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Quantises features to codes.

        Args:
            z: [B, D, T] features.

        Returns:
            [B, N, T] int64 codes.
        """
        return self.forward(z).codes

    def from_codes(self, codes: Tensor) -> Tensor:
        """Embeds codes back to the model width: the sum over stages of out_proj(C_i[c_i]).

        Args:
            codes: [B, n, T] integer codes, n <= N; the first n stages are used.

        Returns:
            [B, D, T] float32 embeddings (the official `from_codes(codes)[0]`).

        Raises:
            ValueError: if codes has more stages than this quantiser or a bad shape.
        """
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_codebooks:
            raise ValueError(
                f"codes must be [B, n, T] with 1 <= n <= {self.n_codebooks}, "
                f"got {tuple(codes.shape)}"
            )
        with float32_region(codes.device):
            stages = [
                stage.out_proj(stage.embed(codes[:, i].long()))  # [B, D, T]
                for i, stage in enumerate(self.quantizers[: codes.shape[1]])
            ]
            z_q = stages[0]
            for q in stages[1:]:
                z_q = z_q + q
            return z_q
