"""The metadata of a shard sample (`<key>.json`): JSON Schema, version check, validation."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

# 2: `source_sha256` (and `duration_evidence`). 3: `split`, `quality`, `song_quality`,
# `duplicate_group`, `album`. Version 2 samples are still read.
SHARD_SAMPLE_SCHEMA_VERSION = 3
READABLE_VERSIONS = (2, 3)


@cache
def shard_sample_schema() -> dict[str, Any]:
    """The JSON Schema of a sample's metadata (`shard_sample.schema.json`), parsed once."""
    text = resources.files("schemas").joinpath("shard_sample.schema.json").read_text()
    return json.loads(text)


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = shard_sample_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def validate_sample_metadata(metadata: dict[str, Any]) -> None:
    """Raise ValueError naming the field when `metadata` does not match the schema."""
    version = metadata.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"shard sample schema_version {version!r} is not supported "
            f"(this code reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    error = jsonschema.exceptions.best_match(_validator().iter_errors(metadata))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise ValueError(f"shard sample metadata invalid at {where}: {error.message}")
