"""The official whole-song script's windowing (`generate.py: MuCodec.sound2code`).

sound2code does not cut a song into consecutive segments. It (encoder spec, section 2):

1. doubles the song (concatenates it with itself) until it is at least one window long;
2. takes N = length // 1,966,080 + 1 windows of W = 1,966,560 samples (40.96 s + 10 ms)
   from the song concatenated with itself once more, so the last window wraps around to
   the song's beginning, and windows are disjoint;
3. encodes every window (1024 tokens each), concatenates the codes window-major and keeps
   the first `int(T / 48000.0 * 25) + 1` (float64 arithmetic, "+1" always added).

These functions reproduce that exactly so that `MuCodecTokenizer.sound2code` returns the
script's tokens. Segment-level encoding (`MuCodecTokenizer.encode`) does none of this.
"""

from __future__ import annotations

import torch
from torch import Tensor

SAMPLE_RATE = 48000
MIN_WINDOW = int(40.96 * SAMPLE_RATE)  # 1,966,080: the divisor for the window count
WINDOW = MIN_WINDOW + 480  # 1,966,560: the samples per window (10 ms resampler look-ahead)
TOKENS_PER_WINDOW = 1024


def sound2code_output_len(samples: int) -> int:
    """Tokens sound2code returns for a song of `samples` at 48 kHz.

    Evaluated as the script does, in float64: at some exact multiples of 1920 samples it is
    one less than samples // 1920 + 1 (e.g. 55,680 samples give 29, not 30).

    Args:
        samples: The song's length in samples at 48 kHz.

    Returns:
        int(samples / 48000 * 25) + 1.
    """
    return int(samples / float(SAMPLE_RATE) * 25) + 1


def sound2code_windows(audio: Tensor) -> Tensor:
    """Cuts a song into the script's windows.

    Args:
        audio: [C, T] song at 48 kHz (after the whole-song peak normalisation).

    Returns:
        [N, C, WINDOW] windows; N >= 2 (3 for some short lengths such as 1920 samples).
    """
    if audio.dim() != 2 or audio.shape[-1] == 0:
        raise ValueError(f"audio must be a non-empty [C, T] tensor, got {tuple(audio.shape)}")
    while audio.shape[-1] < WINDOW:
        audio = torch.cat([audio, audio], dim=-1)
    count = audio.shape[-1] // MIN_WINDOW + 1
    tiled = torch.cat([audio, audio], dim=-1)[:, : count * WINDOW]  # [C, N * W]
    return tiled.reshape(audio.shape[0], count, WINDOW).transpose(0, 1)  # [N, C, W]
