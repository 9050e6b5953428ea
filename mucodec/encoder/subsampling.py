"""MuQ's Conv2dSubsampling: log-mel at 100 Hz -> model-width features at 25 Hz.

Two residual 2-D convolution blocks each halve the frame rate and the mel axis
(128 x F -> 64 x F/2 -> 32 x F/4); the channels and the remaining mel bins are then
flattened channel-major and projected to the model width (encoder spec, section 6).

Shape legend: B batch, C channels, M mel bins, F frames, D model width.

Variable lengths: in the reference a segment's last frames see the convolutions' zero
padding. In a padded batch they would see the neighbouring padding frames instead, so
every convolution input is zeroed beyond each item's valid length. With that, a short
segment in a batch gets the features it gets alone.

Inference on the CPU in float32 takes a faster road to the same numbers (up to float
rounding): one item at a time over its valid frames, channels last, each BatchNorm folded
into its convolution, and the stride-1 convolutions as Winograd F(4x4, 3x3)
(`mucodec.encoder.winograd`: 4x fewer multiplies on the half of the encoder's FLOPs they
hold). Training, gradients, autocast and other devices keep the reference arithmetic, as
does `use_winograd = False` (the benchmark's baseline of the official path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mucodec.encoder.winograd import winograd_conv3x3, winograd_kernels


def _fold_batch_norm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of conv followed by norm in eval mode, as one convolution."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # [C_out]
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    return conv.weight * scale[:, None, None, None], (bias - norm.running_mean) * scale + norm.bias


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

    def folded(self) -> FoldedResidualBlock:
        """The block for inference: BatchNorms (eval statistics) folded into the convolutions."""
        weight1, bias1 = _fold_batch_norm(self.conv1, self.bn1)
        weight2, bias2 = _fold_batch_norm(self.conv2, self.bn2)
        skip_weight, skip_bias = _fold_batch_norm(self.skip_conv, self.skip_bn)
        # conv2's bias joins the skip's: both land in the same sum before the ReLU.
        return FoldedResidualBlock(
            weight1, bias1, winograd_kernels(weight2), skip_weight, skip_bias + bias2
        )


@dataclass(frozen=True)
class FoldedResidualBlock:
    """`ResidualConvBlock` in eval mode on channels-last features, conv2 by Winograd.

    Attributes:
        weight1: [C_out, C_in, 3, 3] conv1 with bn1 folded in; bias1 its [C_out] bias.
        kernels2: conv2 with bn2 folded in, as `winograd_kernels`.
        skip_weight: The skip convolution with its BatchNorm folded in.
        skip_bias: The skip's bias plus conv2's (both are added before the ReLU).
    """

    weight1: Tensor
    bias1: Tensor
    kernels2: Tensor
    skip_weight: Tensor
    skip_bias: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        """Applies the block (stride 2 on both axes).

        Args:
            x: [N, M, F, C_in] channels-last features, every frame valid.

        Returns:
            [N, ceil(M/2), ceil(F/2), C_out].
        """
        as_nchw = x.permute(0, 3, 1, 2)  # a channels-last NCHW view: oneDNN keeps the layout
        h = F.conv2d(as_nchw, self.weight1, self.bias1, stride=2, padding=1)
        skip = F.conv2d(as_nchw, self.skip_weight, self.skip_bias, stride=2, padding=1)
        h = winograd_conv3x3(_channels_last(h).relu_(), self.kernels2)
        return h.add_(_channels_last(skip)).relu_()


def _channels_last(nchw: Tensor) -> Tensor:
    """[N, C, H, W] -> contiguous [N, H, W, C] (free when the memory is already NHWC)."""
    return nchw.permute(0, 2, 3, 1).contiguous()


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
        # False: the reference's direct convolutions and BatchNorms even where the faster
        # road applies (the encoder benchmark's official-path baseline).
        self.use_winograd = True

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
        if self._takes_fast_road(features):
            return self._forward_items(features, lengths)
        x = _zero_beyond(features, lengths).unsqueeze(1)  # [B, 1, M, F]
        for block in self.blocks:
            lengths = None if lengths is None else lengths // 2
            x = _zero_beyond(block(x, lengths), lengths)  # [B, C, M/2, F/2]
        batch, channels, mels, frames = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * mels)  # [B, F', C*M']
        return self.proj(x)  # [B, F', D]

    def _takes_fast_road(self, features: Tensor) -> bool:
        """Float32 inference on the CPU, outside autocast (see the module docstring)."""
        needs_grad = torch.is_grad_enabled() and self.proj.weight.requires_grad
        return (
            self.use_winograd
            and not self.training
            and not needs_grad
            and features.device.type == "cpu"
            and features.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        )

    def _forward_items(self, features: Tensor, lengths: Tensor | None) -> Tensor:
        """`forward` item by item over each item's valid frames, channels last.

        One item at a time keeps the full-size intermediates (~240 MB each per 35.84 s)
        to one item's worth; its valid frames alone give what the masks give in a batch.
        """
        batch, _, frames = features.shape
        # Frames past an item's end hold the projection of zeros, as on the reference road.
        out = self.proj.bias.expand(batch, frames // self.factor, -1).clone()  # [B, F', D]
        blocks = [block.folded() for block in self.blocks]
        for item in range(batch):
            valid = frames if lengths is None else int(lengths[item])
            if not valid:
                continue
            x = features[item : item + 1, :, :valid, None]  # [1, M, F_i, 1]
            for block in blocks:
                x = block(x)  # [1, M/2, F_i/2, C]
            _, mels, steps, channels = x.shape
            flat = x.permute(0, 2, 3, 1).reshape(1, steps, channels * mels)  # channel-major
            out[item, :steps] = self.proj(flat)[0]
        return out
