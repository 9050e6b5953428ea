"""Discovery: directory trees with sidecars, manifests, and key-safe unique song ids."""

from __future__ import annotations

import csv
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import StorageOptions
from pipeline.prepare.corpus import MAX_ID_STEM, derive_song_id, discover, normalise_song_id
from schemas.shard_sample import shard_sample_schema

STORAGE = StorageOptions()
SCHEMA_ID = re.compile(shard_sample_schema()["properties"]["song_id"]["pattern"])
MAX_ID = shard_sample_schema()["properties"]["song_id"]["maxLength"]


def _touch(root, relative: str, data: bytes = b"x") -> str:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _assert_key_safe(song_id: str) -> None:
    assert SCHEMA_ID.match(song_id), song_id
    assert "." not in song_id
    assert not song_id.startswith(("_", "-"))
    assert len(song_id) <= MAX_ID


# --- song ids -------------------------------------------------------------------------------


def test_ids_differing_only_in_characters_sanitising_removes_stay_unique():
    paths = [
        "a b.wav", "a_b.wav", "a.b.wav", "a-b.wav", "a  b.wav", "a/b.wav", "a b.flac",
        "é.wav", "è.wav", "日本.wav", "日本語.wav", "..wav", "_a b.wav", "-a b.wav",
    ]  # fmt: skip
    ids = [derive_song_id(p) for p in paths]
    assert len(set(ids)) == len(paths)
    for song_id in ids:
        _assert_key_safe(song_id)


def test_ids_keep_a_readable_stem_and_are_stable():
    assert derive_song_id("Artist A/First Light.wav").startswith("Artist-A-First-Light-")
    assert derive_song_id("x/y.mp3") == derive_song_id("x/y.mp3")


def test_long_paths_give_bounded_ids():
    song_id = derive_song_id("/".join(["very long directory name"] * 20) + "/song.flac")
    _assert_key_safe(song_id)
    assert len(song_id) <= MAX_ID_STEM + 13


@pytest.mark.parametrize(
    ("given", "kept"),
    [("007", True), ("track_12-b", True), ("a.b", False), ("_x", False), ("x y", False)],
)
def test_catalog_ids_are_kept_only_when_key_safe(given, kept):
    song_id = normalise_song_id(given)
    assert (song_id == given) is kept
    _assert_key_safe(song_id)


# --- trees ----------------------------------------------------------------------------------


def test_tree_finds_audio_pairs_sidecars_and_skips_hidden_and_other_files(tmp_path):
    root = str(tmp_path / "corpus")
    for relative in [
        "A/one.wav", "A/one.lrc", "A/one.txt",  # .lrc beats .txt
        "A/two.FLAC", "A/two.txt",
        "B/three.m4a",
        "B/._three.m4a", ".hidden/four.wav", "B/.five.mp3",  # hidden: skipped
        "B/cover.jpg", "B/notes.txt", "B/six",  # not audio
    ]:  # fmt: skip
        _touch(root, relative)
    found = discover(root, STORAGE)
    by_source = {os.path.relpath(s.source, root): s for s in found.songs}
    assert sorted(by_source) == ["A/one.wav", "A/two.FLAC", "B/three.m4a"]
    assert by_source["A/one.wav"].lyrics_source == os.path.join(root, "A/one.lrc")
    assert by_source["A/two.FLAC"].lyrics_source == os.path.join(root, "A/two.txt")
    assert by_source["B/three.m4a"].lyrics_source is None
    assert [s.song_id for s in found.songs] == sorted(s.song_id for s in found.songs)
    assert found.rejects == ()


def test_tree_ids_are_unique_for_names_that_sanitise_alike(tmp_path):
    root = str(tmp_path / "corpus")
    for name in ["a b.wav", "a_b.wav", "a.b.wav", "a-b.wav", "ä b.wav", "日本.wav", "日本語.wav"]:
        _touch(root, name)
    found = discover(root, STORAGE)
    assert len(found.songs) == 7
    assert len({s.song_id for s in found.songs}) == 7
    for song in found.songs:
        _assert_key_safe(song.song_id)


def test_missing_input_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover(str(tmp_path / "nowhere"), STORAGE)


# --- manifests ------------------------------------------------------------------------------

ROWS = [
    {"path": "audio/one.wav", "song_id": "song-001", "title": "One", "artist": "Band"},
    {"path": "audio/two.flac", "lyrics": "[00:01.00]inline line"},
    {"path": "audio/three.ogg", "song_id": "has.dot", "lyrics_path": "lyrics/three.lrc"},
]


def _write_manifest(path: str, rows: list[dict]) -> None:
    if path.endswith(".jsonl"):
        with open(path, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    elif path.endswith(".csv"):
        columns = sorted({key for row in rows for key in row})
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    else:
        columns = sorted({key for row in rows for key in row})
        table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
        pq.write_table(table, path)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_manifest_fields_and_relative_paths(tmp_path, kind):
    root = tmp_path / "catalog"
    root.mkdir()
    manifest = str(root / f"manifest.{kind}")
    _write_manifest(manifest, ROWS)
    found = discover(manifest, STORAGE)
    assert found.rejects == ()
    by_path = {os.path.relpath(s.source, root): s for s in found.songs}
    assert sorted(by_path) == ["audio/one.wav", "audio/three.ogg", "audio/two.flac"]
    one, two = by_path["audio/one.wav"], by_path["audio/two.flac"]
    three = by_path["audio/three.ogg"]
    assert (one.song_id, one.title, one.artist) == ("song-001", "One", "Band")
    assert one.lyrics_source is None and one.lyrics_text is None
    assert two.lyrics_text == "[00:01.00]inline line"
    assert two.song_id == derive_song_id("audio/two.flac")
    assert two.title is None and two.artist is None
    assert three.lyrics_source == str(root / "lyrics/three.lrc")
    assert three.song_id != "has.dot"
    _assert_key_safe(three.song_id)


def test_manifest_absolute_paths_are_kept_and_csv_ids_keep_leading_zeros(tmp_path):
    manifest = str(tmp_path / "list.csv")
    _write_manifest(manifest, [{"path": "/data/x.wav", "song_id": "007"}])
    (song,) = discover(manifest, STORAGE, allowed_roots=["/data"]).songs
    assert (song.source, song.song_id) == ("/data/x.wav", "007")


def test_manifest_duplicate_ids_and_missing_paths_are_rejected_not_fatal(tmp_path):
    manifest = str(tmp_path / "m.jsonl")
    _write_manifest(
        manifest,
        [
            {"path": "a.wav", "song_id": "same"},
            {"path": "b.wav", "song_id": "same"},
            {"path": "", "song_id": "nopath"},
            {"path": "c.wav"},
            {"path": "c.wav"},  # The same file twice derives the same id.
        ],
    )
    found = discover(manifest, STORAGE)
    assert sorted(os.path.basename(s.source) for s in found.songs) == ["a.wav", "c.wav"]
    reasons = sorted(r.reason for r in found.rejects)
    assert len(reasons) == 3
    assert sum("duplicate song_id 'same'" in r for r in reasons) == 1
    assert sum("duplicate song_id" in r for r in reasons) == 2
    assert sum("row 3: no path" in r for r in reasons) == 1
    assert all(r.stage == "discover" for r in found.rejects)


def test_manifest_without_path_column_is_an_error(tmp_path):
    manifest = str(tmp_path / "m.jsonl")
    _write_manifest(manifest, [{"file": "a.wav"}])
    with pytest.raises(ValueError, match="no 'path' column"):
        discover(manifest, STORAGE)
