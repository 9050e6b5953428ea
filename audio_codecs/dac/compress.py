"""The official `CodecMixin.compress` / `decompress` on top of `DacModel`.

`compress` (descript-audio-codec 1.0.0, `dac/model/base.py`), for audio already at the
model rate:

1. measure the integrated loudness (`loudness.integrated_loudness`), the file's `input_db`;
2. normalise every item to -16 LUFS (one gain per item);
3. per channel, divide by the peak where it exceeds 1 (`ensure_max_of_audio`);
4. fold channels into the batch, `[nb, nac, nt] -> [nb*nac, 1, nt]`;
5. a signal no longer than the window is encoded whole, conv padding on (`padding=True`);
   a longer one is zero-padded by `delay` on both sides and cut into windows of
   `ceil(win * sr / hop) * hop` samples that start every `output_length(window)` samples
   (up to the unpadded length), each zero-padded at its end and encoded with the conv
   padding off; `chunk_length` is the frames of one window.

`decompress` decodes each `chunk_length` slice with the file's padding setting, joins them,
scales each folded channel to the file's loudness, truncates and unfolds.

Windowed codes are not `encode()` codes of the whole signal: each window spends
`chunk_length` frames on `output_length(window)` new samples.

Legend: B items, C channels, T samples, K codebooks, F frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DacModel

from audio_codecs.dac.config import DacCodecConfig, output_length
from audio_codecs.dac.dac_file import DacFile
from audio_codecs.dac.loudness import gain_to, integrated_loudness
from audio_codecs.dac.model import conv_padding, decode, encode, preprocess
from audio_codecs.dac.quantize import from_codes

NORMALIZE_DB = -16.0  # LUFS every item is brought to before encoding.
WIN_DURATION = 1.0  # Seconds per window (the official default of the `compress` call).


@dataclass(frozen=True)
class Compressed:
    """A compress result and the intermediate gains, for checks against the official tool.

    Attributes:
        file: What the official `DACFile` holds.
        gain: `[B]` the loudness normalisation factor of each item.
        peak_gain: `[B, C, 1]` 1, or 1/peak where a normalised channel's peak exceeded 1.
    """

    file: DacFile
    gain: Tensor
    peak_gain: Tensor


def window_plan(config: DacCodecConfig, length: int, win_duration: float) -> tuple[int, int, int]:
    """(window samples, window start spacing, delay padding) for `length` samples.

    An input no longer than the window is one unpadded window of its own length.
    """
    if length / config.sample_rate <= win_duration:
        return length, length, 0
    window = int(win_duration * config.sample_rate)
    window = int(math.ceil(window / config.hop) * config.hop)
    return window, output_length(config, window), config.delay


@torch.no_grad()
def compress(
    model: DacModel,
    config: DacCodecConfig,
    audio: Tensor,
    win_duration: float = WIN_DURATION,
    normalize_db: float = NORMALIZE_DB,
    n_quantizers: int | None = None,
) -> Compressed:
    """The official `compress` of audio at the model rate (see the module docstring).

    Args:
        model: The model, eval mode.
        config: Its config (hop, delay, rate).
        audio: `[B, C, T]` float at `config.sample_rate`.
        win_duration: Window length in seconds.
        normalize_db: Target loudness (LUFS).
        n_quantizers: Codebooks to use; None: all.

    Returns:
        The file contents (codes `[B*C, K, F]` uint16) and the gains applied.
    """
    batch, channels, length = audio.shape
    audio = audio.float().clone()
    input_db = integrated_loudness(audio, config.sample_rate)  # [B]
    gain = gain_to(normalize_db, input_db)  # [B]
    audio = audio * gain[:, None, None]
    peak = audio.abs().max(dim=-1, keepdim=True)[0]  # [B, C, 1]
    peak_gain = torch.ones_like(peak)
    peak_gain[peak > 1.0] = 1.0 / peak[peak > 1.0]
    audio = (audio * peak_gain).reshape(batch * channels, 1, length)  # [B*C, 1, T]

    window, spacing, delay = window_plan(config, length, win_duration)
    audio = F.pad(audio, (delay, delay))
    codes = []
    with conv_padding(model, enabled=delay == 0):
        for start in range(0, length, spacing):
            chunk = audio[..., start : start + window]
            chunk = F.pad(chunk, (0, max(0, window - chunk.shape[-1])))
            codes.append(encode(model, preprocess(chunk, config.hop), n_quantizers).codes)
    file = DacFile(
        codes=torch.cat(codes, dim=-1).cpu().numpy().astype(np.uint16),  # [B*C, K, F]
        chunk_length=int(codes[-1].shape[-1]),
        original_length=length,
        input_db=input_db.cpu().numpy().astype(np.float32),
        channels=channels,
        sample_rate=config.sample_rate,
        padding=delay == 0,
    )
    return Compressed(file=file, gain=gain, peak_gain=peak_gain)


@torch.no_grad()
def decompress(
    model: DacModel, config: DacCodecConfig, file: DacFile, truncate: bool = True
) -> Tensor:
    """The official `decompress`: `[B*C, K, F]` codes -> audio `[B, C, original_length]`.

    Args:
        model: The model, eval mode.
        config: Its config.
        file: A compress result (or a `.dac` file read with `read_dac_file`).
        truncate: Cut to `file.original_length` as the official tool does; False keeps
            every decoded sample (the codec's segments do not record their length).

    Returns:
        Float32 audio at the model rate on the model's device.

    Raises:
        ValueError: if the file was made at another sample rate (the official tool would
            resample with julius; the pipeline resamples before compressing).
    """
    if file.sample_rate != config.sample_rate:
        raise ValueError(
            f"the .dac file is at {file.sample_rate} Hz, the model at {config.sample_rate} Hz"
        )
    device = next(model.parameters()).device
    codes = torch.from_numpy(file.codes.astype(np.int64)).to(device)  # [B*C, K, F]
    pieces = []
    with conv_padding(model, enabled=file.padding):
        for start in range(0, codes.shape[-1], file.chunk_length):
            z, _ = from_codes(model.quantizer, codes[..., start : start + file.chunk_length])
            pieces.append(decode(model, z))  # [B*C, 1, T_chunk]
    audio = torch.cat(pieces, dim=-1).float()
    # Each folded channel is scaled to the item's loudness (official behaviour).
    measured = integrated_loudness(audio, config.sample_rate)  # [B*C]
    target = torch.from_numpy(file.input_db).to(device)  # [B]
    audio = audio * gain_to(target, measured)[:, None, None]
    if truncate:
        audio = audio[..., : file.original_length]
    return audio.reshape(-1, file.channels, audio.shape[-1])
