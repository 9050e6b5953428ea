"""HiFi-GAN vocoder at 48 kHz, and the reference's chunked inference.

HiFi-GAN's generator (Kong et al., 2020, section 2.1, "V1" with ResBlock type 1) turns
a mel spectrogram into a waveform with transposed-convolution up-sampling stages (x6, x5,
x4, x2, x2 = 480 samples per mel frame here), each followed by a multi-receptive-field
fusion: the *mean* of parallel residual blocks with kernels 3, 7, 11, 15 and dilations
1, 3, 5 (decoder spec section 10). Weights are the AudioLDM-48k checkpoint's
`first_stage_model.vocoder.*`, stored with weight norm already folded in.

Two reference details change the numbers and are kept:

* the leaky ReLU before `conv_post` uses PyTorch's default slope 0.01, not 0.1;
* the x5 stage (kernel 10, padding 2) yields `5L + 1`, so a whole spectrogram of T frames
  gives `480 T + 16` samples.

`vocode_chunked` reproduces `vocoder_chunk_infer`: 1024-frame chunks every 256 frames,
each blended into the running output with a linear ramp over its first 3/4. Each frame is
vocoded about 4 times; `MuCodecDecoder` can instead vocode a whole window at once.

Shapes: B batch (rows = stereo sides), M mel bins, T mel frames, S samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mucodec.decoder_config import VocoderConfig

__all__ = ["HiFiGAN", "linear_crossfade", "vocode_chunked"]


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Per dilation d: `x += conv_k(lrelu(conv_{k,d}(lrelu(x))))`."""

    def __init__(
        self, channels: int, kernel: int, dilations: tuple[int, ...], slope: float
    ) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=_padding(kernel)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, S] -> [B, C, S]."""
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            y = conv1(F.leaky_relu(x, self.slope))
            x = conv2(F.leaky_relu(y, self.slope)) + x
        return x


class HiFiGAN(nn.Module):
    """Mel [B, M, T] -> waveform [B, 480 T + 16] in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(config.num_mels, c0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(
                zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True)
            )
        )
        self.resblocks = nn.ModuleList(
            ResBlock(c0 // 2 ** (i + 1), k, config.resblock_dilations, config.lrelu_slope)
            for i in range(len(self.ups))
            for k in config.resblock_kernel_sizes
        )
        self.conv_post = nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3)

    def forward(self, mel: Tensor) -> Tensor:
        """Vocodes a whole spectrogram.

        Args:
            mel: [B, M, T] natural-log mel magnitudes.

        Returns:
            [B, 480 T + 16] waveform in mel's dtype.
        """
        cfg = self.config
        n_kernels = len(cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel)  # [B, C0, T]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))  # [B, C0 / 2^(i+1), u_i * len]
            # Multi-receptive-field fusion: mean of the stage's parallel ResBlocks.
            fused = self.resblocks[i * n_kernels](x)
            for j in range(1, n_kernels):
                fused = fused + self.resblocks[i * n_kernels + j](x)
            x = fused / n_kernels
        x = self.conv_post(F.leaky_relu(x, cfg.final_lrelu_slope))  # [B, 1, S]
        return torch.tanh(x).squeeze(1)


def linear_crossfade(head: Tensor, tail: Tensor, overlap: int) -> Tensor:
    """Joins two signals, blending `head`'s last and `tail`'s first `overlap` samples.

    The blend weight ramps linearly from 0 to 1 (inclusive) over the overlap and is
    applied in float64, then stored in float32, as the reference does with numpy.

    Args:
        head: [B, S1] float32.
        tail: [B, S2] float32, S2 >= overlap.
        overlap: Samples blended (<= S1).

    Returns:
        [B, S1 + S2 - overlap] float32.
    """
    ramp = torch.linspace(0, 1, overlap, dtype=torch.float64, device=head.device)
    blended = head[:, -overlap:].double() * (1 - ramp) + tail[:, :overlap].double() * ramp
    return torch.cat([head[:, :-overlap], blended.float(), tail[:, overlap:]], dim=1)


def vocode_chunked(vocoder: HiFiGAN, mel: Tensor) -> Tensor:
    """The reference's `vocoder_chunk_infer`: 3/4-overlapping chunks, recursive blends.

    Chunks of `chunk_frames` start every `chunk_hop` frames until one reaches the end.
    The first chunk is cut to a multiple of `chunk_frames` samples (dropping the +16);
    later chunks are cut to that length too, so only a short last chunk keeps its +16.
    Each chunk after the first is blended over the running output's last 3/4 chunk.

    Args:
        vocoder: The HiFi-GAN.
        mel: [B, M, T] log-mel.

    Returns:
        [B, S] float32 waveform; S = 480 T for T = 1024 + 256 k (e.g. 1,966,080 samples for
        a 4096-frame window).
    """
    cfg = vocoder.config
    frames = mel.shape[-1]
    size, hop = cfg.chunk_frames, cfg.chunk_hop
    out = vocoder(mel[..., :size]).float()
    keep = out.shape[-1] // size * size
    out = out[:, :keep]
    overlap = keep * (size - hop) // size
    start = 0
    while start + size < frames:
        start += hop
        chunk = vocoder(mel[..., start : start + size]).float()[:, :keep]
        out = linear_crossfade(out, chunk, overlap)
    return out
