"""The flow-matching velocity network: a 2-D DiT with adaLN-single timestep conditioning.

MuCodec's estimator is diffusers' `Transformer2DModel` in its PixArt-alpha configuration
(Chen et al., 2023, PixArt-alpha, section 2.3: "adaLN-single"): the latent "image" of
[time x frequency] is cut into 2x2 patches, the tokens get a fixed 2-D sin-cos position
table, and one shared MLP of the timestep produces the scale/shift/gate of every block,
each block adding its own learned `scale_shift_table`. The reference's quirks are kept
because the weights were trained with them (decoder spec section 6):

* the sin-cos table is recomputed for every grid and its positions are *normalised by the
  grid length* (`pos = h * base / H / interpolation_scale`); its first half encodes the
  frequency patch index, its second half the time patch index;
* the timestep sinusoid is `[cos, sin]` of `1000 * t * 10000^(-i/256)`;
* every batch row has its own timestep (the reference only works at batch size 1).

Einstein notation used in shape comments:
    B batch, C channels, T latent frames, F frequency bins, H = T/p time patches,
    W = F/p frequency patches, N = H*W tokens, D width, p patch size.

Our parameter names are short (`blocks.{i}.attn.to_q`); `decoder_checkpoint.py` maps the
official `cfm_wrapper.estimator.transformer_blocks.{i}.attn1.to_q` names onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mucodec.decoder.config import DiTConfig

__all__ = ["DiT", "DiTBlock", "sincos_position_table", "timestep_features"]


def sincos_position_table(
    height: int, width: int, dim: int, base_size: int, interpolation_scale: float
) -> Tensor:
    """The reference's 2-D sin-cos table for an H x W patch grid.

    Positions are computed in float32 as the reference does
    (`arange(H) / (H / base_size) / interpolation_scale`), the sinusoids in float64.

    Args:
        height: H, time patches.
        width: W, frequency patches.
        dim: D, table width (a multiple of 4).
        base_size: Base grid size (`sample_size / patch_size`).
        interpolation_scale: Divides the normalised positions.

    Returns:
        [N, D] float32 table, token n = h * W + w; columns
        `[sin(w), cos(w), sin(h), cos(h)]` encodings, each D/4 wide.
    """
    pos_h = torch.arange(height, dtype=torch.float32) / (height / base_size) / interpolation_scale
    pos_w = torch.arange(width, dtype=torch.float32) / (width / base_size) / interpolation_scale
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [D/4]

    def encode(pos: Tensor) -> Tensor:  # [M] -> [M, D/2]
        angles = pos.double()[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    enc_w = encode(pos_w)[None, :, :].expand(height, width, dim // 2)  # [H, W, D/2]
    enc_h = encode(pos_h)[:, None, :].expand(height, width, dim // 2)  # [H, W, D/2]
    return torch.cat([enc_w, enc_h], dim=-1).reshape(height * width, dim).float()


def timestep_features(t: Tensor, dim: int, scale: float) -> Tensor:
    """Sinusoidal features of flow time, `[cos, sin]` of `scale * t * 10000^(-i/(dim/2))`.

    Args:
        t: [B] times in [0, 1).
        dim: Feature width (even).
        scale: Multiplies `t * freq` (1000: the range diffusers' embedding was built for).

    Returns:
        [B, dim] float32 features.
    """
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / half)  # [dim/2]
    args = (t.float()[:, None] * freqs[None, :]) * scale  # [B, dim/2]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections, via SDPA.

    SDPA picks the flash / memory-efficient kernel on GPU; a 512-frame window has 4096
    tokens, so the explicit attention matrix would be 22 x 4096^2 per row.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width (channels per token); must be divisible by `num_heads`.
            num_heads: Attention heads.
        """
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attends over all tokens of the grid.

        Args:
            x: [B, N, D] tokens.

        Returns:
            [B, N, D].
        """
        batch, tokens, dim = x.shape
        heads = self.num_heads

        def split(y: Tensor) -> Tensor:  # [B, N, D] -> [B, heads, N, D/heads]
            return y.view(batch, tokens, heads, dim // heads).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D/heads]
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """Linear -> GELU (tanh approximation) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width (input and output channels).
            hidden: Hidden width.
        """
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Applies the MLP token-wise.

        Args:
            x: [B, N, D] tokens.

        Returns:
            [B, N, D].
        """
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm transformer block modulated by adaLN-single.

    The six modulation vectors (shift/scale/gate for attention and MLP) are the shared
    timestep projection plus this block's learned `modulation` table.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, eps: float) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width.
            num_heads: Attention heads.
            mlp_ratio: Hidden width of the MLP as a multiple of `dim`.
            eps: Epsilon of the (affine-free) layer norms.
        """
        super().__init__()
        self.eps = eps
        self.modulation = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.attn = SelfAttention(dim, num_heads)
        self.mlp = FeedForward(dim, mlp_ratio * dim)

    def forward(self, x: Tensor, time_mod: Tensor) -> Tensor:
        """Applies the block.

        Args:
            x: [B, N, D] tokens.
            time_mod: [B, 6, D] shared timestep modulation.

        Returns:
            [B, N, D].
        """
        dim = x.shape[-1]
        mod = self.modulation[None] + time_mod  # [B, 6, D]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)

        a = F.layer_norm(x, (dim,), eps=self.eps) * (1 + scale_msa) + shift_msa
        x = gate_msa * self.attn(a) + x
        a = F.layer_norm(x, (dim,), eps=self.eps) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.mlp(a) + x


class TimestepEmbedding(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear (diffusers `TimestepEmbedding`)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        """Creates the layers with fresh weights.

        Args:
            in_dim: Width of the sinusoidal timestep features.
            dim: Output width (the model width).
        """
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, features: Tensor) -> Tensor:
        """Embeds sinusoidal timestep features.

        Args:
            features: [B, in_dim] sinusoidal features of the timestep.

        Returns:
            [B, D].
        """
        return self.linear_2(F.silu(self.linear_1(features)))


class DiT(nn.Module):
    """Velocity network v(h, t) on the [time x frequency] latent grid.

    Input channels are `[x | in-context latents | cond]` (assembled by `flow.py`); the
    output is the velocity of the `x` channels.
    """

    def __init__(self, config: DiTConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: Widths, depth, patch size and channels of the estimator.
        """
        super().__init__()
        self.config = config
        dim, p = config.width, config.patch_size
        self.patch_embed = nn.Conv2d(config.in_channels, dim, kernel_size=p, stride=p)
        self.time_embed = TimestepEmbedding(config.time_proj_dim, dim)
        self.time_modulation = nn.Linear(dim, 6 * dim)
        self.blocks = nn.ModuleList(
            DiTBlock(dim, config.num_heads, config.mlp_ratio, config.norm_eps)
            for _ in range(config.num_layers)
        )
        self.final_modulation = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, p * p * config.out_channels)
        self._tables: dict[tuple[int, int, torch.device], Tensor] = {}

    def position_table(self, height: int, width: int, device: torch.device) -> Tensor:
        """The sin-cos position table of an H x W patch grid (cached; not a parameter).

        Args:
            height: Patches along time.
            width: Patches along frequency.
            device: Where the table is used.

        Returns:
            [H * W, D] float32.
        """
        key = (height, width, device)
        if key not in self._tables:
            cfg = self.config
            table = sincos_position_table(
                height, width, cfg.width, cfg.pos_base_size, cfg.pos_interpolation_scale
            )
            self._tables[key] = table.to(device)
        return self._tables[key]

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        """Predicts the velocity.

        Args:
            h: [B, C_in, T, F] channels `[x | in-context | cond]`; T and F multiples of p.
            t: [B] flow times (one per row).

        Returns:
            [B, C_out, T, F] velocity.
        """
        cfg = self.config
        batch, _, frames, bins = h.shape
        p, c_out, dim = cfg.patch_size, cfg.out_channels, cfg.width
        height, width = frames // p, bins // p
        if t.shape != (batch,):
            raise ValueError(f"t must be [B={batch}], got {tuple(t.shape)}")

        # Patch tokens + fixed position table: [B, C_in, T, F] -> [B, N, D].
        x = self.patch_embed(h).flatten(2).transpose(1, 2)
        x = (x + self.position_table(height, width, h.device)).to(x.dtype)

        # adaLN-single: one timestep embedding for all blocks.
        features = timestep_features(t, cfg.time_proj_dim, cfg.time_scale)  # [B, 512]
        emb = self.time_embed(features.to(x.dtype))  # [B, D]
        time_mod = self.time_modulation(F.silu(emb)).view(batch, 6, dim)  # [B, 6, D]

        for block in self.blocks:
            x = block(x, time_mod)  # [B, N, D]

        # Final modulated norm (shift, scale; no gate) and projection to patches.
        shift, scale = (self.final_modulation[None] + emb[:, None]).chunk(2, dim=1)
        x = F.layer_norm(x, (dim,), eps=cfg.norm_eps) * (1 + scale) + shift
        x = self.proj_out(x)  # [B, N, p*p*C_out]

        # Unpatchify: token (h, w), feature (i, j, c) -> out[:, c, p*h + i, p*w + j].
        x = x.view(batch, height, width, p, p, c_out)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, c_out, frames, bins)
