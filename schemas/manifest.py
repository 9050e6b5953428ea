"""Prepare's output layout and its `manifest.json`: the complete shards and their sample counts.

Tokenize, spotcheck and audit find prepare's shards through the manifest, so the layout
constants live here, where both the writer (prepare) and the readers import them.

`manifest.json` fields: `version`, `complete` (every unit finished), `input_url`, `config`
(the settings that shaped the output), `shards` (`[{name, samples, bytes, ...}]`, names
relative to `SHARDS_DIR`) and `samples` (their total).
"""

from __future__ import annotations

from typing import Any

from schemas.version import json_version

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
SHARDS_DIR = "shards"  # Under prepare's output: the WebDataset shards.


def check_manifest(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return `data`, a parsed `manifest.json`, after checking its version.

    Args:
        data: The parsed JSON.
        where: The manifest's path or URL, for the error.

    Raises:
        UnsupportedVersion: The manifest's version is not `MANIFEST_VERSION`.
    """
    json_version(data, MANIFEST_VERSION, "prepare manifest", where)
    return data
