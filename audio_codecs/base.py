"""The codec interface the pipeline uses for every tokenizer.

A codec turns the pipeline's segments (48 kHz stereo float, as stored in the shards) into
integer codes and back. Each codec handles sample rate and channels the way its official
tool does (MuCodec: joint stereo at 48 kHz; DAC: resampled, channels folded into the batch;
EnCodec 24 kHz: resampled mono; EnCodec 48 kHz: joint stereo, chunked, with per-chunk
scales), and says so in its `CodecInfo`, which every token row records.

Codes of one segment are `[channels * num_codebooks, n_frames]` uint16: row `c * K + k` is
codebook k of code stream c (`channels` streams: 1 for joint or mono codecs, 2 for DAC's
folded channels). Side data a codec needs to decode (EnCodec 48 kHz's per-chunk scales,
DAC compress's chunk length and loudness) travels in `EncodedSegment` beside the codes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InvalidSetting

if TYPE_CHECKING:  # Only for annotations: listing codecs and reading tables need no torch.
    import torch
    from torch import Tensor

PIPELINE_SAMPLE_RATE = 48_000  # Segments in and decoded audio out are 48 kHz stereo.
PCM16_SCALE = 32768.0  # Full scale of the shards' 16-bit PCM (libsndfile's convention).
RANDOM_WEIGHTS = "random-weights-seed-"  # + the seed: the weights_sha256 of a random model.


@dataclass(frozen=True)
class CodecSpec:
    """Which codec to build and how; plain values, so it travels to Ray actors.

    Attributes:
        codec: "mucodec", "dac" or "encodec".
        preset: A preset name of that codec; its weights are random, drawn from `seed`
            (tests, the demo, speed figures). Exactly one of preset and checkpoint.
        checkpoint: Our converted checkpoint directory, or a local Hugging Face model
            directory (`config.json` + `model.safetensors`), read with no network.
        seed: Seed of the random weights of a preset.
        precision: "float32", "bfloat16" or "float16": the autocast dtype of the heavy
            parts, fixed at construction.
        options: Codec-specific settings as (name, value) pairs, e.g. DAC's
            ("mode", "compress") or EnCodec's ("bandwidth", "6"); see each codec's docs.
    """

    codec: str
    preset: str | None = None
    checkpoint: str | None = None
    seed: int = 0
    precision: str = "float32"
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.checkpoint is None):
            raise ValueError(f"{self.codec}: give exactly one of a preset or a checkpoint")

    def option(self, name: str, default: str | None = None) -> str | None:
        """The value of codec option `name`, or `default` when it is not set."""
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class CodecInfo:
    """What made the codes: every token row and table of this codec records it.

    Attributes:
        codec: "mucodec", "dac" or "encodec".
        preset: The preset the config came from ("" for a checkpoint's own config).
        config: The codec's config as JSON (enough to rebuild the model's shape).
        weights_sha256: sha256 of the weights file, or "random-weights-seed-<seed>".
        sample_rate: The rate the model runs at (Hz); audio is resampled to it.
        frame_rate: Code frames per second of audio.
        channels: Code streams per segment (see the module docstring).
        num_codebooks: Codebooks used per stream (may be fewer than the model has).
        codebook_size: Codes per codebook.
        mode: How segments are encoded, e.g. "encode" (whole segment) or DAC's "compress".
        encoder_layer: The encoder layer whose output is quantised, for codecs that let it
            be chosen (MuCodec); -1 for the others.
    """

    codec: str
    preset: str
    config: str
    weights_sha256: str
    sample_rate: int
    frame_rate: float
    channels: int
    num_codebooks: int
    codebook_size: int
    mode: str = "encode"
    encoder_layer: int = -1

    @property
    def bitrate_kbps(self) -> float:
        """Bits per second of the codes, in kbps: streams x codebooks x log2(size) x rate."""
        bits = self.channels * self.num_codebooks * math.log2(self.codebook_size)
        return bits * self.frame_rate / 1000.0

    def recorded(self) -> RecordedCodec:
        """What a token table keeps of this provenance."""
        return RecordedCodec(
            codec=self.codec,
            preset=self.preset,
            mode=self.mode,
            config=self.config,
            weights_sha256=self.weights_sha256,
            frame_rate=float(self.frame_rate),
            bitrate_kbps=float(self.bitrate_kbps),
        )


@dataclass(frozen=True)
class RecordedCodec:
    """The provenance a token table keeps (`CodecInfo`'s fields of the same names): enough
    to name the codes' maker and to rebuild a model that decodes them.

    Attributes:
        codec, preset, mode, config, weights_sha256, frame_rate: As in `CodecInfo`.
        bitrate_kbps: `CodecInfo.bitrate_kbps`.
    """

    codec: str
    preset: str
    mode: str
    config: str
    weights_sha256: str
    frame_rate: float
    bitrate_kbps: float

    def rebuilt(self, checkpoint: str | None = None) -> CodecSpec:
        """The spec of the model that made these codes: the `checkpoint` named for it, or
        its preset with the seed of its random weights.

        Raises:
            InvalidSetting: the codes were made from a checkpoint and none is named.
        """
        # Only the mode changes how codes decode (DAC compress); other options, such as
        # EnCodec's bandwidth, are read off the codes themselves.
        options = () if self.mode in ("", "encode") else (("mode", self.mode),)
        if checkpoint is not None:
            return CodecSpec(self.codec, checkpoint=checkpoint, options=options)
        if self.weights_sha256.startswith(RANDOM_WEIGHTS):
            seed = int(self.weights_sha256.removeprefix(RANDOM_WEIGHTS))
            return CodecSpec(self.codec, preset=self.preset, seed=seed, options=options)
        raise InvalidSetting(
            f"the {self.codec} tokens were made from a checkpoint (weights sha256 "
            f"{self.weights_sha256[:12]}...): name it with --checkpoint {self.codec}=PATH"
        )


def random_weights(seed: int) -> str:
    """The `weights_sha256` of a model whose weights were drawn from `seed`."""
    return f"{RANDOM_WEIGHTS}{seed}"


@dataclass(frozen=True)
class EncodedSegment:
    """One segment's codes and the side data its codec needs to decode them.

    Attributes:
        codes: `[channels * num_codebooks, n_frames]` uint16.
        scales: EnCodec 48 kHz: float32 `[n_chunks]`, the normalisation each chunk was
            divided by; empty for codecs without scales.
        chunk_frames: Frames of each chunk when the codes are a concatenation of chunks
            (EnCodec 48 kHz, DAC compress); empty otherwise.
        input_db: DAC compress: the input's integrated loudness (LUFS) that decompress
            restores; NaN otherwise.
    """

    codes: np.ndarray
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    chunk_frames: tuple[int, ...] = ()
    input_db: float = math.nan


class Codec(ABC):
    """A tokenizer the pipeline can run: segments in, codes out, and back.

    Implementations are built once per actor (`audio_codecs.registry.load_codec`) and hold
    their model on one device, in eval mode. The shard's gain is undone here, for every
    codec alike; each codec then handles rate, channels and level as its official tool does.
    """

    @property
    @abstractmethod
    def info(self) -> CodecInfo:
        """The codec's provenance and code layout."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model runs."""

    @property
    def sample_rate(self) -> int:
        """The rate the model runs at (Hz)."""
        return self.info.sample_rate

    @property
    def frame_rate(self) -> float:
        """Code frames per second."""
        return self.info.frame_rate

    @property
    def num_codebooks(self) -> int:
        """Codebooks used per code stream."""
        return self.info.num_codebooks

    @property
    def codebook_size(self) -> int:
        """Codes per codebook."""
        return self.info.codebook_size

    @property
    def sampling(self) -> tuple[int, float]:
        """A sampling decoder's (steps, guidance scale); (0, 0.0) for a deterministic one."""
        return 0, 0.0

    def encode(
        self,
        segments: Sequence[Tensor],
        *,
        song_peaks: Sequence[float] | None = None,
        gains: Sequence[float] | None = None,
    ) -> list[EncodedSegment]:
        """Encodes segments, each exactly as if encoded alone.

        Args:
            segments: S float tensors `[2, L_i]`, 48 kHz stereo as stored in the shards
                (full scale 1.0, the shard's `gain` applied).
            song_peaks: [S] each segment's whole-song peak before gain (shard metadata),
                for codecs whose official tool normalises per song (MuCodec); others
                ignore it.
            gains: [S] the factors the stored segments were multiplied by; undone first.

        Returns:
            S `EncodedSegment`s, in order.
        """
        if gains is not None:
            segments = [s / float(g) for s, g in zip(segments, gains, strict=True)]
        return self.encode_audio(segments, song_peaks=song_peaks)

    def encode_pcm16(
        self,
        pcm: Sequence[Tensor],
        *,
        song_peaks: Sequence[float] | None = None,
        gains: Sequence[float] | None = None,
    ) -> list[EncodedSegment]:
        """`encode` of the shards' 16-bit PCM, converted on the device.

        The PCM crosses to the device as int16 (half of float32's bytes), without waiting
        when it is in pinned memory, and becomes float there.

        Args:
            pcm: S int16 tensors `[L_i, 2]`, interleaved stereo at 48 kHz, on the CPU.
            song_peaks, gains: As in `encode`.

        Returns:
            S `EncodedSegment`s, in order.
        """
        import torch  # Here, not at the top: listing codecs needs no torch.

        segments = [
            p.to(self.device, non_blocking=True)
            .T.to(torch.float32, memory_format=torch.contiguous_format)
            .div_(PCM16_SCALE)
            for p in pcm
        ]
        return self.encode(segments, song_peaks=song_peaks, gains=gains)

    @abstractmethod
    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """`encode` of segments at their level before the shard's gain.

        Args:
            segments: S float tensors `[2, L_i]`, 48 kHz stereo.
            song_peaks: As in `encode`.

        Returns:
            S `EncodedSegment`s, in order.
        """

    @abstractmethod
    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """Decodes codes back to audio for comparison with the original.

        Args:
            encoded: S `EncodedSegment`s of this codec.

        Returns:
            S float32 tensors `[2, L_i]` at 48 kHz on the CPU (mono codecs give both
            channels the same signal), level as the segment was before `gains`.
        """

    def as_seen(self, segment: Tensor, song_peak: float) -> Tensor:
        """`segment` (its gain undone) as this codec encoded it: what its decode is compared
        with. Codecs that normalise per song (MuCodec) apply that here too.

        Args:
            segment: `[2, L]` float at 48 kHz.
            song_peak: The song's peak before gain (shard metadata).
        """
        return segment
