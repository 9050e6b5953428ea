"""The rejects table: one row per input that could not be used, with the stage and reason."""

from __future__ import annotations

import pyarrow as pa

from schemas.version import check_version

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


def check_rejects_schema(schema: pa.Schema, where: str) -> None:
    """Refuse a rejects table of a version this code does not read.

    Args:
        schema: The table's Arrow schema (as read back, with its metadata).
        where: The file's path or URL, for the error.

    Raises:
        UnsupportedVersion: The schema metadata's version is not `REJECTS_SCHEMA_VERSION`.
    """
    found = (schema.metadata or {}).get(b"schema_version")
    check_version(found.decode() if found else None, REJECTS_SCHEMA_VERSION, "rejects table", where)
