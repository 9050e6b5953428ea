"""The rows of the tokenizer chain: a shard row with its audio swapped for one codec's codes.

The shard reader feeds a chain of actor pools, one per codec. Between pools travel
`ChainRow`s: the shard's row still carrying its audio (`tokenizer` == "") and the rows the
pools before made of it, one `TokenizedRow` per codec. Each pool adds its codec's row for
every audio row (errors and shard-level rows too, with empty codes), so the driver sees
every row of every codec and can tell when a shard is done for that codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np

from audio_codecs.base import CodecInfo, EncodedSegment, RecordedCodec
from pipeline.rows import ArrowRow
from pipeline.shard_reader import RowKind, ShardSampleRow

# Fields a TokenizedRow takes over from its ShardSampleRow unchanged.
_CARRIED = (
    "kind", "shard", "key", "error", "shard_rows", "song_id", "segment_index", "start_s",
    "duration_s", "lyrics_aligned", "lyrics", "lyrics_text", "source", "source_sha256",
    "split", "artist", "quality", "song_quality", "read_s",
)  # fmt: skip


# The token table's provenance columns (schemas/tokens.py) -> the `CodecInfo` field each
# holds: the one place where the table's names meet the codec interface's.
PROVENANCE_COLUMNS = {
    "tokenizer": "codec",
    "tokenizer_config": "config",
    "encoder_layer": "encoder_layer",
    "checkpoint_sha256": "weights_sha256",
    "token_rate": "frame_rate",
    "codec_preset": "preset",
    "codec_mode": "mode",
    "sample_rate": "sample_rate",
    "channels": "channels",
    "bitrate_kbps": "bitrate_kbps",
}
_NO_CODEC = {
    "tokenizer": "", "tokenizer_config": "", "encoder_layer": -1, "checkpoint_sha256": "",
    "token_rate": 0.0, "codec_preset": "", "codec_mode": "", "sample_rate": 0, "channels": 1,
    "bitrate_kbps": 0.0,
}  # fmt: skip


def provenance_columns(info: CodecInfo) -> dict[str, Any]:
    """The provenance columns of codes made by the codec `info` describes."""
    return {column: getattr(info, field) for column, field in PROVENANCE_COLUMNS.items()}


def recorded_codec(columns: dict[str, Any]) -> RecordedCodec:
    """What a token row's provenance columns record of the codec that made its codes."""
    return RecordedCodec(
        **{
            field: columns[column]
            for column, field in PROVENANCE_COLUMNS.items()
            if field in RecordedCodec.__dataclass_fields__
        }
    )


@dataclass(frozen=True)
class TokenizedRow(ArrowRow, RowKind):
    """A shard row after the tokenizer: codes instead of audio, plus provenance.

    Attributes:
        kind, shard, key, error, shard_rows: As in `ShardSampleRow`.
        song_id ... song_quality: The sample's metadata, as in `ShardSampleRow`.
        codes: `[channels * n_codebooks, n_frames]` uint16, row-major, as bytes (b""
            unless the row is a usable sample); row `c * n_codebooks + k` is stream c's
            codebook k.
        n_codebooks: Codebooks per code stream (0 when empty).
        n_frames: Frames of `codes` (0 when empty).
        codebook_size: Codes per codebook (for the usage histogram).
        scales, chunk_frames, input_db: The codec's side data (`EncodedSegment`).
        tokenizer ... bitrate_kbps: The codec's provenance (`PROVENANCE_COLUMNS`).
        code_version: This code's name and version.
        read_s: As in `ShardSampleRow`.
        staging_s: Seconds the codec's actor spent per segment of the batch making the PCM a
            tensor of its own (pinned for a GPU); 0 on rows without codes.
        device_s: The batch's encode call per segment: transfer, model, codes back.
        load_s: Seconds the actor took to build its codec (a fixed cost of the stage).
        encoded_at: When the batch's encode call returned (`time.time()`; 0 without codes).
    """

    kind: str
    shard: str
    key: str
    error: str
    shard_rows: int
    song_id: str
    segment_index: int
    start_s: float
    duration_s: float
    lyrics_aligned: bool
    lyrics: str
    lyrics_text: str
    source: str
    source_sha256: str
    split: str
    artist: str
    quality: str
    song_quality: str
    codes: bytes
    n_codebooks: int
    n_frames: int
    codebook_size: int
    scales: list[float]
    chunk_frames: list[int]
    input_db: float
    tokenizer: str
    tokenizer_config: str
    encoder_layer: int
    checkpoint_sha256: str
    token_rate: float
    code_version: str
    codec_preset: str
    codec_mode: str
    sample_rate: int
    channels: int
    bitrate_kbps: float
    read_s: float = 0.0
    staging_s: float = 0.0
    device_s: float = 0.0
    load_s: float = 0.0
    encoded_at: float = 0.0

    @classmethod
    def of(
        cls,
        sample: ShardSampleRow | TokenizedRow,
        info: CodecInfo | None,
        code_version: str,
        codes: EncodedSegment | np.ndarray | None = None,
    ) -> Self:
        """`sample` with its audio replaced by `codes` and their side data.

        Args:
            sample: The shard's row (its audio is not copied).
            info: The codec that made `codes`; None for the audio row, no codec's yet.
            code_version: This code's name and version.
            codes: An `EncodedSegment`, or bare codes `[channels * K, n_frames]`; None for
                a row without codes (an error or a shard-level row).
        """
        provenance = _NO_CODEC if info is None else provenance_columns(info)
        carried: dict[str, Any] = {name: getattr(sample, name) for name in _CARRIED}
        if isinstance(codes, np.ndarray):
            codes = EncodedSegment(codes)
        rows, frames = (0, 0) if codes is None else codes.codes.shape
        return cls(
            **carried,
            codes=b"" if codes is None else codes.codes.astype(np.uint16).tobytes(),
            n_codebooks=int(rows) // max(1, provenance["channels"]),
            n_frames=int(frames),
            codebook_size=0 if info is None else info.codebook_size,
            scales=[] if codes is None else [float(s) for s in codes.scales],
            chunk_frames=[] if codes is None else [int(f) for f in codes.chunk_frames],
            input_db=math.nan if codes is None else float(codes.input_db),
            code_version=code_version,
            **provenance,
        )

    def decode_codes(self) -> np.ndarray:
        """The packed codes back to `[channels * n_codebooks, n_frames]` uint16 (read-only)."""
        shape = (self.channels * self.n_codebooks, self.n_frames)
        return np.frombuffer(self.codes, dtype=np.uint16).reshape(shape)


@dataclass(frozen=True)
class ChainRow(TokenizedRow):
    """A row between the chain's pools: a shard row with its audio, or one codec's row.

    The audio row (`tokenizer` == "", `is_audio`) carries the shard row's PCM on to the next
    pool; every other row is a finished `TokenizedRow` of the codec `tokenizer` names.

    Attributes:
        pcm, song_peak, gain: As in `ShardSampleRow`; empty on codec rows.
    """

    pcm: bytes = b""
    song_peak: float = 0.0
    gain: float = 1.0

    @property
    def is_audio(self) -> bool:
        """The shard's row still carrying its audio, not yet any codec's."""
        return self.tokenizer == ""

    @classmethod
    def audio(cls, sample: ShardSampleRow) -> ChainRow:
        """The audio row of `sample`, as the first pool receives it."""
        empty = cls.of(sample, None, "")
        return replace(empty, pcm=sample.pcm, song_peak=sample.song_peak, gain=sample.gain)
