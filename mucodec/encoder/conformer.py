"""The Conformer block of MuQ (HF Wav2Vec2-Conformer with rotary attention).

Gulati et al., 2020 (Conformer: Convolution-augmented Transformer for Speech Recognition):
a block is a macaron pair of half-step feed-forwards around self-attention and a
convolution module, then a LayerNorm. The MuQ variant (encoder spec, section 7):

* rotary position information is applied to the attention's *input* (LayerNorm output),
  per 64-wide head slice with rotate-half pairing (i, i + 32); q and k are projected from
  the rotated input, v from the unrotated one. This is not standard RoPE on q and k and
  cannot be moved after the projections;
* attention is global (no mask) in the reference; here keys past a segment's end are
  masked so that padded batches give each segment the output it gets alone.

Each residual sub-layer is its own module returning the updated residual stream, so the
block reads as four lines and each step can be observed with a forward hook.

Shape legend: B batch, T frames, D model width, H heads, E head width (D / H).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """cos / sin tables of the rotary embedding, [T, E] each, in float32.

    inv_freq[i] = 1 / base^(2i / E) is kept as a persistent buffer (the checkpoint has it).
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        """Creates the layers with fresh weights.

        Args:
            head_dim: Channels per attention head E (even).
            base: Base of the rotary frequencies.
        """
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        self.register_buffer("inv_freq", 1.0 / (base**exponents))

    def forward(self, frames: int) -> tuple[Tensor, Tensor]:
        """The rotary tables for `frames` positions.

        Args:
            frames: Sequence length T.

        Returns:
            (cos, sin), each [T, E]: angles t * inv_freq duplicated along E.
        """
        positions = torch.arange(frames, device=self.inv_freq.device).type_as(self.inv_freq)
        angles = torch.outer(positions, self.inv_freq)  # [T, E/2]
        angles = torch.cat((angles, angles), dim=-1)  # [T, E]
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> Tensor:
    """Rotates each head slice of x: x * cos + rotate_half(x) * sin.

    Args:
        x: [B, T, D] attention input (after LayerNorm).
        cos, sin: [T, E] tables from `RotaryEmbedding`.
        num_heads: H; D = H * E.

    Returns:
        [B, T, D], in x's dtype.
    """
    batch, frames, dim = x.shape
    x = x.view(batch, frames, num_heads, dim // num_heads)  # [B, T, H, E]
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)  # [B, T, H, E]
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, E]
    return ((x * cos) + (rotated * sin)).to(x.dtype).view(batch, frames, dim)


class HalfStepFeedForward(nn.Module):
    """x + 0.5 * Linear(SiLU(Linear(LayerNorm(x)))): the macaron half-step FFN."""

    def __init__(self, dim: int, hidden_dim: int, eps: float) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width D.
            hidden_dim: Hidden width.
            eps: LayerNorm epsilon.
        """
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.linear_in = nn.Linear(dim, hidden_dim)
        self.linear_out = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Applies the half-step feed-forward with its residual.

        Args:
            x: [B, T, D].

        Returns:
            [B, T, D].
        """
        h = self.linear_out(F.silu(self.linear_in(self.norm(x))))
        return h * 0.5 + x


class RotarySelfAttention(nn.Module):
    """x + Attention(LayerNorm(x)) with rotary applied to the q/k input."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width D; must be divisible by `num_heads`.
            num_heads: Attention heads.
            eps: LayerNorm epsilon.
        """
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, H, T, E]."""
        batch, frames, dim = x.shape
        return x.view(batch, frames, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self, x: Tensor, rotary: tuple[Tensor, Tensor], key_mask: Tensor | None = None
    ) -> Tensor:
        """Self-attention over all (valid) frames.

        Args:
            x: [B, T, D] residual stream.
            rotary: (cos, sin) tables, [T, E] each.
            key_mask: [B, 1, 1, T] bool, True where a key may be attended; None = all.

        Returns:
            [B, T, D] updated residual stream.
        """
        batch, frames, dim = x.shape
        h = self.norm(x)
        h_rot = apply_rotary(h, *rotary, num_heads=self.num_heads)  # [B, T, D]
        q = self._heads(self.linear_q(h_rot))  # [B, H, T, E]
        k = self._heads(self.linear_k(h_rot))
        v = self._heads(self.linear_v(h))
        # Scale 1 / sqrt(E) is SDPA's default.
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # [B, H, T, E]
        attended = attended.transpose(1, 2).reshape(batch, frames, dim)  # heads merged
        return self.linear_out(attended) + x


class ConvolutionModule(nn.Module):
    """x + PW2(SiLU(BN(DW(GLU(PW1(LayerNorm(x))))))), depthwise kernel k, zero padding."""

    def __init__(self, dim: int, kernel_size: int, eps: float) -> None:
        """Creates the layers with fresh weights.

        Args:
            dim: Model width D.
            kernel_size: Depthwise kernel size k (odd).
            eps: LayerNorm and BatchNorm epsilon.
        """
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.depthwise = nn.Conv1d(
            dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim, bias=False
        )
        self.batch_norm = nn.BatchNorm1d(dim, eps=eps)
        self.pointwise_out = nn.Conv1d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Applies the convolution module with its residual.

        Padded frames are zeroed before the depthwise convolution, so a segment's last
        frames see zeros there exactly as they see the convolution's padding when alone.

        Args:
            x: [B, T, D].
            frame_mask: [B, 1, T] valid frames as float (1 valid, 0 padding); None: all valid.

        Returns:
            [B, T, D].
        """
        h = self.norm(x).transpose(1, 2)  # [B, D, T]
        h = F.glu(self.pointwise_in(h), dim=1)  # [B, 2D, T] -> [B, D, T]
        if frame_mask is not None:
            h = h * frame_mask.to(h.dtype)
        h = F.silu(self.batch_norm(self.depthwise(h)))
        h = self.pointwise_out(h).transpose(1, 2)  # [B, T, D]
        return x + h


class ConformerBlock(nn.Module):
    """FFN/2 -> self-attention -> convolution -> FFN/2 -> LayerNorm, all residual."""

    def __init__(
        self,
        *,
        ffn1: HalfStepFeedForward,
        attention: RotarySelfAttention,
        conv: ConvolutionModule,
        ffn2: HalfStepFeedForward,
        final_norm: nn.LayerNorm,
    ) -> None:
        """Receives built parts (see `mucodec.encoder.builders.build_conformer_block`).

        Args:
            ffn1: The first half-step feed-forward.
            attention: Rotary self-attention.
            conv: The convolution module.
            ffn2: The second half-step feed-forward.
            final_norm: The block's closing LayerNorm.
        """
        super().__init__()
        self.ffn1 = ffn1
        self.attention = attention
        self.conv = conv
        self.ffn2 = ffn2
        self.final_norm = final_norm

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        key_mask: Tensor | None = None,
        frame_mask: Tensor | None = None,
    ) -> Tensor:
        """Applies the block.

        Args:
            x: [B, T, D].
            rotary: (cos, sin), each [T, E], from `RotaryEmbedding`.
            key_mask: [B, 1, 1, T] bool, True where a key may be attended; None: all.
            frame_mask: [B, 1, T] valid frames, as `ConvolutionModule` takes it.

        Returns:
            [B, T, D].
        """
        x = self.ffn1(x)
        x = self.attention(x, rotary, key_mask)
        x = self.conv(x, frame_mask)
        x = self.ffn2(x)
        return self.final_norm(x)
