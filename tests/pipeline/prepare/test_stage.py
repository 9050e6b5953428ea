"""The prepare stage on Ray Data, end to end: a mixed local corpus -> shards, rejects,
manifest and summary; reading the shards back; reruns, determinism and output claims.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from core.errors import OutputInUse
from pipeline.prepare.corpus import discover
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import UNITS_DIR
from schemas.rejects import REJECTS_SCHEMA
from schemas.shard_sample import validate_sample_metadata
from tests.pipeline.helpers import limits, read_samples, shard_files, small_config, write_song

pytestmark = pytest.mark.integration

# (relative path, seconds, rate, channels, subtype, peak); 1 s segments, tails >= 0.25 s kept.
GOOD = [
    ("A/one.wav", 2.5, 44_100, 2, "PCM_16", 0.7),  # 3 segments
    ("A/two.flac", 2.0, 96_000, 1, "PCM_24", 0.7),  # 2
    ("B/three.ogg", 1.6, 22_050, 2, "VORBIS", 0.7),  # 2
    ("B/four.m4a", 1.1, 48_000, 6, None, 0.7),  # 1 (the AAC frame padding stays < 0.25 s)
    ("C/five.mp3", 2.1, 32_000, 1, "MPEG_LAYER_III", 0.7),  # 2
    ("C/hot six.wav", 1.5, 48_000, 2, "FLOAT", 1.3),  # 2
    ("C/seven.opus", 1.0, 48_000, 2, None, 0.7),  # 1
]
BAD = {
    "D/broken.mp3": b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8,
    "D/empty.flac": b"",
}
SHORT = ("D/tiny.wav", 0.2, 48_000, 2, "PCM_16", 0.7)
SEGMENTS = 13


def _make_corpus(root: Path) -> None:
    for seed, (name, seconds, rate, channels, subtype, peak) in enumerate([*GOOD, SHORT]):
        write_song(str(root / name), seconds, rate, channels, subtype, seed=seed, peak=peak)
    for name, data in BAD.items():
        (root / name).write_bytes(data)
    (root / "A/one.lrc").write_text("[00:00.50]one\n[00:01.50]two\n[00:02.10]three\n")
    (root / "A/two.txt").write_text("plain words\n")
    (root / "B/.hidden.wav").write_bytes(b"")  # Skipped, not rejected.


def _config(scratch: str, **kwargs):
    return small_config(scratch, songs_per_unit=3, shard_limits=limits(max_samples=4), **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _make_corpus(root)
    return root


@pytest.fixture(scope="module")
def prepared(ray_local, corpus, tmp_path_factory):
    """One real run over the corpus: (output dir, summary, config)."""
    base = tmp_path_factory.mktemp("prepared")
    (base / "scratch").mkdir()
    config = _config(str(base / "scratch"))
    output = base / "out"
    summary = prepare_corpus(str(corpus), str(output), config)
    return output, summary, config


def _manifest(output: Path) -> dict:
    return json.loads((output / "manifest.json").read_text())


def test_every_song_is_accounted_for_and_the_summary_matches_the_shards(prepared, corpus):
    output, summary, _ = prepared
    manifest = _manifest(output)
    listed = [output / "shards" / s["name"] for s in manifest["shards"]]
    assert sorted(map(str, listed)) == shard_files(str(output))
    samples = read_samples([str(p) for p in listed])
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys)) == SEGMENTS
    assert manifest["complete"] is True
    assert manifest["samples"] == SEGMENTS == sum(s["samples"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        assert shard["samples"] <= 4
        assert os.path.getsize(output / "shards" / shard["name"]) == shard["bytes"]

    songs = {s.meta["song_id"]: s.meta for s in samples}
    assert summary.songs_in == len(GOOD) + 1 + len(BAD)
    assert summary.songs_ok == len(songs) == len(GOOD)
    assert summary.songs_rejected == 1 + len(BAD)
    assert summary.songs_ok + summary.songs_rejected == summary.songs_in
    assert summary.segments == SEGMENTS
    assert summary.shards == len(manifest["shards"])
    assert (summary.units, summary.units_run, summary.units_already_done) == (4, 4, 0)
    assert summary.units_failed == 0 and summary.failures == []
    hours = sum(meta["source_duration_s"] for meta in songs.values()) / 3600
    assert summary.audio_hours == pytest.approx(hours, rel=1e-6)
    assert summary.audio_seconds_this_run == pytest.approx(hours * 3600, rel=1e-6)
    assert summary.wall_seconds > 0
    assert summary.throughput_realtime == pytest.approx(
        summary.audio_seconds_this_run / summary.wall_seconds
    )
    assert summary.throughput_per_core == pytest.approx(summary.throughput_realtime / summary.cores)
    assert summary.peak_worker_rss_bytes > 10 << 20
    on_disk = json.loads((output / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary.to_dict()))


def test_segments_per_song_follow_the_durations(prepared):
    output, _, _ = prepared
    samples = read_samples(shard_files(str(output)))
    per_source = {}
    for sample in samples:
        source = os.path.basename(sample.meta["source"])
        per_source[source] = per_source.get(source, 0) + 1
        validate_sample_metadata(sample.meta)
        info = sample.info()
        assert (info.samplerate, info.channels, info.subtype) == (48_000, 2, "PCM_16")
    assert per_source == {
        "one.wav": 3, "two.flac": 2, "three.ogg": 2, "four.m4a": 1,
        "five.mp3": 2, "hot six.wav": 2, "seven.opus": 1,
    }  # fmt: skip


def test_rejects_table_names_every_bad_input(prepared, corpus):
    output, _, _ = prepared
    table = pq.read_table(output / "rejects.parquet")
    assert table.schema.equals(REJECTS_SCHEMA, check_metadata=True)
    rows = {os.path.relpath(r["path"], corpus): r for r in table.to_pylist()}
    assert set(rows) == {"D/broken.mp3", "D/empty.flac", "D/tiny.wav"}
    assert rows["D/empty.flac"]["reason"] == "empty: the file has 0 bytes"
    assert rows["D/broken.mp3"]["stage"] == "decode"
    assert rows["D/tiny.wav"]["stage"] == "segment"
    assert rows["D/tiny.wav"]["reason"].startswith("too short")
    assert all(r["song_id"] for r in rows.values())


def test_lyrics_and_gain_survive_the_job(prepared):
    output, _, _ = prepared
    by_source = {}
    for sample in read_samples(shard_files(str(output))):
        by_source.setdefault(os.path.basename(sample.meta["source"]), []).append(sample)
    one = sorted(by_source["one.wav"], key=lambda s: s.key)
    assert [s.meta["lyrics"] for s in one] == [
        [{"t": 0.5, "text": "one"}],
        [{"t": 0.5, "text": "two"}],
        [{"t": 0.1, "text": "three"}],
    ]
    assert {s.txt for s in by_source["two.flac"]} == {"plain words"}
    assert {s.meta["lyrics_aligned"] for s in by_source["two.flac"]} == {False}
    hot = by_source["hot six.wav"]
    assert all(s.meta["gain"] < 1 and s.meta["song_peak"] > 1.2 for s in hot)


def test_ray_data_and_webdataset_read_the_shards_unchanged(prepared, ray_local):
    output, _, _ = prepared
    expected = {s.key: s for s in read_samples(shard_files(str(output)))}
    rows = ray_local.data.read_webdataset(str(output / "shards")).take_all()
    assert sorted(row["__key__"] for row in rows) == sorted(expected)
    for row in rows:
        assert row["flac"] == expected[row["__key__"]].flac
        assert row["json"] == expected[row["__key__"]].meta
        assert row["txt"] == expected[row["__key__"]].txt
    plain = list(wds.WebDataset(shard_files(str(output)), shardshuffle=False))
    assert [row["__key__"] for row in plain] == list(expected)


def test_rerun_on_a_finished_output_does_nothing_new(prepared, corpus):
    output, first, config = prepared
    before = {p: os.stat(p).st_mtime_ns for p in shard_files(str(output))}
    markers = {p.name: p.stat().st_mtime_ns for p in (output / UNITS_DIR).iterdir()}
    again = prepare_corpus(str(corpus), str(output), config)
    assert (again.units_run, again.units_already_done) == (0, 4)
    assert again.audio_seconds_this_run == 0
    assert (again.segments, again.shards, again.songs_ok, again.rejects) == (
        first.segments, first.shards, first.songs_ok, first.rejects,
    )  # fmt: skip
    assert {p: os.stat(p).st_mtime_ns for p in shard_files(str(output))} == before
    assert {p.name: p.stat().st_mtime_ns for p in (output / UNITS_DIR).iterdir()} == markers


def test_a_fresh_output_gets_byte_identical_shards(prepared, corpus, tmp_path):
    output, _, config = prepared
    again = tmp_path / "again"
    prepare_corpus(str(corpus), str(again), config)
    names = [os.path.basename(p) for p in shard_files(str(output))]
    assert [os.path.basename(p) for p in shard_files(str(again))] == names
    for name in names:
        assert (again / "shards" / name).read_bytes() == (output / "shards" / name).read_bytes()
    assert _manifest(again)["shards"] == _manifest(output)["shards"]


def test_another_input_or_config_is_refused_without_force(prepared, corpus, tmp_path):
    output, _, config = prepared
    claimed = tmp_path / "claimed"
    shutil.copytree(output, claimed)
    other = tmp_path / "other-corpus"
    write_song(str(other / "x.flac"), seconds=1.0)
    before = sorted(os.listdir(claimed / "shards"))
    with pytest.raises(OutputInUse, match="--force"):
        prepare_corpus(str(other), str(claimed), config)
    with pytest.raises(OutputInUse):
        prepare_corpus(str(corpus), str(claimed), _config(config.scratch_dir, tail_policy="pad"))
    assert sorted(os.listdir(claimed / "shards")) == before  # Nothing touched.

    summary = prepare_corpus(str(other), str(claimed), config, force=True)
    assert (summary.songs_in, summary.segments, summary.units_run) == (1, 1, 1)
    (sample,) = read_samples(shard_files(str(claimed)))
    assert sample.meta["source"] == str(other / "x.flac")
    assert pq.read_table(claimed / "rejects.parquet").num_rows == 0


def test_manifest_input_counts_every_row_including_duplicates(ray_local, corpus, tmp_path):
    manifest = tmp_path / "catalog.jsonl"
    rows = [
        {"path": str(corpus / "A/one.wav"), "song_id": "one", "lyrics": "[00:01.20]inline"},
        {"path": str(corpus / "A/two.flac"), "song_id": "one"},  # Duplicate id.
        {"path": str(corpus / "D/empty.flac"), "song_id": "empty"},
        {"path": "", "song_id": "nothing"},
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "out"
    config = _config(str(scratch), allowed_roots=(str(corpus),))  # The manifest is elsewhere.
    summary = prepare_corpus(str(manifest), str(output), config)
    assert len(discover(str(manifest), config.storage, config.allowed_roots).rejects) == 2
    assert summary.songs_in == 4
    assert (summary.songs_ok, summary.songs_rejected, summary.rejects) == (1, 3, 3)
    assert summary.songs_ok + summary.songs_rejected == summary.songs_in
    samples = read_samples(shard_files(str(output)))
    assert [s.key for s in samples] == ["one_00000", "one_00001", "one_00002"]
    assert samples[1].meta["lyrics"] == [{"t": 0.2, "text": "inline"}]
    stages = sorted(r["stage"] for r in pq.read_table(output / "rejects.parquet").to_pylist())
    assert stages == ["decode", "discover", "discover"]
