"""Exact duplicates: one file's bytes enter a run once, whatever paths reach them.

A symlink to another file of the catalog is rejected as `duplicate of <song_id>` of its
target wherever it sorts, and a byte copy under another name as the duplicate of the first
song in sorted source order, the same whichever units and workers the songs land in; every
segment carries the sha256 of its source, through to the token table; a rerun takes the
hashes from the cache and hashes only changed files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_codecs.base import CodecSpec
from pipeline.io import StorageOptions
from pipeline.prepare.corpus import discover
from pipeline.prepare.fingerprint import (
    CACHE_SCHEMA,
    FINGERPRINTS_FILE,
    RESULT_SCHEMA,
    fingerprint_batch,
    hash_target,
    resolve_duplicates,
)
from pipeline.prepare.records import SongSource
from pipeline.prepare.stage import PrepareSummary, prepare_corpus
from pipeline.tokenize.stage import TokenizeConfig, tokenize_shards
from tests.pipeline.helpers import read_samples, shard_files, small_config, write_song

STORAGE = StorageOptions()


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _make_corpus(root: Path) -> None:
    """Three recordings under six paths; in sorted order a symlink comes before its target."""
    write_song(str(root / "A/original.wav"), 1.5, seed=1)
    write_song(str(root / "A/other.flac"), 1.2, seed=2)
    write_song(str(root / "Z/target.wav"), 1.4, seed=3)
    (root / "B").mkdir()
    (root / "B/link.wav").symlink_to("../A/original.wav")
    (root / "C").mkdir()
    shutil.copyfile(root / "A/original.wav", root / "C/copy.wav")
    (root / "0").mkdir()
    (root / "0/first.wav").symlink_to("../Z/target.wav")


def _ids(corpus: Path) -> dict[str, str]:
    """Relative path -> song id, as discovery names them."""
    return {
        os.path.relpath(s.source, corpus): s.song_id for s in discover(str(corpus), STORAGE).songs
    }


def _prepare(corpus: Path, output: Path, songs_per_unit: int) -> PrepareSummary:
    scratch = output.parent / f"{output.name}-scratch"
    scratch.mkdir(exist_ok=True)
    config = small_config(str(scratch), songs_per_unit=songs_per_unit)
    return prepare_corpus(str(corpus), str(output), config)


def _rejects(output: Path) -> list[dict]:
    return sorted(pq.read_table(output / "rejects.parquet").to_pylist(), key=lambda r: r["path"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dup-corpus")
    _make_corpus(root)
    return root


@pytest.fixture(scope="module")
def runs(ray_local, corpus, tmp_path_factory) -> dict:
    """The corpus prepared twice: three songs per unit, and one per unit."""
    base = tmp_path_factory.mktemp("dup-out")
    return {
        units: (base / f"per-{units}", _prepare(corpus, base / f"per-{units}", units))
        for units in (3, 1)
    }


@pytest.mark.integration
def test_a_symlink_and_a_copy_are_rejected_once_as_duplicates(runs, corpus):
    ids = _ids(corpus)
    output, summary = runs[3]
    assert [
        (os.path.relpath(r["path"], corpus), r["stage"], r["reason"]) for r in _rejects(output)
    ] == [
        ("0/first.wav", "fingerprint", f"duplicate of {ids['Z/target.wav']}"),
        ("B/link.wav", "fingerprint", f"duplicate of {ids['A/original.wav']}"),
        ("C/copy.wav", "fingerprint", f"duplicate of {ids['A/original.wav']}"),
    ]
    samples = read_samples(shard_files(str(output)))
    assert len({s.key for s in samples}) == len(samples) == summary.segments
    kept = {ids["Z/target.wav"], ids["A/original.wav"], ids["A/other.flac"]}
    assert {s.meta["song_id"] for s in samples} == kept
    for song_id in kept:
        parts = [s for s in samples if s.meta["song_id"] == song_id]
        assert sorted(s.meta["segment_index"] for s in parts) == list(
            range(parts[0].meta["song_segments"])
        )
    assert (summary.songs_in, summary.songs_ok, summary.songs_rejected) == (6, 3, 3)
    # Two symlinks resolve to files hashed anyway: four files read, not six.
    assert summary.files_hashed == 4


@pytest.mark.integration
def test_the_outcome_does_not_depend_on_units_or_workers(runs):
    (grouped, _), (single, summary) = runs[3], runs[1]
    assert summary.units == 3
    assert _rejects(single) == _rejects(grouped)
    by_key = {s.key: s.meta for s in read_samples(shard_files(str(grouped)))}
    assert {s.key: s.meta for s in read_samples(shard_files(str(single)))} == by_key


@pytest.mark.integration
def test_every_segment_carries_the_sha256_of_its_source(runs):
    output, _ = runs[1]
    for sample in read_samples(shard_files(str(output))):
        assert sample.meta["source_sha256"] == _sha256(sample.meta["source"])
    cache = pq.read_table(output / FINGERPRINTS_FILE)
    assert cache.schema.equals(CACHE_SCHEMA, check_metadata=True)
    assert {r["target"]: r["sha256"] for r in cache.to_pylist()} == {
        r["target"]: _sha256(r["target"]) for r in cache.to_pylist()
    }
    assert cache.num_rows == 4


@pytest.mark.integration
def test_the_token_table_carries_the_source_sha256(runs, tmp_path):
    output, _ = runs[1]
    config = TokenizeConfig(codecs=(CodecSpec("mucodec", preset="tiny"),), batch_size=8)
    summary = tokenize_shards(str(output), str(tmp_path / "tokens"), config)["mucodec"]
    rows = pq.read_table(
        tmp_path / "tokens" / "mucodec" / "tokens", columns=["key", "source_sha256"]
    )
    metadata = {s.key: s.meta["source_sha256"] for s in read_samples(shard_files(str(output)))}
    assert dict(zip(*rows.to_pydict().values(), strict=True)) == metadata
    assert summary.segments == len(metadata)


@pytest.mark.integration
def test_a_rerun_hashes_only_the_file_that_changed_and_redoes_its_unit(ray_local, corpus, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy, symlinks=True)
    output = tmp_path / "out"
    first = _prepare(copy, output, 1)
    others = {
        path: os.stat(path).st_mtime_ns
        for path in shard_files(str(output))
        if not any(s.meta["source"].endswith("other.flac") for s in read_samples([path]))
    }
    assert len(others) == 2

    again = _prepare(copy, output, 1)
    assert (again.files_hashed, again.units_run) == (0, 0)

    write_song(str(copy / "A/other.flac"), 2.3, seed=7)  # Other audio, other length.
    changed = _prepare(copy, output, 1)
    assert (changed.files_hashed, changed.units_run, changed.units_already_done) == (1, 1, 2)
    samples = read_samples(shard_files(str(output)))
    other = [s for s in samples if s.meta["source"].endswith("other.flac")]
    assert {s.meta["source_sha256"] for s in other} == {_sha256(copy / "A/other.flac")}
    assert len(other) == 3 and changed.segments == first.segments + 2  # 1.2 s -> 2.3 s.
    assert {p: os.stat(p).st_mtime_ns for p in others} == others  # The other units kept.


def test_first_in_sorted_source_order_wins_whatever_the_order_given():
    songs = [SongSource("z", "/c/x.wav"), SongSource("y", "/a/x.wav"), SongSource("x", "/b/x.wav")]
    targets = {s.song_id: s.source for s in songs}
    results = {s.source: {"sha256": "same", "error": None, "environment": False} for s in songs}
    for order in (songs, songs[::-1]):
        kept, rejects, unhashed = resolve_duplicates(tuple(order), targets, results)
        assert [s.song_id for s in kept] == ["y"] and kept[0].source_sha256 == "same"
        assert [(r.path, r.reason) for r in rejects] == [
            ("/b/x.wav", "duplicate of y"),
            ("/c/x.wav", "duplicate of y"),
        ]
        assert unhashed == {}


def test_empty_files_are_not_duplicates_of_each_other():
    """Each is left to decoding, which rejects it as empty under its own name."""
    songs = (SongSource("a", "/a.wav"), SongSource("b", "/b.wav"))
    empty = hashlib.sha256(b"").hexdigest()
    results = {s.source: {"sha256": empty, "error": None, "environment": False} for s in songs}
    kept, rejects, _ = resolve_duplicates(songs, {"a": "/a.wav", "b": "/b.wav"}, results)
    assert [s.song_id for s in kept] == ["a", "b"] and rejects == ()


def test_an_unhashed_song_keeps_its_place_and_an_unreadable_one_is_rejected():
    songs = (SongSource("a", "/a.wav"), SongSource("b", "/b.wav"))
    results = {
        "/a.wav": {"sha256": None, "error": "s3 down (tried 3 times)", "environment": True},
        "/b.wav": {"sha256": None, "error": "unreadable: file not found", "environment": False},
    }
    kept, rejects, unhashed = resolve_duplicates(songs, {"a": "/a.wav", "b": "/b.wav"}, results)
    assert kept == (songs[0],) and unhashed == {"a": "s3 down (tried 3 times)"}
    assert [(r.song_id, r.stage, r.reason) for r in rejects] == [
        ("b", "fingerprint", "unreadable: file not found")
    ]


def test_the_worker_reuses_an_unchanged_cache_row_and_reports_unreadable_files(tmp_path):
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF-not-really")
    (tmp_path / "dir.wav").mkdir()
    link = tmp_path / "link.wav"
    link.symlink_to(song)
    assert hash_target(str(link)) == hash_target(f"file://{song}") == str(song)

    def run(cached: dict | None) -> list[dict]:
        none = {"cached_size": None, "cached_version": None, "cached_sha256": None}
        rows = [_request(str(tmp_path / n), none) for n in ("dir.wav", "gone.wav")]
        rows.append(_request(str(song), cached or none))
        out = fingerprint_batch(pa.Table.from_pylist(rows), STORAGE)
        assert out.schema.equals(RESULT_SCHEMA)
        return out.to_pylist()

    directory, gone, first = run(None)
    assert first["hashed"] and first["sha256"] == _sha256(song) and not first["error"]
    # Hashed anew, so surveyed in the same task: not audio, so its survey is an error.
    assert json.loads(first["survey"])["error"] and first["survey_seconds"] > 0
    assert gone["error"].startswith("unreadable: file not found") and not gone["environment"]
    assert directory["error"] == "not a regular file (directory)" and directory["sha256"] is None
    cached = {"cached_size": first["size"], "cached_version": first["version"]}
    assert run({**cached, "cached_sha256": "c" * 64})[2] == {
        **first,
        "sha256": "c" * 64,
        "hashed": False,
        "survey": None,  # Its cached bytes have a survey: not decoded again.
        "survey_seconds": None,
    }
    os.utime(song, ns=(1, 1))  # Same size, another version: the cache row is stale.
    assert run({**cached, "cached_sha256": "c" * 64})[2]["sha256"] == _sha256(song)


def _request(target: str, cached: dict) -> dict:
    """A fingerprint request row: the file's text, its exact name, its cache row, and that
    its cached bytes have a survey."""
    return {"target": target, "location": os.fsencode(target), **cached, "unsurveyed": False}
