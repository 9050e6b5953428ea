"""Run bookkeeping: the per-unit completion markers and each stage's `summary.json`.

Markers (`_prepare/units/<n>.json`, `_tokenize/parts/<n>.json`) are read back on every
rerun to skip finished work; summaries are read by people and by tools that follow runs.
Each is a JSON object with a `version` field; readers refuse versions they do not know.
"""

from __future__ import annotations

from typing import Any

from schemas.version import json_version

UNIT_MARKER_VERSION = 1  # prepare: `_prepare/units/<n>.json`
PART_MARKER_VERSION = 1  # tokenize: `_tokenize/parts/<n>.json`
CLAIM_VERSION = 1  # every stage: `<output>/_<stage>/run.json`
SUMMARY_VERSIONS = {"prepare": 1, "tokenize": 1, "spotcheck": 2}  # `<output>/summary.json`


def marker_where(directory: str, data: dict[str, Any]) -> str:
    """The marker's file under `directory`, for errors, from the index it records."""
    index = data.get("index")
    return f"{directory}/{index:06d}.json" if isinstance(index, int) else directory


def check_unit_marker(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a prepare unit marker after checking its version.

    Raises:
        UnsupportedVersion: The marker's version is not `UNIT_MARKER_VERSION`.
    """
    json_version(data, UNIT_MARKER_VERSION, "prepare unit marker", where)
    return data


def check_part_marker(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a tokenize part marker after checking its version.

    Raises:
        UnsupportedVersion: The marker's version is not `PART_MARKER_VERSION`.
    """
    json_version(data, PART_MARKER_VERSION, "tokenize part marker", where)
    return data


def versioned_summary(stage: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the `version` of `stage`'s summary, as it is written to `summary.json`."""
    return {**data, "version": SUMMARY_VERSIONS[stage]}


def check_summary(stage: str, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return `stage`'s parsed `summary.json` after checking its version.

    Args:
        stage: "prepare", "tokenize" or "spotcheck".
        data: The parsed JSON.
        where: The file's path or URL, for the error.

    Raises:
        UnsupportedVersion: The summary's version is not the one this code writes.
    """
    json_version(data, SUMMARY_VERSIONS[stage], f"{stage} summary", where)
    return data


def check_claim(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Return a run claim read back after checking its version.

    A claim without a version was written before claims had one: it is returned as it is,
    and, differing from any claim made now, it is refused as another run's unless --force.
    A claim's `run_id` (`pipeline.claims`) names the run that holds the output; one written
    before claims had ids has none, and is resumed as it is.

    Raises:
        UnsupportedVersion: The claim carries a version other than `CLAIM_VERSION`.
    """
    if isinstance(data, dict) and "version" in data:
        json_version(data, CLAIM_VERSION, "run claim", where)
    return data
