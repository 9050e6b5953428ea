"""EnCodec behind the codec interface: the pipeline's 48 kHz stereo segments in, codes out.

As the official tool handles rate and channels:

* 24 kHz models (mono): the segment is mixed to mono (channel mean, as `convert_audio`),
  resampled 48 -> 24 kHz, and encoded whole as one frame. Decoding resamples back to
  48 kHz and gives both channels the mono signal.
* 48 kHz models (joint stereo): the segment is encoded in 1 s chunks at a 0.99 s stride,
  each divided by its own scale; the scales (`EncodedSegment.scales`) and each chunk's
  frame count (`chunk_frames`) travel with the codes, which cannot be decoded without them.

Codes are `[K, frames]` uint16 (one code stream: `CodecInfo.channels` is 1 for both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from transformers import EncodecModel

from audio_codecs.base import Codec, CodecInfo, CodecSpec, EncodedSegment
from audio_codecs.encodec.checkpoint import load_converted
from audio_codecs.encodec.coding import Frame, decode_frames, encode_frames
from audio_codecs.encodec.config import PRESETS as CONFIG_PRESETS
from audio_codecs.encodec.config import EncodecCodecConfig, codebooks_for_bandwidth, preset
from audio_codecs.encodec.model import random_model
from audio_codecs.encodec.signal import RESAMPLER, to_mono
from core.precision import autocast_dtype

__all__ = ["PRESETS", "EncodecCodec", "load"]

PRESETS: tuple[str, ...] = tuple(CONFIG_PRESETS)


class EncodecCodec(Codec):
    """EnCodec at one bandwidth, with the official chunking, scales, rate and channels.

    Args:
        model: The `transformers.EncodecModel`, on its device, in eval mode.
        config: Its shape and settings.
        bandwidth: Target bandwidth (kbps), one of `config.target_bandwidths`.
        info: Provenance (see `load`).
        precision: Autocast dtype of the SEANet encoder and decoder.
    """

    def __init__(
        self,
        model: EncodecModel,
        config: EncodecCodecConfig,
        bandwidth: float,
        info: CodecInfo,
        precision: str = "float32",
    ) -> None:
        autocast_dtype(precision)  # Refuses unknown precisions now, not at the first batch.
        self.model = model
        self.config = config
        self.bandwidth = bandwidth
        self.n_q = codebooks_for_bandwidth(config, bandwidth)
        self.precision = precision
        self._info = info

    @property
    def info(self) -> CodecInfo:
        """Provenance; `channels` is 1 (mono at 24 kHz, joint stereo at 48 kHz)."""
        return self._info

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return next(self.model.parameters()).device

    def _to_model_input(self, segment: Tensor) -> Tensor:
        """`[2, L]` at 48 kHz -> `[channels, n]` at the model's rate."""
        audio = segment.float()
        if self.config.channels == 1:
            audio = to_mono(audio)  # [1, L]
        elif audio.shape[0] != self.config.channels:
            raise ValueError(
                f"encodec: expected {self.config.channels} channels, got {audio.shape}"
            )
        return RESAMPLER.to_model_rate(audio, self.config.sample_rate)

    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """Codes `[K, frames]` uint16 per segment, plus scales and chunk frames at 48 kHz.

        Segments of equal length are encoded as one batch; every chunk's scale is its own
        item's, so each segment gets the codes it gets alone. `song_peaks` is ignored (the
        official tool does not normalise per song).

        Args:
            segments: S float tensors `[2, L_i]`, 48 kHz stereo.
            song_peaks: Ignored.

        Returns:
            S `EncodedSegment`s, in order.
        """
        inputs = [self._to_model_input(s) for s in segments]  # [C, n] each
        results: list[EncodedSegment | None] = [None] * len(inputs)
        for n in sorted({x.shape[-1] for x in inputs}):
            group = [i for i, x in enumerate(inputs) if x.shape[-1] == n]
            batch = torch.stack([inputs[i] for i in group]).to(self.device)  # [B, C, n]
            frames = encode_frames(self.model, self.config, batch, self.n_q, self.precision)
            for row, index in enumerate(group):
                results[index] = _encoded(frames, row, self.config)
        return [r for r in results if r is not None]

    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """48 kHz stereo per segment, as long as the codes imply.

        24 kHz: `frames * 640` samples (both channels the mono signal). 48 kHz: the
        overlap-added chunks, `stride * (n_chunks - 1) + 320 * frames_last`. Both equal the
        segment's length when it is a whole number of frames (35.84 s segments are) and are
        at most one frame longer otherwise.

        Args:
            encoded: S `EncodedSegment`s of this codec.

        Returns:
            S float32 CPU tensors `[2, L_i]`.
        """
        outputs = []
        for segment in encoded:
            frames = _frames(segment, self.config, self.device)
            audio = decode_frames(self.model, self.config, frames, self.precision)[0]  # [C, n]
            audio = RESAMPLER.to_pipeline_rate(audio.cpu(), self.config.sample_rate)
            outputs.append(audio.expand(2, -1).contiguous() if audio.shape[0] == 1 else audio)
        return outputs


def _encoded(frames: list[Frame], row: int, config: EncodecCodecConfig) -> EncodedSegment:
    """Batch row `row` of the chunks' frames as one `EncodedSegment`.

    Chunked models record each chunk's frames; normalising ones also each chunk's scale.
    """
    codes = torch.cat([f.codes[row] for f in frames], dim=-1)  # [K, sum T_i]
    codes_u16 = codes.cpu().numpy().astype(np.uint16)
    if config.segment is None:
        return EncodedSegment(codes_u16)
    chunk_frames = tuple(int(f.codes.shape[-1]) for f in frames)
    if not config.normalize:
        return EncodedSegment(codes_u16, chunk_frames=chunk_frames)
    scales = torch.stack([f.scale[row] for f in frames if f.scale is not None])
    return EncodedSegment(
        codes_u16, scales=scales.cpu().numpy().astype(np.float32), chunk_frames=chunk_frames
    )


def _frames(
    segment: EncodedSegment, config: EncodecCodecConfig, device: torch.device
) -> list[Frame]:
    """The chunks' frames of one segment (batch of one), on `device`.

    Raises:
        ValueError: if the chunk frames do not add up to the codes, or a normalising model's
            segment lacks one scale per chunk (its codes cannot be decoded without them).
    """
    codes = torch.from_numpy(segment.codes.astype(np.int64)).to(device)  # [K, T]
    chunk_frames = segment.chunk_frames or (codes.shape[-1],)
    wanted_scales = len(chunk_frames) if config.normalize else 0
    if sum(chunk_frames) != codes.shape[-1] or len(segment.scales) != wanted_scales:
        raise ValueError(
            f"encodec: {codes.shape[-1]} frames, chunk_frames {segment.chunk_frames} and "
            f"{len(segment.scales)} scales do not fit together (this model "
            f"{'needs one scale per chunk' if config.normalize else 'has no scales'})"
        )
    scales = torch.from_numpy(np.asarray(segment.scales, np.float32)).to(device)
    pieces = torch.split(codes, list(chunk_frames), dim=-1)
    return [
        Frame(p[None], scales[i : i + 1] if config.normalize else None)
        for i, p in enumerate(pieces)
    ]


def codec_info(config: EncodecCodecConfig, preset_name: str, weights: str, n_q: int) -> CodecInfo:
    """The provenance of an EnCodec codec.

    Args:
        config: The model's config.
        preset_name: Preset it came from ("" for a checkpoint's own config).
        weights: sha256 of the weights, or "random-weights-seed-<seed>".
        n_q: Codebooks used at the chosen bandwidth.

    Returns:
        The `CodecInfo` (codec "encodec", one code stream, mode "encode").
    """
    return CodecInfo(
        codec="encodec",
        preset=preset_name,
        config=config.to_json(),
        weights_sha256=weights,
        sample_rate=config.sample_rate,
        frame_rate=float(config.frame_rate),
        channels=1,
        num_codebooks=n_q,
        codebook_size=config.bins,
    )


def load(spec: CodecSpec, device: torch.device) -> EncodecCodec:
    """Builds the EnCodec codec of `spec` on `device`, in eval mode.

    Args:
        spec: A preset of `PRESETS` (weights drawn from `spec.seed`), or a checkpoint: our
            converted directory or a local Hugging Face directory. Option "bandwidth"
            (kbps) picks the codebooks; default the model's largest target bandwidth (all
            codebooks, as the official model without `set_target_bandwidth`).
        device: Where the model runs.

    Returns:
        The codec.

    Raises:
        KeyError: for an unknown preset.
        ValueError: for a bandwidth the model does not offer or an unknown precision.
        core.key_map.CheckpointError: for a checkpoint that does not load strictly.
    """
    if spec.checkpoint is not None:
        loaded = load_converted(spec.checkpoint, device)
        model, config, weights = loaded.model, loaded.config, loaded.sha256
    else:
        config = preset(spec.preset or "")
        model = random_model(config, spec.seed).to(device)
        weights = f"random-weights-seed-{spec.seed}"
    option = spec.option("bandwidth")
    bandwidth = config.target_bandwidths[-1] if option is None else float(option)
    n_q = codebooks_for_bandwidth(config, bandwidth)
    info = codec_info(config, spec.preset or "", weights, n_q)
    return EncodecCodec(model, config, bandwidth, info, spec.precision)
