"""`quality.parquet`: one row per measured song and per measured segment of a prepare run.

Rows of both levels share one schema (`level` tells them apart): who and where (`song_id`,
`key` and `segment_index` for segments, `source`, `source_sha256`), the song's `artist`,
`split` and near-duplicate group, whether the row's audio was kept for training and if not
which filter dropped it, the seconds kept, then every measure (null where undefined, e.g.
the loudness of silence). A song row's measures are over its segments; segments and songs
dropped by a filter are measured and listed too, so thresholds can be tuned from the table.
"""

from __future__ import annotations

import pyarrow as pa

QUALITY_VERSION = 1
QUALITY_FILE = "quality.parquet"
MEASURE_COLUMNS = (
    "loudness_lufs",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "silence",
    "digital_silence",
    "bandwidth_hz",
    "stereo_correlation",
    "channel_balance_db",
    "dc_offset",
    "clipping",
)

QUALITY_SCHEMA = pa.schema(
    [
        pa.field("level", pa.string(), nullable=False),  # "song" or "segment"
        pa.field("song_id", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("segment_index", pa.int32()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string()),
        pa.field("artist", pa.string()),
        pa.field("split", pa.string()),
        pa.field("duplicate_group", pa.int64()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("dropped_by", pa.string()),
        pa.field("kept_seconds", pa.float64(), nullable=False),
        *[pa.field(name, pa.float64()) for name in MEASURE_COLUMNS],
    ],
    metadata={"schema": "prepare-quality", "schema_version": str(QUALITY_VERSION)},
)
