"""The JSON round trip of configs and records: frozen dataclasses of plain values.

Model configs (so that checkpoints carry the config they were built with), pipeline records
and run summaries all use it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Self


class JsonConfig:
    """Mixin: JSON round trip for (nested) frozen dataclasses of plain values."""

    def to_dict(self) -> dict[str, Any]:
        """Converts the config to plain values.

        Returns:
            A JSON-ready dict; nested configs become nested dicts.
        """
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Builds the config from `to_dict` output; unknown keys are an error.

        Args:
            data: Field name -> JSON value (nested configs as dicts, tuples as lists).

        Returns:
            The config.

        Raises:
            ValueError: if `data` has a key that is not a field of this config.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _coerce(hints[name], value)
        return cls(**kwargs)

    def to_json(self) -> str:
        """Serialises the config stably (sorted keys, indented), for checkpoints and provenance.

        Returns:
            The JSON text.
        """
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Inverse of `to_json`.

        Args:
            text: JSON written by `to_json`.

        Returns:
            The config.

        Raises:
            ValueError: on unknown keys (see `from_dict`).
        """
        return cls.from_dict(json.loads(text))


def _coerce(hint: Any, value: Any) -> Any:
    """Turns a JSON value back into the field's type (nested configs and tuples)."""
    if isinstance(hint, type) and issubclass(hint, JsonConfig) and isinstance(value, dict):
        return hint.from_dict(value)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None) and value is not None:
                return _coerce(arg, value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value
