"""The rejects table: one row per input that could not be used, with the stage and reason."""

from __future__ import annotations

import pyarrow as pa

REJECTS_SCHEMA_VERSION = 1

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("song_id", pa.string()),
    ],
    metadata={"schema": "rejects", "schema_version": str(REJECTS_SCHEMA_VERSION)},
)
