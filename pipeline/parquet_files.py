"""Parquet files on any fsspec filesystem: written atomically, read without Arrow's threads.

Apart from pipeline.io so that a process that never touches Parquet (a prepare unit's child)
does not import pyarrow.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import atomic_write, unfenced


def write_parquet(
    fs: fsspec.AbstractFileSystem, path: str, table: pa.Table, fence: Callable[[], None] = unfenced
) -> None:
    """Write `table` as one Parquet file at `path`, atomically; `fence` as in `atomic_write`."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with atomic_write(fs, path, fence) as handle:
        handle.write(buffer.getvalue())


def read_parquet(
    fs: fsspec.AbstractFileSystem,
    path: str,
    columns: list[str] | None = None,
    keys: Collection[str] | None = None,
) -> pa.Table:
    """`columns` of a Parquet file, or only its rows whose `key` is in `keys`.

    Synchronous on purpose: `pq.read_table` on a Python file object leaves read-ahead
    futures that Arrow's threads release during interpreter shutdown, which aborts the
    process (exit 134) after the job has finished. With `keys`, row groups whose `key`
    statistics exclude every key are not read.
    """
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        if keys is None:
            return parquet.read(columns=columns)
        wanted = sorted(keys)
        groups = [g for g in range(parquet.num_row_groups)
                  if _may_hold_keys(parquet.metadata.row_group(g), wanted)]  # fmt: skip
        table = parquet.read_row_groups(groups, columns=columns)
    return table.filter(pc.is_in(table.column("key"), value_set=pa.array(wanted)))


def _may_hold_keys(row_group: pq.RowGroupMetaData, wanted: list[str]) -> bool:
    for index in range(row_group.num_columns):
        column = row_group.column(index)
        if column.path_in_schema == "key" and column.is_stats_set:
            low, high = column.statistics.min, column.statistics.max
            return any(low <= key <= high for key in wanted)
    return True
