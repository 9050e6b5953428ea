"""The `python -m jobs.prepare` command line: help, argument mapping, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.errors import InvalidSetting
from jobs import prepare as prepare_job
from jobs.cli import run_job
from pipeline.prepare.segment import SegmentConfig
from pipeline.prepare.shards import ShardLimits
from pipeline.quality.filters.config import FilterConfig
from pipeline.quality.splits import SplitConfig
from testing.synth import synth_song, write_audio


def test_help_explains_the_options():
    completed = subprocess.run(
        [sys.executable, "-m", "jobs.prepare", "--help"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    for option in (
        "--input", "--output", "--segment-seconds", "--tail", "--min-tail-seconds",
        "--shard-max-samples", "--shard-max-bytes", "--songs-per-unit", "--s3-endpoint-url",
        "--storage-option", "--force", "Rerunning with the same --output",
    ):  # fmt: skip
        assert option in completed.stdout


def test_arguments_map_onto_the_prepare_config():
    args = prepare_job.build_parser().parse_args(
        [
            "--input", "in", "--output", "out", "--segment-seconds", "10", "--tail", "pad",
            "--min-tail-seconds", "2.5", "--shard-max-samples", "7", "--shard-max-bytes", "5e6",
            "--songs-per-unit", "3", "--flac-level", "8", "--scratch-dir", "/tmp/s",
            "--s3-endpoint-url", "http://127.0.0.1:9", "--storage-option", "key=k",
            "--storage-option", "secret=a=b", "--allow-root", "/mnt/music",
            "--allow-root", "s3://bucket/audio", "--max-lyrics-bytes", "4096",
        ]
    )  # fmt: skip
    config = prepare_job.config_from_args(args)
    assert config.segment == SegmentConfig(10.0, "pad", 2.5)
    assert config.shard_limits == ShardLimits(max_samples=7, max_bytes=5_000_000)
    assert (config.songs_per_unit, config.flac_level, config.scratch_dir) == (3, 8, "/tmp/s")
    assert config.storage.endpoint_url == "http://127.0.0.1:9"
    assert config.storage.extra == {"key": "k", "secret": "a=b"}
    assert config.allowed_roots == ("/mnt/music", "s3://bucket/audio")
    assert config.max_lyrics_bytes == 4096
    defaults = prepare_job.config_from_args(
        prepare_job.build_parser().parse_args(["--input", "i", "--output", "o"])
    )
    assert defaults.segment == SegmentConfig()  # 35.84 s, keep tails of 10 s or more.
    assert (defaults.allowed_roots, defaults.max_lyrics_bytes) == ((), 1 << 20)


def test_quality_flags_and_file_map_onto_filters_splits_and_dedupe(tmp_path):
    (tmp_path / "filters.toml").write_text("min_bandwidth_hz = 16000\nmax_clipping = 0.01\n")
    args = prepare_job.build_parser().parse_args(
        [
            "--input", "i", "--output", "o", "--filter-config", str(tmp_path / "filters.toml"),
            "--min-bandwidth-hz", "17000", "--max-stereo-correlation", "0.999",
            "--keep-digital-silence", "--dedupe", "keep-best", "--dedupe-against", "old",
            "--split", "0.8,0.1,0.1", "--split-by", "album",
        ]
    )  # fmt: skip
    config = prepare_job.config_from_args(args)
    # The flag beats the file; the file's other keys stay.
    assert config.filters == FilterConfig(
        drop_digital_silence=False, min_bandwidth_hz=17000, max_clipping=0.01,
        max_stereo_correlation=0.999,
    )  # fmt: skip
    assert config.splits == SplitConfig(0.8, 0.1, 0.1, "album")
    assert (config.dedupe, config.dedupe_against) == ("keep-best", "old")
    defaults = prepare_job.config_from_args(
        prepare_job.build_parser().parse_args(["--input", "i", "--output", "o"])
    )
    assert defaults.filters == FilterConfig() and defaults.dedupe == "report"
    with pytest.raises(InvalidSetting, match="three fractions"):
        prepare_job.config_from_args(
            prepare_job.build_parser().parse_args(
                ["--input", "i", "--output", "o", "--split", "0.9,0.1"]
            )
        )


@pytest.mark.parametrize(
    "argv",
    [["--output", "o"], ["--input", "i", "--output", "o", "--tail", "trim"],
     ["--input", "i", "--output", "o", "--flac-level", "9"]],
)  # fmt: skip
def test_bad_arguments_exit_with_one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_job.build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    printed = capsys.readouterr().err
    assert printed.startswith("error: ") and len(printed.strip().splitlines()) == 1


@pytest.mark.integration
def test_exit_codes_for_success_missing_input_and_a_claimed_output(ray_local, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_audio(str(corpus / "a.flac"), synth_song(1.5, 48_000, 2, 0), 48_000, "PCM_16")
    other = tmp_path / "other"
    write_audio(str(other / "b.flac"), synth_song(1.0, 48_000, 2, 1), 48_000, "PCM_16")
    output = tmp_path / "out"
    common = ["--output", str(output), "--segment-seconds", "1", "--min-tail-seconds", "0.5"]

    assert prepare_job.main(["--input", str(corpus), *common]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["stage", "status", "result"]
    assert table[1].split()[:3] == ["prepare", "ok", "1/1"] and str(output) in table[1]
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["songs_ok"], summary["segments"]) == (1, 2)

    missing = ["--input", str(tmp_path / "nowhere"), *common, "--force"]
    assert run_job(prepare_job.main, missing) == 2
    assert "nowhere" in capsys.readouterr().err

    assert prepare_job.main(["--input", str(other), *common]) == 2
    assert "--force" in capsys.readouterr().err
    assert prepare_job.main(["--input", str(other), *common, "--force"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["songs_in"], summary["segments"]) == (1, 1)
