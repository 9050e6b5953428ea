"""Records that flow between prepare's steps: what a song is, and why an input was rejected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import JsonConfig
from pipeline.path_text import path_bytes, path_text


@dataclass(frozen=True)
class SongSource(JsonConfig):
    """One discovered song: where its audio and lyrics are, and what the catalog says of it.

    `source` is the audio URL exactly as discovered. Lyrics come either from a sidecar or
    manifest path (`lyrics_source`) or inline from a manifest (`lyrics_text`).
    `source_sha256` is the hex sha256 of the audio file's bytes, set by the fingerprint pass
    (pipeline/prepare/fingerprint.py); being part of the unit's fingerprint, a changed file redoes
    its unit. None until then: a unit run on its own hashes the file itself.
    """

    song_id: str
    source: str
    lyrics_source: str | None = None
    lyrics_text: str | None = None
    title: str | None = None
    artist: str | None = None
    source_sha256: str | None = None
    # Set by the survey before units are planned (pipeline/prepare/survey.py): the album as
    # the catalog or the file's tags give it, the song's split, and its near-duplicate group.
    album: str | None = None
    split: str | None = None
    duplicate_group: int | None = None


@dataclass(frozen=True)
class Reject(JsonConfig):
    """An input that could not be used, and why; a row of the rejects table.

    A song or segment dropped by a quality filter or as a near-duplicate also names the
    `rule` that dropped it and the measured `value` (the bit error rate for a duplicate);
    `segment_index` is set when only that segment was dropped.
    """

    path: str
    stage: str
    reason: str
    song_id: str | None = None
    rule: str | None = None
    value: float | None = None
    segment_index: int | None = None
    duplicate_group: int | None = None

    def to_row(self) -> dict[str, Any]:
        """The rejects-table row: text columns valid UTF-8, an undecodable path kept as bytes."""
        return {
            "path": path_text(self.path),
            "stage": self.stage,
            "reason": path_text(self.reason),  # Reasons may quote the path.
            "song_id": self.song_id,
            "path_bytes": path_bytes(self.path),
            "rule": self.rule,
            "value": self.value,
            "segment_index": self.segment_index,
            "duplicate_group": self.duplicate_group,
        }
