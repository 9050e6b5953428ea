"""MuQ's Conv2dSubsampling: log-mel at 100 Hz -> model-width features at 25 Hz.

Two residual 2-D convolution blocks each halve the frame rate and the mel axis
(128 x F -> 64 x F/2 -> 32 x F/4); the channels and the remaining mel bins are then
flattened channel-major and projected to the model width (encoder spec, section 6).

Shape legend: B batch, C channels, M mel bins, F frames, D model width.

Variable lengths: in the reference a segment's last frames see the convolutions' zero
padding. In a padded batch they would see the neighbouring padding frames instead, so
every convolution input is zeroed beyond each item's valid length. With that, a short
segment in a batch gets the features it gets alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _zero_beyond(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zeros frames (last axis) at or past each item's length; [B, ..., F]."""
    if lengths is None:
        return x
    valid = torch.arange(x.shape[-1], device=x.device) < lengths[:, None]  # [B, F]
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return x * valid.reshape(shape).to(x.dtype)


class ResidualConvBlock(nn.Module):
    """out = ReLU(BN3(conv3(x)) + BN2(conv2(ReLU(BN1(conv1(x)))))), stride 2 on both axes.

    The skip branch is a strided 3x3 convolution (not 1x1), as in the reference.
    """

    def __init__(self, in_channels: int, out_channels: int, eps: float = 1e-5) -> None:
        """Creates the layers with fresh weights.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            eps: BatchNorm epsilon.
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.skip_conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.skip_bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Applies the block (stride 2 on both axes).

        Args:
            x: [B, C_in, M, F]; must already be zero past 2 x lengths frames.
            lengths: [B] valid output frames; None: all valid.

        Returns:
            [B, C_out, ceil(M/2), ceil(F/2)].
        """
        # In-place activations: at full size each intermediate is ~270 MB per segment, and
        # fresh allocations of that size cost page faults on CPU. Same arithmetic.
        h = self.bn1(self.conv1(x)).relu_()
        h = self.bn2(self.conv2(_zero_beyond(h, lengths)))
        return h.add_(self.skip_bn(self.skip_conv(x))).relu_()


class Conv2dSubsampling(nn.Module):
    """[B, M, F] normalised log-mel -> [B, F / 2^n, D], n residual blocks."""

    def __init__(self, blocks: nn.ModuleList, proj: nn.Linear) -> None:
        """Receives its built parts (see `mucodec.encoder.builders.build_subsampling`).

        Args:
            blocks: Residual blocks, applied in order; each halves M and F.
            proj: Linear map from C x M_out (channel-major) to the model width.
        """
        super().__init__()
        self.blocks = blocks
        self.proj = proj

    @property
    def factor(self) -> int:
        """Input frames per output frame."""
        return 2 ** len(self.blocks)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Subsamples mel features.

        Args:
            features: [B, M, F] with F a multiple of `factor`.
            lengths: [B] valid input frames per item (multiples of `factor`); None if all
                F are valid.

        Returns:
            [B, F / factor, D]; frames at or past lengths / factor hold only the
            projection bias (the encoder masks them).
        """
        x = _zero_beyond(features, lengths).unsqueeze(1)  # [B, 1, M, F]
        for block in self.blocks:
            lengths = None if lengths is None else lengths // 2
            x = _zero_beyond(block(x, lengths), lengths)  # [B, C, M/2, F/2]
        batch, channels, mels, frames = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * mels)  # [B, F', C*M']
        return self.proj(x)  # [B, F', D]
