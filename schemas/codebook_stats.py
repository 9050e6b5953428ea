"""Tokenize's `codebook_stats.json`: per-codebook usage and bitrate efficiency of a run."""

from __future__ import annotations

from typing import Any

from schemas.version import json_version

CODEBOOK_STATS_VERSION = 1


def check_codebook_stats(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a parsed `codebook_stats.json` after checking its version.

    Raises:
        UnsupportedVersion: Its version is not `CODEBOOK_STATS_VERSION`.
    """
    json_version(data, CODEBOOK_STATS_VERSION, "codebook stats", where)
    return data
