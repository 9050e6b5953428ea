"""Quality in the prepare stage, end to end on Ray: a catalog with planted defects and
re-encoded copies -> measures in the shards and quality.parquet, drops with their filter and
value, near-duplicate groups, artist-disjoint splits, a dataset card; reruns identical.

The copies are made by the ffmpeg command line (an mp3 at 128 kbit/s, a trimmed 32 kHz FLAC);
the defects are written as files a catalog could hold: digital silence, a song clipped at
full scale, one resampled up from 22.05 kHz, mono stored as stereo, a song that ends in
silence.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soxr

from pipeline.prepare.stage import prepare_corpus
from schemas.quality import MEASURE_COLUMNS, QUALITY_SCHEMA
from schemas.shard_sample import validate_sample_metadata
from testing.synth import synth_song, write_audio
from tests.pipeline.helpers import read_samples, shard_files, small_config

pytestmark = pytest.mark.integration

SECONDS = 20.0
RATE = 44_100


def _ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *arguments], check=True)


def _make_catalog(root: Path) -> None:
    for artist in ("Ann", "Bob", "Cat", "Dan", "Eve"):
        (root / artist).mkdir(parents=True)
    write_audio(str(root / "Ann/orig.wav"), synth_song(SECONDS, RATE, 2, 1), RATE, "PCM_16")
    _ffmpeg("-i", str(root / "Ann/orig.wav"), "-b:a", "128k", str(root / "Ann/orig copy.mp3"))
    _ffmpeg("-ss", "3", "-i", str(root / "Ann/orig.wav"), "-ar", "32000",
            str(root / "Bob/trimmed.flac"))  # fmt: skip
    write_audio(str(root / "Cat/other.flac"), synth_song(SECONDS, 48_000, 2, 2), 48_000, "PCM_16")
    write_audio(str(root / "Cat/silent.wav"), np.zeros((int(SECONDS * RATE), 2), np.float32),
                RATE, "PCM_16")  # fmt: skip
    loud = np.clip(synth_song(SECONDS, RATE, 2, 3, peak=2.5), -1.0, 1.0)
    write_audio(str(root / "Dan/clipped.wav"), loud, RATE, "PCM_16")
    narrow = soxr.resample(synth_song(SECONDS, 22_050, 2, 4), 22_050, 48_000, quality="VHQ")
    write_audio(str(root / "Dan/upsampled.wav"), narrow, 48_000, "PCM_16")
    mono = synth_song(SECONDS, RATE, 1, 5)
    write_audio(str(root / "Eve/mono.wav"), np.repeat(mono, 2, axis=1), RATE, "PCM_16")
    # At 48 kHz, so no resampler rings into the silence: its last two segments are zeros.
    ending = synth_song(SECONDS, 48_000, 2, 6)
    ending[10 * 48_000 :] = 0.0
    write_audio(str(root / "Eve/half silent.wav"), ending, 48_000, "PCM_16")


def _config(scratch: str, **kwargs):
    return small_config(scratch, segment_seconds=5.0, min_tail_seconds=1.0, songs_per_unit=4,
                        **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality-catalog")
    _make_catalog(root)
    return root


@pytest.fixture(scope="module")
def strict_run(catalog, tmp_path_factory, ray_local):
    from pipeline.quality.filters.config import FilterConfig

    output = tmp_path_factory.mktemp("strict") / "out"
    filters = FilterConfig(max_clipping=0.01, min_bandwidth_hz=15_000,
                           max_stereo_correlation=0.999)  # fmt: skip
    config = _config(str(tmp_path_factory.mktemp("scratch")), filters=filters,
                     dedupe="keep-best")  # fmt: skip
    summary = prepare_corpus(str(catalog), str(output), config)
    return output, config, summary


@pytest.fixture(scope="module")
def report_run(catalog, tmp_path_factory, ray_local):
    output = tmp_path_factory.mktemp("report") / "out"
    config = _config(str(tmp_path_factory.mktemp("scratch")))
    summary = prepare_corpus(str(catalog), str(output), config)
    return output, config, summary


def _quality(output: Path):
    table = pq.read_table(output / "quality.parquet")
    assert table.schema.equals(QUALITY_SCHEMA, check_metadata=False)
    return table.to_pylist()


def _song_rows(output: Path) -> dict[str, dict]:
    return {Path(r["source"]).name: r for r in _quality(output) if r["level"] == "song"}


def test_every_planted_defect_is_dropped_with_its_filter_and_value(strict_run):
    output, _, summary = strict_run
    rejects = pq.read_table(output / "rejects.parquet").to_pylist()
    by_file: dict[str, list[dict]] = {}
    for row in rejects:
        by_file.setdefault(Path(row["path"]).name, []).append(row)
    assert by_file["orig copy.mp3"][0]["rule"] == "near_duplicate"
    assert by_file["trimmed.flac"][0]["rule"] == "near_duplicate"
    assert "near-duplicate of" in by_file["trimmed.flac"][0]["reason"]
    assert by_file["clipped.wav"][0]["rule"] == "max_clipping"
    assert by_file["clipped.wav"][0]["value"] > 0.01
    assert by_file["upsampled.wav"][0]["rule"] == "min_bandwidth"
    assert 10_000 < by_file["upsampled.wav"][0]["value"] < 12_000
    assert by_file["mono.wav"][0]["rule"] == "max_stereo_correlation"
    assert by_file["mono.wav"][0]["value"] == pytest.approx(1.0, abs=1e-6)
    # Digital silence: every segment of the silent song, the two last of the other.
    silent = by_file["silent.wav"]
    assert {r["rule"] for r in silent} == {"digital_silence"}
    assert sorted(r["segment_index"] for r in silent) == [0, 1, 2, 3]
    ending = by_file["half silent.wav"]
    assert sorted(r["segment_index"] for r in ending) == [2, 3]
    assert {"orig.wav", "other.flac"}.isdisjoint(by_file)
    assert summary.drops == {
        "digital_silence": 6, "max_clipping": 1, "max_stereo_correlation": 1,
        "min_bandwidth": 1, "near_duplicate": 2,
    }  # fmt: skip
    # The shards hold exactly the kept songs and segments, measures with each.
    samples = read_samples(shard_files(str(output)))
    assert Counter(Path(s.meta["source"]).name for s in samples) == {
        "orig.wav": 4, "other.flac": 4, "half silent.wav": 2,
    }  # fmt: skip
    for sample in samples:
        validate_sample_metadata(sample.meta)
        assert sample.meta["schema_version"] == 3
        assert sample.meta["quality"]["digital_silence"] < 1.0
        assert sample.meta["song_segments"] == (2 if "half" in sample.meta["source"] else 4)


def test_measures_in_quality_table_match_the_audio(report_run):
    output, _, summary = report_run
    songs = _song_rows(output)
    assert songs["clipped.wav"]["clipping"] > 0.01
    assert songs["orig.wav"]["clipping"] == 0.0
    assert songs["upsampled.wav"]["bandwidth_hz"] == pytest.approx(11_025, abs=600)
    assert songs["orig.wav"]["bandwidth_hz"] > 19_000
    assert songs["orig copy.mp3"]["bandwidth_hz"] < songs["orig.wav"]["bandwidth_hz"]
    assert songs["mono.wav"]["stereo_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert songs["other.flac"]["stereo_correlation"] < 0.999
    assert songs["silent.wav"]["kept"] is False
    assert songs["silent.wav"]["loudness_lufs"] is None
    assert songs["half silent.wav"]["kept"] and songs["half silent.wav"]["kept_seconds"] == 10.0
    # A song's loudness against pyloudnorm over the same 48 kHz audio, read back from shards.
    import pyloudnorm

    samples = [s for s in read_samples(shard_files(str(output)))
               if s.meta["source"].endswith("other.flac")]  # fmt: skip
    audio = np.concatenate([s.audio() for s in sorted(samples, key=lambda s: s.meta["start_s"])])
    reference = pyloudnorm.Meter(48_000).integrated_loudness(audio.astype(np.float64))
    assert songs["other.flac"]["loudness_lufs"] == pytest.approx(reference, abs=0.2)
    assert summary.drops == {"digital_silence": 6}


def test_near_duplicates_are_grouped_and_kept_in_one_split(report_run, strict_run):
    output, _, summary = report_run
    groups = pq.read_table(output / "duplicates.parquet").to_pylist()
    members = {Path(r["source"]).name: r for r in groups}
    assert set(members) == {"orig.wav", "orig copy.mp3", "trimmed.flac"}
    assert len({r["group"] for r in groups}) == 1 and summary.duplicate_groups == 1
    assert members["trimmed.flac"]["offset_s"] == pytest.approx(3.0, abs=0.3)
    songs = _song_rows(output)
    # Different artists (Ann, Bob), one group: one split.
    assert len({songs[name]["split"] for name in members}) == 1
    assert {songs[name]["duplicate_group"] for name in members} == {members["orig.wav"]["group"]}
    strict_groups = pq.read_table(strict_run[0] / "duplicates.parquet").to_pylist()
    assert {Path(r["source"]).name for r in strict_groups if r["kept"]} == {"orig.wav"}


def test_no_artist_lands_in_two_splits_and_the_summary_counts_them(report_run):
    output, _, summary = report_run
    rows = [r for r in _quality(output) if r["level"] == "song" and r["kept"]]
    splits_per_artist: dict[str, set[str]] = {}
    for row in rows:
        splits_per_artist.setdefault(row["artist"], set()).add(row["split"])
    grouped = {"Ann", "Bob"}  # Joined by their duplicate group.
    assert all(len(s) == 1 for a, s in splits_per_artist.items() if a not in grouped)
    assert set(summary.splits) == {"train", "validation", "test"}
    assert sum(s["songs"] for s in summary.splits.values()) == len(rows)
    assert sum(s["segments"] for s in summary.splits.values()) == summary.segments
    card = json.loads((output / "card.json").read_text())
    assert card["splits"]["train"]["songs"] == summary.splits["train"]["songs"]
    assert card["duplicate_groups"]["count"] == 1
    assert "<svg" in (output / "card.html").read_text()


def test_reruns_give_identical_measures_splits_and_groups(catalog, report_run, strict_run):
    output, config, _ = report_run
    names = ("quality.parquet", "duplicates.parquet", "rejects.parquet")
    before = {n: pq.read_table(output / n) for n in names}
    card = (output / "card.json").read_text()
    resumed = prepare_corpus(str(catalog), str(output), config)
    assert resumed.units_already_done == resumed.units and resumed.files_surveyed == 0
    assert {n: pq.read_table(output / n) for n in names} == before
    assert (output / "card.json").read_text() == card
    # The strict run is a second run from scratch over the same files: the same measures,
    # splits and groups (only what was kept differs; its dropped copies were never cut).
    same = ["level", "song_id", "key", "split", "duplicate_group", *MEASURE_COLUMNS]

    def rows(table) -> list[dict]:
        return sorted(table.select(same).to_pylist(), key=lambda r: (r["song_id"], r["key"] or ""))

    strict = rows(pq.read_table(strict_run[0] / "quality.parquet"))
    cut = {row["song_id"] for row in strict}
    assert len(cut) == 7
    assert strict == [row for row in rows(before["quality.parquet"]) if row["song_id"] in cut]
    groups = ["group", "song_id", "bit_error_rate", "offset_s"]
    assert pq.read_table(strict_run[0] / "duplicates.parquet").select(groups) == before[
        "duplicates.parquet"
    ].select(groups)
