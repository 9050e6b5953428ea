"""MuEncoder: MuQ's Conv2dSubsampling followed by the first k Conformer blocks.

The reference (`MuQ.get_predictions(features_only=True)`) runs all 12 blocks and returns
every hidden state (encoder spec, section 7):

* layer_results[0] = the subsampling output;
* layer_results[i] = output of block i, for 1 <= i < depth;
* layer_results[depth] = the encoder's final LayerNorm of block `depth`'s output.

MuCodec reads `layer_results[layer_num - 1]` (6 for the released model), so only that many
blocks can influence the tokens; this module builds and runs just those. The final
LayerNorm is built only when the last hidden state is requested.

Shape legend: B batch, M mel bins, F mel frames, T = F / 4 frames at 25 Hz, D width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mucodec.encoder.conformer import RotaryEmbedding
from mucodec.encoder.subsampling import Conv2dSubsampling


@dataclass(frozen=True)
class EncoderOutput:
    """Output of `MuEncoder.forward`.

    Attributes:
        hidden: [B, T, D] the selected hidden state, zero past each item's length.
        lengths: [B] valid frames per item.
        layer_results: every computed hidden state (index 0 .. output_layer) when asked
            for with `return_all=True`, else empty.
    """

    hidden: Tensor
    lengths: Tensor
    layer_results: tuple[Tensor, ...] = ()


class MuEncoder(nn.Module):
    """[B, M, F] normalised log-mel (+ valid frames) -> the selected hidden state."""

    def __init__(
        self,
        *,
        subsampling: Conv2dSubsampling,
        rotary: RotaryEmbedding,
        blocks: nn.ModuleList,
        final_norm: nn.LayerNorm | None = None,
    ) -> None:
        """Receives its built parts (see `mucodec.encoder.builders.build_encoder`).

        Args:
            subsampling: Mel -> 25 Hz features.
            rotary: Rotary tables shared by all blocks.
            blocks: The blocks to run; the output is the hidden state after the last one.
            final_norm: The encoder's final LayerNorm, only when the requested hidden state
                is the last one of the checkpoint's stack; None otherwise.
        """
        super().__init__()
        self.subsampling = subsampling
        self.rotary = rotary
        self.blocks = blocks
        self.final_norm = final_norm

    @property
    def output_layer(self) -> int:
        """Index into the reference's layer_results that `forward` returns."""
        return len(self.blocks)

    def forward(
        self, features: Tensor, frame_lengths: Tensor | None = None, return_all: bool = False
    ) -> EncoderOutput:
        """Encodes a batch of mel features.

        Args:
            features: [B, M, F] normalised log-mel, F a multiple of 4.
            frame_lengths: [B] valid mel frames per item (multiples of 4); None = all F.
            return_all: Also return every computed hidden state (for tests and analysis).

        Returns:
            `EncoderOutput` with hidden [B, F / 4, D].
        """
        batch, _, frames = features.shape
        factor = self.subsampling.factor
        padded = frame_lengths is not None and bool((frame_lengths < frames).any())
        lengths = (
            frame_lengths // factor
            if frame_lengths is not None
            else torch.full((batch,), frames // factor, dtype=torch.long)
        ).to(features.device)

        x = self.subsampling(features, frame_lengths if padded else None)  # [B, T, D]
        steps = x.shape[1]
        key_mask = frame_mask = None
        if padded:
            valid = torch.arange(steps, device=x.device) < lengths[:, None]  # [B, T]
            key_mask = valid[:, None, None, :]  # [B, 1, 1, T]
            frame_mask = valid[:, None, :]  # [B, 1, T]
            x = x * valid[..., None].to(x.dtype)
        rotary = self.rotary(steps)  # ([T, E], [T, E])

        layer_results = [x] if return_all else []
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, key_mask, frame_mask)  # [B, T, D]
            if self.final_norm is not None and i == len(self.blocks) - 1:
                x = self.final_norm(x)
            if return_all:
                layer_results.append(x)
        if padded:
            x = x * valid[..., None].to(x.dtype)
        return EncoderOutput(hidden=x, lengths=lengths, layer_results=tuple(layer_results))
