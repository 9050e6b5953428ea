"""Catalog-wide decisions taken before units: artists, near-duplicate groups, splits.

From the survey (pipeline/prepare/survey.py) every song gets:
- its artist: the manifest's column, else the file's tags, else the folder that holds it;
  its album likewise from the manifest or the tags;
- its near-duplicate group: songs whose fingerprints match (pipeline/quality/duplicates.py),
  within the catalog and against an earlier run's catalog (`--dedupe-against`);
- its split: from its group's key (pipeline/quality/splits.py); a group's members all take
  the key of the member whose key sorts first, so copies stay in one split.
With `dedupe="keep-best"` each group keeps one song by the keep-best rule and the others
are rejected naming the keeper; a song matching an earlier run's song is rejected, since
the earlier run already holds it. Group numbers follow the sorted groups, so a rerun over
the same catalog numbers them the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from core.errors import MissingInput
from pipeline.io import StorageOptions, exists, filesystem, join
from pipeline.parquet_files import read_parquet
from pipeline.path_text import path_text
from pipeline.prepare.records import Reject, SongSource
from pipeline.prepare.survey import SURVEY_FILE, read_survey
from pipeline.quality.duplicates import (
    Candidate,
    Match,
    SongPrint,
    find_matches,
    group_songs,
    keep_best,
)
from pipeline.quality.splits import SplitConfig, folder_artist, grouping_key, split_of
from schemas.quality import QUALITY_FILE

DUPLICATES_FILE = "duplicates.parquet"
Dedupe = Literal["report", "keep-best"]
DEDUPE_CHOICES: tuple[Dedupe, ...] = ("report", "keep-best")
STAGE = "near_duplicate"  # The rejects' stage and rule of a dropped near-duplicate.
_EARLIER = "earlier:"  # Prefix of an earlier run's song ids in the matching.

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("group", pa.int64(), nullable=False),
        pa.field("song_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("earlier_run", pa.bool_(), nullable=False),  # A song of --dedupe-against.
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("matched_with", pa.string()),  # The member it matches best.
        pa.field("bit_error_rate", pa.float64()),
        pa.field("offset_s", pa.float64()),
    ],
    metadata={"schema": "prepare-duplicates", "schema_version": "1"},
)


@dataclass(frozen=True)
class EarlierSong:
    """A song of an earlier run's output, which new songs are checked against."""

    song_id: str
    source: str
    fingerprint: np.ndarray


@dataclass(frozen=True)
class Curation:
    """The songs that go on to units, the near-duplicates dropped, and the groups found."""

    songs: tuple[SongSource, ...]
    rejects: tuple[Reject, ...]
    duplicates: pa.Table  # DUPLICATES_SCHEMA rows.
    groups: int


def curate(
    songs: tuple[SongSource, ...],
    survey: Mapping[str, Mapping[str, Any]],
    splits: SplitConfig,
    dedupe: Dedupe,
    earlier: tuple[EarlierSong, ...] = (),
) -> Curation:
    """Artists, groups, keepers and splits for `songs` (survey rows by sha256)."""
    facts = {s.song_id: survey.get(s.source_sha256 or "", {}) for s in songs}
    songs = tuple(_with_names(song, facts[song.song_id]) for song in songs)
    by_id = {song.song_id: song for song in songs}
    prints = [SongPrint(s.song_id, np.asarray(facts[s.song_id]["fingerprint"], np.uint32))
              for s in songs if facts[s.song_id].get("fingerprint")]  # fmt: skip
    earlier_prints = [SongPrint(_EARLIER + e.song_id, e.fingerprint) for e in earlier]
    matches = find_matches(prints, earlier_prints)
    groups = group_songs(matches)
    earlier_sources = {_EARLIER + e.song_id: e.source for e in earlier}

    group_of: dict[str, int] = {}
    dropped: dict[str, Reject] = {}
    rows: list[dict[str, Any]] = []
    for number, members in enumerate(groups):
        current = [m for m in members if m in by_id]
        keeper = _keeper(members, current, facts, dedupe)
        for member in members:
            group_of[member] = number
            best = _best_match(member, matches)
            rows.append({
                "group": number,
                "song_id": member.removeprefix(_EARLIER),
                "source": path_text(by_id[member].source if member in by_id
                                    else earlier_sources[member]),
                "earlier_run": member not in by_id,
                "kept": keeper is None or member == keeper or member not in by_id,
                "matched_with": best and _other(best, member).removeprefix(_EARLIER),
                "bit_error_rate": best and best.bit_error_rate,
                "offset_s": best and best.offset_s,
            })  # fmt: skip
            if keeper is not None and member in by_id and member != keeper:
                dropped[member] = _duplicate_reject(by_id[member], keeper, number, best)

    group_keys: dict[int, str] = {}
    for song in songs:
        if (number := group_of.get(song.song_id)) is not None:
            key = _key(song, splits)
            group_keys[number] = min(group_keys.get(number, key), key)
    kept: list[SongSource] = []
    for song in songs:
        number = group_of.get(song.song_id)
        key = _key(song, splits) if number is None else group_keys[number]
        song = replace(song, split=split_of(key, splits), duplicate_group=number)
        if song.song_id not in dropped:
            kept.append(song)
    table = pa.Table.from_pylist(rows, schema=DUPLICATES_SCHEMA)
    return Curation(tuple(kept), tuple(dropped.values()), table, len(groups))


def earlier_songs(output_url: str | None, storage: StorageOptions) -> tuple[EarlierSong, ...]:
    """The songs an earlier prepare output kept, with their fingerprints from its survey.

    Raises:
        MissingInput: if `output_url` holds no finished prepare run (no quality table).
    """
    if output_url is None:
        return ()
    fs, root = filesystem(output_url, storage)
    quality_path = join(root, QUALITY_FILE)
    if not exists(fs, quality_path):
        raise MissingInput(f"--dedupe-against {output_url}: no {QUALITY_FILE} there")
    prints = read_survey(fs, join(root, SURVEY_FILE))
    songs = read_parquet(fs, quality_path).to_pylist()
    return tuple(
        EarlierSong(row["song_id"], row["source"], np.asarray(fingerprint, np.uint32))
        for row in songs
        if row["level"] == "song"
        and row["kept"]
        and (fingerprint := prints.get(row["source_sha256"] or "", {}).get("fingerprint"))
    )


def _with_names(song: SongSource, facts: Mapping[str, Any]) -> SongSource:
    artist = song.artist or facts.get("artist") or folder_artist(song.source)
    return replace(song, artist=artist, album=song.album or facts.get("album"))


def _key(song: SongSource, splits: SplitConfig) -> str:
    return grouping_key(song.song_id, song.artist or "", song.album, splits)


def _keeper(
    members: tuple[str, ...], current: list[str], facts: Mapping[str, Mapping[str, Any]],
    dedupe: Dedupe,
) -> str | None:  # fmt: skip
    """The member kept under keep-best (an earlier run's song when there is one), else None."""
    if dedupe != "keep-best":
        return None
    if len(current) < len(members):
        return next(m for m in members if m not in current)
    return keep_best([
        Candidate(m, facts[m].get("codec") or "", facts[m].get("bandwidth_hz") or 0.0,
                  facts[m].get("duration_s") or 0.0)
        for m in current
    ])  # fmt: skip


def _best_match(member: str, matches: list[Match]) -> Match | None:
    own = [m for m in matches if member in (m.first, m.second)]
    return min(own, key=lambda m: (m.bit_error_rate, m.first, m.second), default=None)


def _other(match: Match, member: str) -> str:
    return match.second if match.first == member else match.first


def _duplicate_reject(song: SongSource, keeper: str, group: int, best: Match | None) -> Reject:
    if keeper.startswith(_EARLIER):
        why = f"already in the earlier run as {keeper.removeprefix(_EARLIER)}"
    else:
        why = f"near-duplicate of {keeper}, kept by the keep-best rule"
    return Reject(
        song.source, STAGE, f"{why} (duplicate group {group})", song.song_id,
        rule=STAGE, value=best.bit_error_rate if best else None, duplicate_group=group,
    )  # fmt: skip
