"""DAC behind the codec interface: 48 kHz stereo segments in, folded-channel codes out.

Each segment is resampled from 48 kHz to the model rate (`RESAMPLER`), its two channels are
folded into the batch as the official tool does (codes of channel c in rows c*K..c*K+K-1),
and it is encoded in one of two modes (`CodecSpec` option "mode"):

* "encode" (default): `model.encode(model.preprocess(x))` of the whole segment. The codes
  of a segment depend only on that segment, frames sit on a regular hop grid, and there is
  no side data: what a token model wants to learn from.
* "compress": the official `compress` (loudness to -16 LUFS, peak limiting, windows with
  the conv padding off); the segment carries `chunk_frames` and `input_db` so that
  `decode` can run the official `decompress`.

Decoded audio goes back to 48 kHz, at the level the codec encoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from transformers import DacModel

from audio_codecs.base import Codec, CodecInfo, CodecSpec, EncodedSegment
from audio_codecs.dac.checkpoint import load_converted
from audio_codecs.dac.compress import compress, decompress
from audio_codecs.dac.config import PRESETS as CONFIG_PRESETS
from audio_codecs.dac.config import DacCodecConfig, preset
from audio_codecs.dac.dac_file import DacFile
from audio_codecs.dac.model import build_model, decode_codes, encode, preprocess
from audio_codecs.dac.resample import RESAMPLER
from core.precision import autocast_dtype

PRESETS: tuple[str, ...] = tuple(CONFIG_PRESETS)
MODES = ("encode", "compress")
CHANNELS = 2  # Stereo segments; each channel is one code stream.


class DacCodec(Codec):
    """DAC: resampled to the model rate, channels folded into the batch, two modes.

    Args:
        model: The `DacModel`, on its device, in eval mode.
        config: Its config.
        info: Its provenance (see `load`).
        precision: Autocast dtype name of the encoder and decoder ("float32": none); the
            code lookup always runs in float32.
    """

    def __init__(
        self, model: DacModel, config: DacCodecConfig, info: CodecInfo, precision: str = "float32"
    ) -> None:
        if info.mode not in MODES:
            raise ValueError(f"DAC mode must be one of {MODES}, not {info.mode!r}")
        self.model = model
        self.config = config
        self.precision = precision
        self._dtype = autocast_dtype(precision)
        self._info = info

    @property
    def info(self) -> CodecInfo:
        """Provenance; `channels` is 2 (channels folded into the batch)."""
        return self._info

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.model.parameters()).device

    def _autocast(self) -> torch.autocast:
        enabled = self._dtype is not None
        return torch.autocast(self.device.type, dtype=self._dtype, enabled=enabled)

    @torch.no_grad()
    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """Codes `[2 * K, frames]` uint16 per segment; `song_peaks` is not used by DAC.

        "encode": frames = ceil(L * sr / 48000 / hop). Segments of equal length are
        batched (no padding, so each is encoded as if alone). "compress": one official
        `compress` per segment, with `chunk_frames` (frames per window) and `input_db`.
        """
        rate, k = self.config.sample_rate, self.num_codebooks
        audio = []
        for index, segment in enumerate(segments):
            if segment.ndim != 2 or segment.shape[0] != CHANNELS:
                raise ValueError(f"segment {index}: expected [2, L] stereo, got {segment.shape}")
            x = segment.float().to(self.device)
            audio.append(RESAMPLER.to_model_rate(x, rate))  # [2, L']
        if self.info.mode == "compress":
            out = []
            for x in audio:
                with self._autocast():
                    file = compress(self.model, self.config, x[None]).file
                n_windows = file.codes.shape[-1] // file.chunk_length
                out.append(
                    EncodedSegment(
                        codes=file.codes.reshape(CHANNELS * k, -1),
                        chunk_frames=(file.chunk_length,) * n_windows,
                        input_db=float(file.input_db[0]),
                    )
                )
            return out
        results: list[EncodedSegment | None] = [None] * len(audio)
        for length in sorted({x.shape[-1] for x in audio}):
            group = [i for i, x in enumerate(audio) if x.shape[-1] == length]
            batch = torch.stack([audio[i] for i in group]).reshape(-1, 1, length)  # [S*2, 1, L']
            with self._autocast():
                codes = encode(self.model, preprocess(batch, self.config.hop)).codes
            codes = codes.reshape(len(group), CHANNELS * k, -1).cpu().numpy().astype(np.uint16)
            for row, index in enumerate(group):
                results[index] = EncodedSegment(codes=codes[row])
        return [r for r in results if r is not None]

    @torch.no_grad()
    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """48 kHz stereo per segment, at the level the segment had before the shard's gain.

        "encode" (and a one-window "compress"): frames * hop samples at the model rate,
        i.e. the segment rounded up to whole frames (exactly the segment for 35.84 s at
        44.1, 24 or 16 kHz; the 16/24 kHz decoders give 8 samples fewer, padded with
        zeros). Windowed "compress": the official `decompress` without its final
        truncation (a segment does not record its length), so the audio runs on to the end
        of the last window.
        """
        out = []
        for segment in encoded:
            if segment.codes.ndim != 2 or segment.codes.shape[0] != CHANNELS * self.num_codebooks:
                raise ValueError(f"expected codes [{CHANNELS * self.num_codebooks}, F]")
            if self.info.mode == "compress":
                audio = self._decompress(segment)  # [2, T]
            else:
                codes = torch.from_numpy(segment.codes.astype(np.int64)).to(self.device)
                codes = codes.reshape(CHANNELS, self.num_codebooks, -1)  # [2, K, F]
                with self._autocast():
                    audio = decode_codes(self.model, codes).float()[:, 0]  # [2, T]
            if len(segment.chunk_frames) <= 1:  # On the hop grid: whole frames, 8 short at 16k.
                short = segment.codes.shape[-1] * self.config.hop - audio.shape[-1]
                audio = torch.nn.functional.pad(audio, (0, max(0, short)))
            audio = RESAMPLER.to_pipeline_rate(audio, self.config.sample_rate)
            out.append(audio.float().cpu())
        return out

    def _decompress(self, segment: EncodedSegment) -> Tensor:
        """The official decompress of one segment's codes and side data, `[2, T]`."""
        if not segment.chunk_frames or math.isnan(segment.input_db):
            raise ValueError("compress-mode DAC codes need chunk_frames and input_db")
        file = DacFile(
            codes=segment.codes.reshape(CHANNELS, self.num_codebooks, -1),
            chunk_length=segment.chunk_frames[0],
            original_length=0,  # Unknown; decompress keeps every sample (truncate=False).
            input_db=np.array([segment.input_db], np.float32),
            channels=CHANNELS,
            sample_rate=self.config.sample_rate,
            padding=len(segment.chunk_frames) == 1,  # One window: the unpadded path never ran.
        )
        with self._autocast():
            return decompress(self.model, self.config, file, truncate=False)[0]


def codec_info(config: DacCodecConfig, preset_name: str, weights: str, mode: str) -> CodecInfo:
    """The provenance of a DAC codec (`preset_name` "" for a checkpoint's own config)."""
    return CodecInfo(
        codec="dac",
        preset=preset_name,
        config=config.to_json(),
        weights_sha256=weights,
        sample_rate=config.sample_rate,
        frame_rate=config.frame_rate,
        channels=CHANNELS,
        num_codebooks=config.n_codebooks,
        codebook_size=config.codebook_size,
        mode=mode,
    )


def load(spec: CodecSpec, device: torch.device) -> DacCodec:
    """Builds the DAC codec of `spec` on `device`, in eval mode.

    Args:
        spec: A preset of `PRESETS` (random weights from `spec.seed`) or a checkpoint
            directory (ours, or a local Hugging Face one); option "mode" is "encode"
            (default) or "compress"; `spec.precision` the autocast dtype.
        device: Where the model runs.

    Returns:
        The codec.

    Raises:
        KeyError: for an unknown preset.
        ValueError: for an unknown mode or precision.
        CheckpointError: for a checkpoint that does not fit its config exactly.
    """
    mode = spec.option("mode", "encode") or "encode"
    if mode not in MODES:
        raise ValueError(f"DAC mode must be one of {MODES}, not {mode!r}")
    autocast_dtype(spec.precision)  # Refuses an unknown precision before any work.
    if spec.checkpoint is not None:
        loaded = load_converted(spec.checkpoint, device)
        model, config = loaded.model, loaded.config
        info = codec_info(config, "", loaded.sha256, mode)
    else:
        assert spec.preset is not None
        config = preset(spec.preset)
        model = build_model(config, seed=spec.seed, device=device)
        info = codec_info(config, spec.preset, f"random-weights-seed-{spec.seed}", mode)
    return DacCodec(model, config, info, precision=spec.precision)
