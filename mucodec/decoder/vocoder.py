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

from mucodec.decoder.config import VocoderConfig

__all__ = ["HiFiGAN", "linear_crossfade", "vocode_chunked"]


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Per dilation d: `x += conv_k(lrelu(conv_{k,d}(lrelu(x))))`."""

    def __init__(
        self, channels: int, kernel: int, dilations: tuple[int, ...], slope: float
    ) -> None:
        """Creates the layers with fresh weights.

        Args:
            channels: Channels (unchanged).
            kernel: Kernel size k of every convolution.
            dilations: One dilated/undilated convolution pair per dilation.
            slope: Negative slope of the leaky ReLUs.
        """
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
        """Applies every dilation's residual pair.

        Args:
            x: [B, C, S].

        Returns:
            [B, C, S].
        """
        for conv1, conv2 in zip(self.convs1, self.convs2, strict=True):
            y = conv1(F.leaky_relu(x, self.slope))
            x = conv2(F.leaky_relu(y, self.slope)) + x
        return x


class HiFiGAN(nn.Module):
    """Mel [B, M, T] -> waveform [B, 480 T + 16] in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: Mel bins, upsampling stages and residual blocks of the vocoder.
        """
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


def boundary_margin(config: VocoderConfig) -> int:
    """Mel frames next to a cut within which a chunk's output feels the cut (upper bound).

    Every convolution zero-pads at the ends of its input, so near a chunk boundary the
    chunk's samples differ from those of the whole spectrogram; further in they are the
    same computation. The contaminated stretch grows by each layer's reach: the kernel
    half-width of `conv_pre`/`conv_post`, `u * c + k` through a transposed conv (stride u,
    kernel k), and the largest ResBlock's summed dilated reach.

    Args:
        config: The vocoder's layers.

    Returns:
        A frame count m such that chunk samples >= m frames from every cut are exact.
    """
    res_reach = max(
        sum((k - 1) // 2 * d + (k - 1) // 2 for d in config.resblock_dilations)
        for k in config.resblock_kernel_sizes
    )
    reach = 3  # conv_pre, in frames = samples at the mel rate
    for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True):
        reach = rate * reach + kernel + res_reach
    reach += 3  # conv_post
    return -(-reach // config.hop_length) + 2


def chunk_starts(frames: int, config: VocoderConfig) -> list[int]:
    """First frame of every chunk: 0, hop, 2 hop, ... until a chunk reaches the end.

    Args:
        frames: Mel frames of the spectrogram.
        config: Chunk length and hop, in frames.

    Returns:
        The chunks' first frames.
    """
    starts = [0]
    while starts[-1] + config.chunk_frames < frames:
        starts.append(starts[-1] + config.chunk_hop)
    return starts


def _chunks_direct(vocoder: HiFiGAN, mel: Tensor, starts: list[int]) -> list[Tensor]:
    size = vocoder.config.chunk_frames
    return [vocoder(mel[..., s : s + size]).float() for s in starts]


def _chunks_from_whole(vocoder: HiFiGAN, mel: Tensor, starts: list[int]) -> list[Tensor]:
    """Every chunk's output, from one whole-spectrogram pass plus short edge pieces.

    A chunk's samples more than `boundary_margin` frames from its cuts equal the whole
    pass's; only the stretches next to a cut inside the spectrogram are recomputed, from
    pieces of 2 m frames cut at the same place. Same result as `_chunks_direct` up to
    float rounding, for ~1.4 instead of ~4 vocoder passes per frame.
    """
    cfg = vocoder.config
    frames, hop, m = mel.shape[-1], cfg.hop_length, boundary_margin(cfg)
    whole = vocoder(mel).float()  # [B, hop * T + 16]
    bounds = [(s, min(s + cfg.chunk_frames, frames)) for s in starts]
    # Edge pieces: (chunk, side, first frame); each piece is 2m frames, batched together.
    pieces = [(c, "left", s) for c, (s, _) in enumerate(bounds) if s > 0]
    pieces += [(c, "right", e - 2 * m) for c, (_, e) in enumerate(bounds) if e < frames]
    batch = mel.shape[0]
    outputs: dict[tuple[int, str], Tensor] = {}
    if pieces:
        stacked = torch.cat([mel[..., f : f + 2 * m] for _, _, f in pieces], dim=0)
        rendered = vocoder(stacked).float().split(batch, dim=0)  # each [B, hop * 2m + 16]
        outputs = {(c, side): r for (c, side, _), r in zip(pieces, rendered, strict=True)}
    chunks = []
    for c, (s, e) in enumerate(bounds):
        left = outputs[(c, "left")][:, : hop * m] if s > 0 else whole[:, : hop * m]
        middle = whole[:, hop * (s + m) : hop * (e - m)]
        right = outputs[(c, "right")][:, hop * m :] if e < frames else whole[:, hop * (e - m) :]
        chunks.append(torch.cat([left, middle, right], dim=1))
    return chunks


def vocode_chunked(vocoder: HiFiGAN, mel: Tensor, *, reuse_interior: bool = True) -> Tensor:
    """The reference's `vocoder_chunk_infer`: 3/4-overlapping chunks, recursive blends.

    Chunks of `chunk_frames` start every `chunk_hop` frames until one reaches the end.
    The first chunk is cut to a multiple of `chunk_frames` samples (dropping the +16);
    later chunks are cut to that length too, so only a short last chunk keeps its +16.
    Each chunk after the first is blended over the running output's last 3/4 chunk.

    Args:
        vocoder: The HiFi-GAN.
        mel: [B, M, T] log-mel.
        reuse_interior: Compute the chunks from one whole pass plus edge pieces
            (`_chunks_from_whole`, same values up to float rounding, ~2.4x cheaper) rather
            than vocoding every chunk as the reference does.

    Returns:
        [B, S] float32 waveform; S = 480 T for T = 1024 + 256 k (e.g. 1,966,080 samples for
        a 4096-frame window).
    """
    cfg = vocoder.config
    starts = chunk_starts(mel.shape[-1], cfg)
    shortest = mel.shape[-1] - starts[-1]
    if reuse_interior and len(starts) > 1 and shortest >= 4 * boundary_margin(cfg):
        chunks = _chunks_from_whole(vocoder, mel, starts)
    else:
        chunks = _chunks_direct(vocoder, mel, starts)
    keep = chunks[0].shape[-1] // cfg.chunk_frames * cfg.chunk_frames
    overlap = keep * (cfg.chunk_frames - cfg.chunk_hop) // cfg.chunk_frames
    out = chunks[0][:, :keep]
    for chunk in chunks[1:]:
        out = linear_crossfade(out, chunk[:, :keep], overlap)
    return out
