"""The rejects table: one row per input that could not be used, with the stage and reason."""

from __future__ import annotations

import pyarrow as pa

from schemas.version import check_version

# 2: `path_bytes`. 3: `rule`, `value`, `segment_index`, `duplicate_group` (quality filters
# and near-duplicates). Older tables (without them) are still read.
REJECTS_SCHEMA_VERSION = 3
READABLE_VERSIONS = ("1", "2", "3")

REJECTS_SCHEMA = pa.schema(
    [
        # `path` is text; a name that is not UTF-8 shows each such byte as `\xNN` there and
        # has its exact bytes in `path_bytes` (null for every other path).
        pa.field("path", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("song_id", pa.string()),
        pa.field("path_bytes", pa.binary()),
        # The filter (or "near_duplicate") that dropped a song or segment, what it measured,
        # the segment when only one was dropped, and the duplicate group.
        pa.field("rule", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("segment_index", pa.int32()),
        pa.field("duplicate_group", pa.int64()),
    ],
    metadata={"schema": "rejects", "schema_version": str(REJECTS_SCHEMA_VERSION)},
)


def check_rejects_schema(schema: pa.Schema, where: str) -> None:
    """Refuse a rejects table of a version this code does not read.

    Args:
        schema: The table's Arrow schema (as read back, with its metadata).
        where: The file's path or URL, for the error.

    Raises:
        UnsupportedVersion: The schema metadata's version is not one of `READABLE_VERSIONS`.
    """
    found = (schema.metadata or {}).get(b"schema_version")
    version = found.decode() if found else None
    if version not in READABLE_VERSIONS:
        check_version(version, REJECTS_SCHEMA_VERSION, "rejects table", where)
