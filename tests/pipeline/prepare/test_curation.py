"""Catalog-wide curation without Ray: artists from the manifest, tags or folder; groups of
near-duplicates; the keep-best rule; one split per group; checks against an earlier run."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.prepare.curation import EarlierSong, curate
from pipeline.prepare.records import SongSource
from pipeline.quality.chromaprint import fingerprint_blocks
from pipeline.quality.splits import SplitConfig
from testing.synth import synth_song

RATE = 22_050


@pytest.fixture(scope="module")
def prints() -> dict[str, list[int]]:
    """Chromaprints of two songs and a copy of the first trimmed by 2 s."""
    first = synth_song(30.0, RATE, 2, seed=11)
    second = synth_song(30.0, RATE, 2, seed=12)
    audio = {"first": first, "second": second, "trimmed": first[2 * RATE :]}
    return {name: fingerprint_blocks([a], RATE, 2).tolist() for name, a in audio.items()}


def _survey(prints, **facts) -> dict[str, dict]:
    rows = {}
    for name, fingerprint in prints.items():
        codec, bandwidth = facts.get(name, ("pcm_s16le", 20_000.0))
        rows[f"sha-{name}"] = {"fingerprint": fingerprint, "codec": codec,
                               "bandwidth_hz": bandwidth, "duration_s": 30.0,
                               "artist": None, "album": None}  # fmt: skip
    return rows


def _songs() -> tuple[SongSource, ...]:
    return (
        SongSource("a-first", "/m/Ann/first.wav", source_sha256="sha-first"),
        SongSource("b-second", "/m/Bob/second.wav", source_sha256="sha-second", artist="Bobby"),
        SongSource("c-trimmed", "/m/Cy/trimmed.mp3", source_sha256="sha-trimmed"),
    )


def test_report_groups_copies_keeps_all_and_puts_a_group_in_one_split(prints):
    curation = curate(_songs(), _survey(prints), SplitConfig(0.34, 0.33, 0.33), "report")
    by_id = {s.song_id: s for s in curation.songs}
    assert set(by_id) == {"a-first", "b-second", "c-trimmed"} and not curation.rejects
    assert by_id["a-first"].artist == "Ann" and by_id["b-second"].artist == "Bobby"
    assert by_id["a-first"].duplicate_group == by_id["c-trimmed"].duplicate_group == 0
    assert by_id["b-second"].duplicate_group is None
    assert by_id["a-first"].split == by_id["c-trimmed"].split
    rows = curation.duplicates.to_pylist()
    assert {r["song_id"] for r in rows} == {"a-first", "c-trimmed"}
    assert all(r["kept"] for r in rows) and curation.groups == 1


def test_keep_best_keeps_the_lossless_copy(prints):
    survey = _survey(prints, trimmed=("mp3", 16_000.0))
    curation = curate(_songs(), survey, SplitConfig(), "keep-best")
    assert {s.song_id for s in curation.songs} == {"a-first", "b-second"}
    (reject,) = curation.rejects
    assert reject.song_id == "c-trimmed" and reject.rule == "near_duplicate"
    assert reject.duplicate_group == 0 and "near-duplicate of a-first" in reject.reason
    kept = {r["song_id"]: r["kept"] for r in curation.duplicates.to_pylist()}
    assert kept == {"a-first": True, "c-trimmed": False}


def test_songs_already_in_an_earlier_run_are_found_and_dropped(prints):
    earlier = (EarlierSong("old-1", "/old/first.flac",
                           np.asarray(prints["first"], np.uint32)),)  # fmt: skip
    songs = _songs()[1:]
    survey = _survey({k: v for k, v in prints.items() if k != "first"})
    curation = curate(songs, survey, SplitConfig(), "keep-best", earlier)
    assert {s.song_id for s in curation.songs} == {"b-second"}
    (reject,) = curation.rejects
    assert "already in the earlier run as old-1" in reject.reason
    rows = {r["song_id"]: r for r in curation.duplicates.to_pylist()}
    assert rows["old-1"]["earlier_run"] and rows["old-1"]["kept"]
    assert not rows["c-trimmed"]["kept"]


def test_curation_is_deterministic(prints):
    first = curate(_songs(), _survey(prints), SplitConfig(), "report")
    again = curate(tuple(reversed(_songs())), _survey(prints), SplitConfig(), "report")
    assert sorted(first.songs, key=lambda s: s.song_id) == sorted(
        again.songs, key=lambda s: s.song_id
    )
    assert first.duplicates.equals(again.duplicates)
