"""Exports read back with the real Lhotse and Hugging Face `datasets`, against the tables."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from audio_codecs.base import CodecSpec
from core.errors import InvalidSetting, UsageError
from jobs import export as export_job
from pipeline.export import stage as export_stage
from pipeline.export.stage import export_tokens
from pipeline.io import StorageOptions
from pipeline.shard_reader import find_shards, iter_shard_samples
from pipeline.tokenize.parts import token_files
from pipeline.tokenize.stage import TokenizeConfig, tokenize_shards
from tests.pipeline.conftest import TINY_MUCODEC

SIMULATED_DAC = CodecSpec("simulated", preset="dac")  # Two code streams of 9 codebooks.


@pytest.fixture(scope="module")
def two_codecs(prepared_corpus, tmp_path_factory) -> dict[str, str]:
    """`prepared_corpus` tokenized by tiny MuCodec and a DAC-shaped codec, in 2 parts."""
    root = tmp_path_factory.mktemp("export-tokens")
    config = TokenizeConfig(codecs=(TINY_MUCODEC, SIMULATED_DAC), batch_size=4, shards_per_part=2)
    tokenize_shards(prepared_corpus, str(root), config)
    return {codec: str(root / codec) for codec in ("mucodec", "simulated")}


def table_rows(url: str) -> dict[str, dict]:
    rows = [row for f in token_files(url) for row in pq.read_table(f).to_pylist()]
    return {row["key"]: row for row in rows}


def expected(tables: dict[str, dict[str, dict]], key: str, codec: str) -> np.ndarray:
    row = tables[codec][key]
    return np.asarray(row["codes"], dtype=np.uint16).T  # [frames, channels * codebooks]


def test_lhotse_reads_every_cut_code_and_lyric_line_of_the_tables(two_codecs, tmp_path):
    from lhotse import CutSet

    summary = export_tokens(two_codecs, str(tmp_path), "lhotse-shar")
    tables = {codec: table_rows(url) for codec, url in two_codecs.items()}
    cuts = list(CutSet.from_shar(in_dir=str(tmp_path / "lhotse-shar")))
    assert sorted(c.id for c in cuts) == sorted(tables["mucodec"]) and summary.parts == 2
    assert summary.samples == len(cuts) and summary.left_out == 0
    with_lyrics = 0
    for cut in cuts:
        row = tables["mucodec"][cut.id]
        assert cut.custom["segment_duration_s"] == pytest.approx(row["duration_s"])
        assert cut.duration >= row["duration_s"]
        assert cut.custom["song_id"] == row["song_id"] and cut.custom["split"] == "train"
        for codec in two_codecs:
            codes = cut.load_custom(f"codes_{codec}")
            assert codes.dtype == np.uint16 and np.array_equal(
                codes, expected(tables, cut.id, codec)
            )
            frame_shift = getattr(cut, f"codes_{codec}").frame_shift
            assert frame_shift == pytest.approx(1 / tables[codec][cut.id]["token_rate"])
        lines = row["lyrics"]
        assert [s.text for s in cut.supervisions] == [line["text"] for line in lines]
        for supervision, line in zip(cut.supervisions, lines, strict=True):
            assert supervision.start == pytest.approx(line["t"])
            first, last = supervision.custom["frames"]["mucodec"]
            assert (first, last) == (line["first_frame"], line["last_frame"])
        with_lyrics += bool(lines)
    assert with_lyrics  # The corpus has one song with timed lyrics.


def test_hf_datasets_reads_every_row_code_and_lyric_line_offline(two_codecs, tmp_path):
    import datasets

    export_tokens(two_codecs, str(tmp_path), "hf-datasets")
    loaded = datasets.load_from_disk(str(tmp_path / "hf-datasets"))
    assert list(loaded) == ["train"]
    train = loaded["train"].with_format("numpy", columns=["codes_mucodec", "codes_simulated"],
                                        output_all_columns=True)  # fmt: skip
    tables = {codec: table_rows(url) for codec, url in two_codecs.items()}
    assert sorted(train["key"]) == sorted(tables["mucodec"])
    feature = loaded["train"].features["codes_simulated"]
    assert feature.dtype == "uint16" and feature.shape == (None, 18)
    for row in train:
        for codec in two_codecs:
            assert np.array_equal(row[f"codes_{codec}"], expected(tables, row["key"], codec))
        lines = tables["mucodec"][row["key"]]["lyrics"]
        assert [line["text"] for line in row["lyrics"]] == [line["text"] for line in lines]
        assert [line["first_frame_mucodec"] for line in row["lyrics"]] == [
            line["first_frame"] for line in lines
        ]
        assert [line["last_frame_simulated"] for line in row["lyrics"]] == [
            line["last_frame"] for line in tables["simulated"][row["key"]]["lyrics"]
        ]


@pytest.mark.parametrize("format_name", ["lhotse-shar", "hf-datasets"])
def test_an_export_killed_after_writing_a_part_reruns_to_the_same_contents(
    two_codecs, tmp_path, monkeypatch, format_name
):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    export_tokens(two_codecs, str(clean), format_name)
    publish = export_stage._publish

    def die_halfway(staging: Path, root: Path) -> None:
        # The part's files land one by one; the process dies before its marker.
        first = min(p for p in staging.rglob("*") if p.is_file())
        (root / first.relative_to(staging)).parent.mkdir(parents=True, exist_ok=True)
        first.replace(root / first.relative_to(staging))
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(export_stage, "_publish", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        export_tokens(two_codecs, str(killed), format_name)
    monkeypatch.setattr(export_stage, "_publish", publish)
    summary = export_tokens(two_codecs, str(killed), format_name)
    assert (summary.parts_run, summary.parts_already_done) == (2, 0)
    again = export_tokens(two_codecs, str(killed), format_name)
    assert (again.parts_run, again.parts_already_done) == (0, 2)
    assert _contents(clean, format_name) == _contents(killed, format_name)


def _contents(root: Path, format_name: str) -> list:
    if format_name == "lhotse-shar":
        from lhotse import CutSet

        cuts = CutSet.from_shar(in_dir=str(root / "lhotse-shar"))
        return sorted(
            (c.id, [s.to_dict() for s in c.supervisions], c.load_custom("codes_mucodec").tobytes(),
             c.load_custom("codes_simulated").tobytes())
            for c in cuts
        )  # fmt: skip
    import datasets

    return sorted(datasets.load_from_disk(str(root / "hf-datasets"))["train"].to_list(),
                  key=lambda row: row["key"])  # fmt: skip


def test_a_format_whose_library_is_missing_is_one_error_line_before_any_work(
    two_codecs, tmp_path, monkeypatch, capsys
):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lhotse" else real(name, *a))  # fmt: skip
    argv = ["--tokens", two_codecs["mucodec"], "--format", "lhotse-shar",
            "--output", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        _run(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --format lhotse-shar needs the 'lhotse' package: "
                   "pip install 'mucodec-pipeline[lhotse]'"]  # fmt: skip
    assert not (tmp_path / "out").exists()


def _run(argv: list[str]) -> None:
    from jobs.cli import run_job

    raise SystemExit(run_job(export_job.main, argv))


def test_the_job_exports_codecs_of_one_tokenize_output_and_prints_its_row(
    two_codecs, tmp_path, capsys
):
    tokens = str(Path(two_codecs["mucodec"]).parent)
    argv = ["--tokens", tokens, "--codec", "mucodec,simulated", "--format", "hf-datasets",
            "--output", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        _run(argv)
    assert exit_.value.code == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table] == [["stage", "status"], ["export", "ok"]]
    assert "of mucodec, simulated as hf-datasets, 2 parts" in table[1]


def test_each_codec_is_named_once():
    parse = export_job.build_parser().parse_args
    args = parse(
        ["--tokens", "/t/a", "--tokens", "/u/a", "--format", "hf-datasets", "--output", "o"]
    )
    with pytest.raises(UsageError, match="each codec once"):
        export_job.tokens_by_codec(args)
    args = parse(
        ["--tokens", "/t/run", "--codec", "a,b", "--format", "hf-datasets", "--output", "o"]
    )
    assert export_job.tokens_by_codec(args) == {"a": "/t/run", "b": "/t/run"}


def test_lhotse_cuts_carry_the_prepared_audio_when_asked(two_codecs, prepared_corpus, tmp_path):
    from lhotse import CutSet

    export_tokens({"mucodec": two_codecs["mucodec"]}, str(tmp_path), "lhotse-shar",
                  audio=prepared_corpus)  # fmt: skip
    stored = {
        key: sf.read(io.BytesIO(members["flac"]), dtype="float32")[0]
        for shard in find_shards(prepared_corpus, StorageOptions())
        for key, members in iter_shard_samples(shard.url, StorageOptions())
    }
    cuts = list(CutSet.from_shar(in_dir=str(tmp_path / "lhotse-shar")))
    assert cuts and all(cut.recording.sampling_rate == 48_000 for cut in cuts)
    for cut in cuts:
        audio = cut.load_audio()  # [channels, samples]
        assert audio.shape == (2, len(stored[cut.id]))
        assert np.allclose(audio.T, stored[cut.id], atol=1e-6)
    with pytest.raises(InvalidSetting, match="does not carry audio"):
        export_tokens(two_codecs, str(tmp_path / "hf"), "hf-datasets", audio=prepared_corpus)
