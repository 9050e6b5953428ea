"""Deterministic train / validation / test splits that keep every artist in one split.

A song's split is a pure function of its grouping key (the artist by default; the album or
the song itself by choice) and the fractions: the key's sha256 is read as a number in
[0, 1) and falls into one of the three ranges. The same key always lands in the same split,
on every run and every machine, and adding songs never moves an existing one. Members of a
near-duplicate group share the key of the group's first member, so a copy cannot leak a
song into another split.
"""

from __future__ import annotations

import hashlib
import posixpath
import unicodedata
from dataclasses import dataclass, replace
from typing import Literal

from core.config import JsonConfig
from core.errors import InvalidSetting
from pipeline.path_text import path_text
from pipeline.prepare.records import SongSource

SPLITS = ("train", "validation", "test")
GroupBy = Literal["artist", "album", "song"]
GROUP_BY: tuple[GroupBy, ...] = ("artist", "album", "song")
UNKNOWN_ARTIST = "(unknown artist)"


@dataclass(frozen=True)
class SplitConfig(JsonConfig):
    """Fractions of train, validation and test (summing to 1), and what keeps together."""

    train: float = 0.9
    validation: float = 0.05
    test: float = 0.05
    group_by: GroupBy = "artist"

    def __post_init__(self) -> None:
        shares = (self.train, self.validation, self.test)
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise InvalidSetting(f"split fractions must be >= 0 and sum to 1, not {shares}")
        if self.group_by not in GROUP_BY:
            raise InvalidSetting(f"split group must be one of {GROUP_BY}, not {self.group_by!r}")


def split_of(key: str, config: SplitConfig) -> str:
    """The split of grouping key `key`."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < config.train:
        return "train"
    if position < config.train + config.validation:
        return "validation"
    return "test"


def grouping_key(song_id: str, artist: str, album: str | None, config: SplitConfig) -> str:
    """What must stay together: the artist, the artist's album, or the song alone."""
    if config.group_by == "song":
        return f"song:{song_id}"
    key = f"artist:{normalised(artist)}"
    if config.group_by == "album":
        key += f"\nalbum:{normalised(album or '')}"
    return key


def normalised(name: str) -> str:
    """Case, accents' composition and spacing do not make another artist."""
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def folder_artist(source: str) -> str:
    """The artist a catalog's layout implies: the folder that holds the file."""
    parent = posixpath.basename(posixpath.dirname(source.replace("\\", "/").rstrip("/")))
    return path_text(parent) or UNKNOWN_ARTIST  # A name that is not UTF-8 shows as \xNN.


def with_split(song: SongSource, config: SplitConfig) -> SongSource:
    """`song` with its artist and split filled in where the survey has not set them."""
    artist = song.artist or folder_artist(song.source)
    split = song.split or split_of(grouping_key(song.song_id, artist, song.album, config), config)
    return replace(song, artist=artist, split=split)
