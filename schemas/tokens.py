"""The token table: one Parquet row per segment and codec, codes as nested uint16 lists.

Every codec (MuCodec, DAC, EnCodec) writes this one schema, each into its own table. Plain
Arrow types only (no extension types), so pyarrow, DuckDB and Hugging Face `datasets` read
it without custom code. `codes` is a list of `channels * n_codebooks` rows of `n_frames`
uint16: row `c * n_codebooks + k` is codebook k of code stream c (`channels` streams: 1 for
MuCodec and EnCodec, 2 for DAC's folded stereo). Side data a codec needs to decode travels
beside the codes: `scales` (per-chunk normalisation, EnCodec 48 kHz), `chunk_frames`
(frames per chunk of chunked codes) and `input_db` (DAC compress's loudness). Provenance
columns repeat per row (dictionary-encoded, so they cost almost nothing) and are also in
the file's schema metadata (`codec`, JSON), so any reader sees which codec made the codes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.quality import MEASURE_COLUMNS
from schemas.version import check_version

# 2: `source_sha256`. 3: any codec. 4: lyric lines on frames. 5: `split`, `artist`,
# `quality` and `song_quality`.
TOKENS_SCHEMA_VERSION = 5
# A version 3 line has no frames (`lyric_frames` gives them); versions 3 and 4 have no
# split or measures (their rows read as "train" with null measures).
READABLE_VERSIONS = (3, 4, 5)
# A segment's or song's quality measures (prepare's quality.parquet columns); null where
# undefined (the loudness of silence), the whole struct null for shards without measures.
QUALITY = pa.struct([pa.field(name, pa.float64()) for name in MEASURE_COLUMNS])

# A lyric line: its start in seconds from the segment's start, its text, and the codec frames
# it spans (frame 0 starts at the segment's first sample; the last is the frame before the
# next line's first, or the segment's last frame).
LYRIC_LINE = pa.struct(
    [
        pa.field("t", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("first_frame", pa.int32()),
        pa.field("last_frame", pa.int32()),
    ]
)

TOKENS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("song_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("n_codebooks", pa.int16(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("codes", pa.list_(pa.list_(pa.uint16())), nullable=False),
        pa.field("lyrics_aligned", pa.bool_(), nullable=False),
        pa.field("lyrics", pa.list_(LYRIC_LINE), nullable=False),
        pa.field("lyrics_text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("tokenizer", pa.string(), nullable=False),
        pa.field("tokenizer_config", pa.string(), nullable=False),
        pa.field("encoder_layer", pa.int16(), nullable=False),
        pa.field("checkpoint_sha256", pa.string(), nullable=False),
        pa.field("token_rate", pa.float32(), nullable=False),
        pa.field("code_version", pa.string(), nullable=False),
        pa.field("codec_preset", pa.string(), nullable=False),
        pa.field("codec_mode", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("channels", pa.int8(), nullable=False),
        pa.field("bitrate_kbps", pa.float32(), nullable=False),
        pa.field("scales", pa.list_(pa.float32()), nullable=False),
        pa.field("chunk_frames", pa.list_(pa.int32()), nullable=False),
        pa.field("input_db", pa.float32(), nullable=False),
        # The song's split and artist (null for shards from before splits), and measures.
        pa.field("split", pa.string()),
        pa.field("artist", pa.string()),
        pa.field("quality", QUALITY),
        pa.field("song_quality", QUALITY),
    ],
    metadata={"schema": "mucodec-tokens", "schema_version": str(TOKENS_SCHEMA_VERSION)},
)


def check_tokens_schema_version(schema: pa.Schema, where: str = "(table)") -> None:
    """Readers refuse token tables of a version they do not know.

    Args:
        schema: The table's Arrow schema as read back (with its metadata).
        where: The file's path or URL, for the error.

    Raises:
        UnsupportedVersion: The schema metadata's version is not one of `READABLE_VERSIONS`.
    """
    found = (schema.metadata or {}).get(b"schema_version")
    version = found.decode() if found else None
    if version not in {str(v) for v in READABLE_VERSIONS}:
        check_version(version, TOKENS_SCHEMA_VERSION, "token table", where)


def lyric_frames(lines: list[dict], frame_rate: float, n_frames: int) -> list[dict]:
    """`lines` (`{t, text}`, in time order) with the frames each spans at `frame_rate`.

    A line's first frame is the one its start falls in; its last is the frame before the
    next line's first (at least its own first), the last line's the segment's last frame.
    Frames are clipped to `[0, n_frames - 1]`.
    """
    if not lines:
        return []
    last = max(n_frames - 1, 0)
    firsts = [min(max(int(line["t"] * frame_rate), 0), last) for line in lines]
    ends = [max(first, following - 1) for first, following in itertools.pairwise(firsts)]
    return [
        {"t": line["t"], "text": line["text"], "first_frame": first, "last_frame": end}
        for line, first, end in zip(lines, firsts, [*ends, last], strict=True)
    ]


def validate_tokens_table(table: pa.Table) -> None:
    """Raise ValueError unless `table` has exactly the token schema and consistent shapes.

    `codes` of every row must be `[channels * n_codebooks][n_frames]`.
    """
    if not table.schema.equals(TOKENS_SCHEMA, check_metadata=False):
        raise ValueError(
            f"token table schema mismatch:\n{table.schema}\nexpected:\n{TOKENS_SCHEMA}"
        )
    check_tokens_schema_version(table.schema)
    codes = table.column("codes").combine_chunks()
    n_codebooks = table.column("n_codebooks").to_numpy().astype(np.int64)
    n_codebooks = n_codebooks * table.column("channels").to_numpy().astype(np.int64)
    n_frames = table.column("n_frames").to_numpy()
    outer = pc.list_value_length(codes).to_numpy(zero_copy_only=False)
    inner = pc.list_value_length(pc.list_flatten(codes)).to_numpy(zero_copy_only=False)
    frames_per_list = np.repeat(n_frames, outer)
    bad = np.flatnonzero(outer != n_codebooks)
    if len(bad) == 0 and not np.array_equal(inner, frames_per_list):
        row_of_list = np.repeat(np.arange(len(outer)), outer)
        bad = np.unique(row_of_list[inner != frames_per_list])
    if len(bad):
        key = table.column("key")[int(bad[0])].as_py()
        raise ValueError(f"row {key}: codes do not have shape [channels * n_codebooks, n_frames]")
