"""The rows of the spot-check, from the sampled token rows to each sample's metrics.

driver: every codec's token tables -> `SampledRow`s (one per sampled key and codec), grouped
    per shard into `SpotcheckTask`s
reader (CPU task per shard): `SpotcheckTask` -> `DecodeRow`s (the token row + its audio);
    it also writes each sample's original once
actor (GPU when present): `DecodeRow`s -> `SampleMetrics` (also each sample's and codec's
    metrics.json)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.rows import ArrowRow

# The token table columns a spot-check reads (schemas/tokens.py).
SAMPLED_COLUMNS = (
    "key", "song_id", "segment_index", "start_s", "duration_s", "n_frames", "codes", "shard",
    "tokenizer", "scales", "chunk_frames", "input_db", "n_codebooks", "channels",
)  # fmt: skip


@dataclass(frozen=True)
class SampledRow(ArrowRow):
    """A token row chosen for decoding (the `SAMPLED_COLUMNS` of one codec's token table).

    Attributes:
        codes: `[channels * n_codebooks, n_frames]` codes as nested lists.
        tokenizer: The codec's name (registry).
        scales: Per-chunk scales (EnCodec 48 kHz), else empty.
        chunk_frames: Frames per chunk (EnCodec 48 kHz, DAC compress), else empty.
        input_db: DAC compress's input loudness (LUFS), else NaN.
        n_codebooks, channels: The codes' layout (`pipeline.tokenize.encoded`).
    """

    key: str
    song_id: str
    segment_index: int
    start_s: float
    duration_s: float
    n_frames: int
    codes: list[list[int]]
    shard: str
    tokenizer: str
    scales: list[float]
    chunk_frames: list[int]
    input_db: float
    n_codebooks: int
    channels: int

    @property
    def codec(self) -> str:
        """The codec that made the codes (the table's `tokenizer`)."""
        return self.tokenizer


@dataclass(frozen=True)
class SpotcheckTask(ArrowRow):
    """One shard's sampled rows, for a task that reads their original audio."""

    name: str  # The shard's name.
    url: str  # Where to read it.
    rows: str  # The shard's `SampledRow`s as a JSON list of objects.

    @classmethod
    def of(cls, name: str, url: str, rows: list[SampledRow]) -> SpotcheckTask:
        """The task of reading `rows`' originals from shard `name` at `url`."""
        return cls(name, url, json.dumps([r.to_dict() for r in rows]))

    def sampled_rows(self) -> list[SampledRow]:
        """The `SampledRow`s to attach originals to."""
        return [SampledRow.from_dict(r) for r in json.loads(self.rows)]


@dataclass(frozen=True)
class DecodeRow(SampledRow):
    """A sampled token row (every `SampledRow` field) with its original segment from the shard.

    Attributes:
        pcm: 16-bit PCM, interleaved stereo at 48 kHz: `[n_samples, 2]` int16, C order.
        song_peak: The song's peak before gain (linear).
        gain: The linear gain prepare applied to the stored audio.
    """

    pcm: bytes
    song_peak: float
    gain: float

    @classmethod
    def of(cls, sampled: SampledRow, pcm: bytes, song_peak: float, gain: float) -> DecodeRow:
        """`sampled` with its original audio attached."""
        return cls(**sampled.to_dict(), pcm=pcm, song_peak=song_peak, gain=gain)


@dataclass(frozen=True)
class SampleMetrics(ArrowRow):
    """One decoded sample's metrics with one codec: its `metrics.json` and its row of
    `metrics.parquet`.

    Units as in schemas/metrics.py: distances unitless, `si_sdr_db` in dB,
    `loudness_diff_lu` in LU, times in seconds, `n_frames` in token frames;
    `decoder_steps` and `guidance_scale` are 0 for codecs without a sampler.
    """

    key: str
    codec: str
    bitrate_kbps: float
    song_id: str
    segment_index: int
    start_s: float
    duration_s: float
    n_frames: int
    mel_distance: float
    stft_distance: float
    si_sdr_db: float
    loudness_diff_lu: float
    decoder_steps: int
    guidance_scale: float
