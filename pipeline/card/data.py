"""The dataset card's content (`card.json`): totals, splits, rejects, measure distributions.

Prepare hands over what it kept and what it refused (`CardInputs`); `card_data` turns that
into one JSON-safe dict, which is both the card file and the input of the card's page. The
dict is bounded whatever the catalog's size: measures are histograms, the scatter keeps at
most `MAX_SCATTER_POINTS` songs, and only the first duplicate groups and top artists are
listed.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.quality.splits import SPLITS

CARD_VERSION = 1
HISTOGRAM_BINS = 30
MAX_SCATTER_POINTS = 5_000
MAX_DUPLICATE_GROUPS = 200
TOP_ARTISTS = 20
LOUDNESS = "loudness_lufs"
BANDWIDTH = "bandwidth_hz"


@dataclass(frozen=True)
class CardSong:
    """One kept song (at least one segment) and its song-level measures.

    Attributes:
        song_id: The song's id in the shards.
        artist: The artist as the catalog names it.
        split: "train", "validation" or "test".
        hours: Audio kept for training from this song.
        segments: Segments cut from it.
        measures: Song-level measures by name (e.g. `loudness_lufs`, `bandwidth_hz`); None
            where undefined (the loudness of silence).
    """

    song_id: str
    artist: str
    split: str
    hours: float
    segments: int
    measures: dict[str, float | None]


@dataclass(frozen=True)
class CardDuplicateGroup:
    """Songs found to be the same recording; `members` are (song_id, source, kept)."""

    group: int
    members: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows, as prepare knows it at the end of a run.

    Attributes:
        title: The catalog's input URL.
        songs: The songs kept (with at least one segment).
        rejects_by_reason: Songs refused, per reason ("decode", "filter:...", "duplicate").
        duplicate_groups: Groups of duplicates, each with the member that was kept.
        measure_units: The measures to show, in order, and their unit labels; a song's
            measures not named here are left out.
    """

    title: str
    songs: tuple[CardSong, ...]
    rejects_by_reason: dict[str, int]
    duplicate_groups: tuple[CardDuplicateGroup, ...]
    measure_units: dict[str, str]


def _finite(value: float | None) -> float | None:
    """`value` as a JSON-safe float: None for None, NaN and infinities."""
    return float(value) if value is not None and math.isfinite(value) else None


def _tally(songs: list[CardSong]) -> dict[str, Any]:
    return {
        "songs": len(songs),
        "segments": sum(s.segments for s in songs),
        "hours": math.fsum(s.hours for s in songs),  # fsum: the same total in any order.
        "artists": len({s.artist for s in songs}),
    }


def _splits(songs: tuple[CardSong, ...]) -> dict[str, dict[str, Any]]:
    """The three splits in order, empty ones included; an unexpected split name follows."""
    names = list(SPLITS) + sorted({s.split for s in songs} - set(SPLITS))
    return {name: _tally([s for s in songs if s.split == name]) for name in names}


def _measure(values: list[float | None], unit: str) -> dict[str, Any]:
    """Count, median, 10th/90th percentile and a histogram of the finite values."""
    finite = np.array([v for v in map(_finite, values) if v is not None], dtype=float)
    summary: dict[str, Any] = {"unit": unit, "count": len(finite),
                               "undefined": len(values) - len(finite)}  # fmt: skip
    if not len(finite):
        return {**summary, "median": None, "p10": None, "p90": None,
                "histogram": {"edges": [], "counts": []}}  # fmt: skip
    low, high = float(finite.min()), float(finite.max())
    if low == high:  # np.histogram would spread one value over 30 made-up bins.
        edges, counts = [low, high], [len(finite)]
    else:
        hist, bin_edges = np.histogram(finite, bins=HISTOGRAM_BINS)
        edges, counts = [float(e) for e in bin_edges], [int(c) for c in hist]
    return {
        **summary,
        "median": float(np.median(finite)),
        "p10": float(np.percentile(finite, 10)),
        "p90": float(np.percentile(finite, 90)),
        "histogram": {"edges": edges, "counts": counts},
    }


def _song_order(song: CardSong) -> tuple[str, str]:
    """A fixed pseudo-random order of songs: the same sample of them on every run."""
    return hashlib.sha256(song.song_id.encode()).hexdigest(), song.song_id


def _scatter(songs: tuple[CardSong, ...]) -> list[list[Any]]:
    """[loudness, bandwidth, split] of at most `MAX_SCATTER_POINTS` songs having both."""
    points = []
    for song in sorted(songs, key=_song_order):
        loudness = _finite(song.measures.get(LOUDNESS))
        bandwidth = _finite(song.measures.get(BANDWIDTH))
        if loudness is not None and bandwidth is not None:
            points.append([loudness, bandwidth, song.split])
            if len(points) == MAX_SCATTER_POINTS:
                break
    return points


def _top_artists(songs: tuple[CardSong, ...]) -> list[dict[str, Any]]:
    """The `TOP_ARTISTS` artists with most hours (ties by name)."""
    by_artist: dict[str, list[CardSong]] = defaultdict(list)
    for song in songs:
        by_artist[song.artist].append(song)
    rows = [
        {
            "artist": artist,
            "hours": math.fsum(s.hours for s in own),
            "songs": len(own),
            "splits": sorted({s.split for s in own}),
        }
        for artist, own in by_artist.items()
    ]
    rows.sort(key=lambda row: (-row["hours"], row["artist"]))
    return rows[:TOP_ARTISTS]


def _duplicate_groups(groups: tuple[CardDuplicateGroup, ...]) -> dict[str, Any]:
    """How many groups, and the members of the first `MAX_DUPLICATE_GROUPS`."""
    listed = [
        [
            {"song_id": song_id, "source": source, "kept": kept}
            for song_id, source, kept in g.members
        ]
        for g in groups[:MAX_DUPLICATE_GROUPS]
    ]
    return {"count": len(groups), "groups": listed}


def card_data(inputs: CardInputs) -> dict[str, Any]:
    """The card as a JSON-safe dict (no NaN or infinities): what `card.json` holds.

    Keys: `version`; `title`; `totals` and per split (`splits`: train, validation, test)
    songs, segments, hours and artists; `rejects` per reason, most first; `measures`, per
    name in `measure_units` order: unit, count of finite values, undefined count, median,
    p10, p90 and a histogram (`edges`, `counts`); `loudness_vs_bandwidth` as
    [lufs, hz, split] points; `duplicate_groups` (`count`, and the first groups' members as
    {song_id, source, kept}); `top_artists` (artist, hours, songs, splits).
    """
    songs = inputs.songs
    rejects = sorted(inputs.rejects_by_reason.items(), key=lambda item: (-item[1], item[0]))
    return {
        "version": CARD_VERSION,
        "title": inputs.title,
        "totals": _tally(list(songs)),
        "splits": _splits(songs),
        "rejects": {reason: int(count) for reason, count in rejects},
        "measures": {
            name: _measure([s.measures.get(name) for s in songs], unit)
            for name, unit in inputs.measure_units.items()
        },
        "loudness_vs_bandwidth": _scatter(songs),
        "duplicate_groups": _duplicate_groups(inputs.duplicate_groups),
        "top_artists": _top_artists(songs),
    }
