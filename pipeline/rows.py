"""Typed rows at the Ray Data edge: frozen dataclasses in the steps, Arrow tables between them.

Ray Data hands batches around as Arrow tables of plain columns. Each row type of a stage is
a frozen dataclass deriving from `ArrowRow`; its fields are the columns. The steps work on
the dataclasses; `from_table` / `to_table` (and `from_dict` / `to_dict` for single rows)
convert at the edge, against an Arrow schema derived from the annotations, so every block
of a row type has the same schema whatever its rows hold.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any, Self

import pyarrow as pa

_ARROW_TYPES = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


def _arrow_type(hint: Any) -> pa.DataType:
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return pa.list_(_arrow_type(item))
    return _ARROW_TYPES[hint]


class ArrowRow:
    """Mixin for frozen dataclass rows that cross Ray Data as Arrow columns.

    Field types are limited to str, int, float, bool, bytes and (nested) lists of them, so
    that a row round-trips through Arrow unchanged; an unknown or missing column is an error
    (`TypeError` from the constructor), not a silently dropped field.
    """

    @classmethod
    @cache
    def arrow_schema(cls) -> pa.Schema:
        """The Arrow schema of a table of these rows: one column per field, in order."""
        hints = typing.get_type_hints(cls)
        return pa.schema(
            [pa.field(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(cls)]
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """One row from a Ray Data row dict (or a table's `to_pylist` item)."""
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The row as a Ray Data row dict (shallow: bytes and lists are shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_table(cls, table: pa.Table) -> list[Self]:
        """Every row of an Arrow batch, in order."""
        return [cls(**row) for row in table.to_pylist()]

    @classmethod
    def to_table(cls, rows: list[Self]) -> pa.Table:
        """An Arrow batch of `rows`, in this row type's schema (also when empty)."""
        return pa.Table.from_pylist([r.to_dict() for r in rows], schema=cls.arrow_schema())
