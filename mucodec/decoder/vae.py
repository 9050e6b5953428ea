"""Mel-VAE decoder: AudioLDM-48k latents -> natural-log mel spectrogram.

The decoder half of the latent-diffusion autoencoder (Rombach et al., 2022, section 3;
AudioLDM, Liu et al., 2023, trains it on 256-bin mel "images"): a 1x1 `post_quant_conv`,
a 3x3 `conv_in`, a middle of ResNet + self-attention + ResNet at the latent resolution,
then levels of ResNet blocks separated by nearest-neighbour x2 up-sampling on *both* time
and frequency, and a GroupNorm / swish / 3x3 conv to one channel (decoder spec section 9).

Module and parameter names are the checkpoint's (`decoder.up.{i}.block.{j}.conv1`, ...),
so `audioldm_48k.pth` maps onto this module by stripping `first_stage_model.`. As in the
checkpoint, `up[i]` is level i counted from the *finest* resolution, so the levels run
from `up[-1]` to `up[0]`.

Shapes: B batch, C channels, T latent frames, F latent bins; the output is
[B, 1, 8T, 8F] for the four-level (x8) model.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mucodec.decoder.config import MelVAEConfig

__all__ = ["MelVAEDecoder"]


def _norm(channels: int, config: MelVAEConfig) -> nn.GroupNorm:
    return nn.GroupNorm(config.num_groups, channels, eps=config.norm_eps, affine=True)


class ResnetBlock(nn.Module):
    """`GN -> swish -> conv3x3 -> GN -> swish -> conv3x3` plus a (1x1-projected) skip."""

    def __init__(self, in_channels: int, out_channels: int, config: MelVAEConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            in_channels: Input channels.
            out_channels: Output channels (a 1x1 skip projection when they differ).
            config: Group-norm settings.
        """
        super().__init__()
        self.norm1 = _norm(in_channels, config)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, config)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """Applies the block.

        Args:
            x: [B, C_in, H, W].

        Returns:
            [B, C_out, H, W].
        """
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, 1x1-conv projections, residual.

    Runs through SDPA: at the full size a window's middle has 512 x 32 = 16,384 positions,
    whose explicit attention matrix would take 1 GiB per row in float32.
    """

    def __init__(self, channels: int, config: MelVAEConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            channels: Channels at this resolution.
            config: Group-norm settings.
        """
        super().__init__()
        self.norm = _norm(channels, config)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Applies self-attention over all positions, plus the residual.

        Args:
            x: [B, C, H, W].

        Returns:
            [B, C, H, W].
        """
        batch, channels, height, width = x.shape
        h = self.norm(x)

        def tokens(y: Tensor) -> Tensor:  # [B, C, H, W] -> [B, 1, HW, C]
            return y.reshape(batch, 1, channels, height * width).transpose(2, 3)

        q, k, v = tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, HW, C], scale C^-1/2
        out = out.transpose(2, 3).reshape(batch, channels, height, width)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    """Nearest-neighbour x2 on both axes, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        """Creates the layers with fresh weights.

        Args:
            channels: Channels (unchanged).
        """
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Doubles both axes.

        Args:
            x: [B, C, H, W].

        Returns:
            [B, C, 2H, 2W].
        """
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    """ResNet -> attention -> ResNet at the latent resolution."""

    def __init__(self, channels: int, config: MelVAEConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            channels: Channels at the latent resolution.
            config: Group-norm settings.
        """
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, config)
        self.attn_1 = AttnBlock(channels, config)
        self.block_2 = ResnetBlock(channels, channels, config)

    def forward(self, x: Tensor) -> Tensor:
        """Applies ResNet, attention, ResNet.

        Args:
            x: [B, C, H, W].

        Returns:
            [B, C, H, W].
        """
        return self.block_2(self.attn_1(self.block_1(x)))


class UpLevel(nn.Module):
    """`num_res_blocks + 1` ResNet blocks, then (except at the finest level) an Upsample."""

    def __init__(
        self, in_channels: int, out_channels: int, upsample: bool, config: MelVAEConfig
    ) -> None:
        """Creates the layers with fresh weights.

        Args:
            in_channels: Channels entering the level.
            out_channels: Channels of the level's blocks.
            upsample: End with a x2 `Upsample` (every level but the finest).
            config: Number of blocks and group-norm settings.
        """
        super().__init__()
        widths = [in_channels] + [out_channels] * (config.num_res_blocks + 1)
        self.block = nn.ModuleList(
            ResnetBlock(c_in, c_out, config) for c_in, c_out in itertools.pairwise(widths)
        )
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        """Applies the level's blocks, then its up-sampling if any.

        Args:
            x: [B, C_in, H, W].

        Returns:
            [B, C_out, H', W'], H' = 2H and W' = 2W when the level up-samples.
        """
        for block in self.block:
            x = block(x)
        return x if self.upsample is None else self.upsample(x)


class Decoder(nn.Module):
    """`conv_in -> mid -> up levels (coarse to fine) -> norm_out -> swish -> conv_out`."""

    def __init__(self, config: MelVAEConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: Widths, levels and channels of the VAE decoder.
        """
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]  # finest level first
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1], config)
        # up[i] consumes the width of level i+1 (or the middle's for the coarsest level).
        self.up = nn.ModuleList(
            UpLevel(widths[min(i + 1, len(widths) - 1)], widths[i], i != 0, config)
            for i in range(len(widths))
        )
        self.norm_out = _norm(widths[0], config)
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        """Decodes unscaled VAE latents to a log-mel image.

        Args:
            z: [B, z_channels, T, F] latents (after `post_quant_conv`).

        Returns:
            [B, out_channels, 8T, 8F].
        """
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MelVAEDecoder(nn.Module):
    """Scaled VAE latents -> log-mel: undo `scale_factor`, `post_quant_conv`, decode.

    `scale_factor` (a 0-dim float32 buffer, the checkpoint's top-level entry) is what the
    latent-diffusion model multiplied the VAE latents by; the diffusion side (here: the
    flow) lives in the scaled space.
    """

    def __init__(self, config: MelVAEConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: The Mel-VAE config.
        """
        super().__init__()
        self.config = config
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def forward(self, z: Tensor) -> Tensor:
        """Decodes latents to a log-mel "image".

        Args:
            z: [B, embed_dim, T, F] scaled latents (one row per stereo side).

        Returns:
            [B, 1, 8T, 8F] natural-log mel magnitudes (time, mel bin), in z's dtype.
        """
        # The reference multiplies by the float64 reciprocal of the float32 scale factor.
        inverse = (1.0 / self.scale_factor.double()).to(z.dtype)
        h = self.post_quant_conv(z * inverse)
        return self.decoder(h)
