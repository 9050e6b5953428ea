"""Several codecs in one tokenize run, without Ray: schema v3, the chain, the command line."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from audio_codecs.base import CodecInfo, EncodedSegment
from core.errors import UnsupportedVersion, UsageError
from jobs import tokenize as tokenize_job
from pipeline.shard_reader import SAMPLE, SHARD_END, ShardSampleRow
from pipeline.tokenize.actor import chain_rows, chain_step
from pipeline.tokenize.encoded import encoded_segment
from pipeline.tokenize.parts import tokens_table
from pipeline.tokenize.rows import ChainRow
from schemas.tokens import (
    TOKENS_SCHEMA,
    check_tokens_schema_version,
    lyric_frames,
    validate_tokens_table,
)

STEREO = CodecInfo(
    "two", "tiny", "{}", "random-weights-seed-0", 44_100, 86.13, 2, 3, 1024, "compress"
)


def audio_rows() -> list[ChainRow]:
    pcm = np.zeros((10, 2), np.int16).tobytes()
    samples = [
        ShardSampleRow(SAMPLE, "a.tar", "k0", pcm=pcm, n_samples=10, duration_s=1.0),
        ShardSampleRow(SAMPLE, "a.tar", "k1", error="bad flac"),
        ShardSampleRow(SHARD_END, "a.tar", shard_rows=2),
        ShardSampleRow(SAMPLE, "b.tar", "k2", pcm=pcm, n_samples=10, duration_s=1.0),
        ShardSampleRow(SHARD_END, "b.tar", shard_rows=1),
    ]
    return chain_rows(ShardSampleRow.to_table(samples))


def fake_encoder(value: int):
    def encode(rows: list[ChainRow]) -> list[EncodedSegment]:
        assert all(r.is_audio and r.usable for r in rows)
        codes = np.full((6, 4), value, np.uint16)
        return [EncodedSegment(codes, np.ones(2, np.float32), (2, 2), -20.0) for _ in rows]

    return encode


def test_the_chain_gives_every_codec_every_row_once_and_skips_what_a_codec_has():
    first = chain_step(audio_rows(), fake_encoder(1), STEREO, "test")
    other = CodecInfo("other", "tiny", "{}", "w", 48_000, 25.0, 1, 6, 1024)
    # The second codec already has shard a.tar (its part is done): it only runs b.tar.
    table = ChainRow.to_table(first)
    rows = chain_step(chain_rows(table), fake_encoder(2), other, "test",
                      skip_shards={"a.tar"}, keep_audio=False)  # fmt: skip
    assert not any(r.is_audio for r in rows)
    two = [r for r in rows if r.tokenizer == "two"]
    assert [(r.kind, r.key) for r in two] == [
        (SAMPLE, "k0"), (SAMPLE, "k1"), (SHARD_END, ""), (SAMPLE, "k2"), (SHARD_END, ""),
    ]  # fmt: skip
    assert [(r.shard, r.key) for r in rows if r.tokenizer == "other"] == [
        ("b.tar", "k2"), ("b.tar", ""),
    ]  # fmt: skip
    k0 = two[0]
    assert k0.pcm == b"" and k0.channels == 2 and k0.n_codebooks == 3 and k0.n_frames == 4
    assert (k0.decode_codes() == 1).all() and k0.chunk_frames == [2, 2] and k0.input_db == -20.0
    assert two[1].codes == b"" and math.isnan(two[1].input_db)


def test_the_schema_round_trips_codes_and_side_data_through_encoded_segment():
    rows = [r for r in chain_step(audio_rows(), fake_encoder(7), STEREO, "test") if not r.is_audio]
    good = [r for r in rows if r.usable]
    table = tokens_table(good)
    validate_tokens_table(table)
    assert table.schema.metadata[b"schema_version"] == b"5"
    assert b'"tokenizer": "two"' in table.schema.metadata[b"codec"]
    row = table.to_pylist()[0]
    assert (row["channels"], row["n_codebooks"], row["codec_mode"]) == (2, 3, "compress")
    assert row["sample_rate"] == 44_100 and row["encoder_layer"] == -1
    assert row["bitrate_kbps"] == pytest.approx(2 * 3 * 10 * 86.13 / 1000, rel=1e-6)
    assert len(row["codes"]) == 6 and all(len(c) == 4 for c in row["codes"])
    encoded = encoded_segment(row)
    assert encoded.codes.shape == (6, 4) and encoded.codes.dtype == np.uint16
    assert (encoded.codes == 7).all() and encoded.chunk_frames == (2, 2)
    assert encoded.scales.dtype == np.float32 and list(encoded.scales) == [1.0, 1.0]
    assert encoded.input_db == -20.0
    plain = encoded_segment({"codes": [[1, 2]], "n_codebooks": 1, "n_frames": 2, "channels": 1})
    assert plain.scales.size == 0 and plain.chunk_frames == () and math.isnan(plain.input_db)
    # Codes of one stream where the row says two: the shape check refuses the table.
    field = TOKENS_SCHEMA.field("channels")
    wrong = table.set_column(
        TOKENS_SCHEMA.get_field_index("channels"), field, pa.array([1, 1], pa.int8())
    )
    with pytest.raises(ValueError, match="channels \\* n_codebooks"):
        validate_tokens_table(wrong)


def test_readers_refuse_token_tables_of_version_2_and_read_version_3():
    old = TOKENS_SCHEMA.with_metadata({**TOKENS_SCHEMA.metadata, b"schema_version": b"2"})
    with pytest.raises(UnsupportedVersion, match="version '2'"):
        check_tokens_schema_version(old, "old.parquet")
    # Version 3 lyric lines have no frames; readers still take the table.
    three = TOKENS_SCHEMA.with_metadata({**TOKENS_SCHEMA.metadata, b"schema_version": b"3"})
    check_tokens_schema_version(three, "three.parquet")


def test_each_lyric_line_is_placed_on_the_codecs_frames():
    lines = [{"t": 0.0, "text": "a"}, {"t": 1.0, "text": "b"}, {"t": 1.01, "text": "c"},
             {"t": 30.5, "text": "d"}]  # fmt: skip
    placed = lyric_frames(lines, frame_rate=25.0, n_frames=896)
    assert [(p["first_frame"], p["last_frame"]) for p in placed] == [
        (0, 24), (25, 25), (25, 761), (762, 895),
    ]  # fmt: skip
    # Two lines in one frame share it; times past the codes are clipped to the last frame.
    assert lyric_frames([{"t": 40.0, "text": "x"}], 25.0, 896)[0]["first_frame"] == 895
    assert lyric_frames([{"t": 1.0, "text": "x"}], 150.0, 5376)[0]["first_frame"] == 150


def specs(*argv: str):
    args = tokenize_job.build_parser().parse_args(["--shards", "s", "--output", "o", *argv])
    return tokenize_job.codec_specs(args)


def test_the_command_line_builds_one_spec_per_codec(monkeypatch):
    from audio_codecs import registry

    monkeypatch.setitem(registry.BUILT_IN, "second", "audio_codecs.mucodec")
    (only,) = specs("--config", "tiny")
    assert (only.codec, only.preset, only.checkpoint, only.options) == ("mucodec", "tiny", None, ())
    (only,) = specs("--checkpoint", "/ckpt/a=b")  # A bare path is MuCodec's, "=" and all.
    assert only.checkpoint == "/ckpt/a=b" and only.preset is None
    mu, second = specs(
        "--codec", "mucodec,second", "--config", "tiny", "--checkpoint", "second=/w",
        "--codec-option", "mucodec:mode=fast", "--codec-option", "mucodec:x=1",
        "--seed", "3", "--dtype", "bfloat16",
    )  # fmt: skip
    assert (mu.preset, mu.options, mu.seed, mu.precision) == (
        "tiny", (("mode", "fast"), ("x", "1")), 3, "bfloat16",
    )  # fmt: skip
    assert (second.codec, second.checkpoint, second.preset) == ("second", "/w", None)
    mu, second = specs(
        "--codec", "mucodec,second", "--config", "second=tiny", "--checkpoint", "/mu"
    )  # fmt: skip
    assert (mu.checkpoint, mu.preset, second.preset) == ("/mu", None, "tiny")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--codec", "mucodec,nope", "--config", "tiny"], "unknown codec 'nope'"),
        (["--config", "huge"], "no preset 'huge'"),
        (["--config", "dac=tiny"], "codec 'dac' is not in --codec"),
        (["--codec-option", "encodec:bandwidth=6", "--config", "tiny"], "not in --codec"),
        (["--codec-option", "mucodec-mode", "--config", "tiny"], "CODEC:NAME=VALUE"),
        ([], "give --checkpoint mucodec=PATH or --config"),
        (["--config", "mucodec=tiny", "--checkpoint", "mucodec=/w"], "not both"),
        (["--codec", "mucodec,mucodec", "--config", "tiny"], "each codec once"),
    ],
)
def test_bad_codec_settings_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        specs(*argv)


def test_the_job_refuses_an_unknown_codec_before_ray_starts(capsys):
    with pytest.raises(SystemExit) as stopped:
        from jobs.cli import run_job

        raise SystemExit(
            run_job(
                tokenize_job.main,
                ["--shards", "/nowhere", "--output", "/o", "--codec", "opus", "--config", "tiny"],
            )
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown codec 'opus'" in err[0]
