"""Token parts, the token schema and codebook statistics, without Ray."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_codecs.base import CodecInfo
from pipeline.claims import Superseded, claim_output
from pipeline.io import StorageOptions
from pipeline.shard_reader import (
    SAMPLE,
    SHARD_END,
    SHARD_FAILED,
    ShardRef,
    ShardSampleRow,
    ShardTask,
    read_shard_rows,
    shard_rows,
)
from pipeline.tokenize.codebook_stats import CodebookHistogram, codebook_report, plot_codebook_usage
from pipeline.tokenize.parts import load_part_marker, plan_parts, tokens_table
from pipeline.tokenize.rows import TokenizedRow
from schemas.tokens import (
    TOKENS_SCHEMA,
    check_tokens_schema_version,
    validate_tokens_table,
)
from tests.pipeline.helpers import TEST_RUN_FILE, part_assembler

INFO = CodecInfo(
    codec="mucodec",
    preset="",
    config="{}",
    weights_sha256="random-weights-seed-0",
    sample_rate=48_000,
    frame_rate=25.0,
    channels=1,
    num_codebooks=1,
    codebook_size=1024,
    encoder_layer=2,
)


def token_row(
    shard: str, key: str, codes: np.ndarray | None = None, error: str = ""
) -> TokenizedRow:
    """A sample row as the tokenizer actors return it."""
    codes = np.zeros((1, 0), np.uint16) if codes is None else codes.astype(np.uint16)
    sample = ShardSampleRow(
        SAMPLE, shard, key, error,
        song_id=key.rsplit("_", 1)[0], segment_index=int(key.rsplit("_", 1)[1] or 0),
        duration_s=2.0, song_peak=0.5, lyrics_aligned=True,
        lyrics=json.dumps([{"t": 0.5, "text": "hi"}]), lyrics_text="hi", source="/x.wav",
        source_sha256="0" * 64,
    )  # fmt: skip
    return TokenizedRow.of(sample, INFO, "test", codes)


def end_row(shard: str, count: int) -> TokenizedRow:
    """The SHARD_END row of `shard`, announcing `count` rows."""
    return TokenizedRow.of(ShardSampleRow(SHARD_END, shard, shard_rows=count), INFO, "test")


def test_plan_parts_groups_sorted_shards_deterministically():
    shards = [ShardRef(f"{i:06d}-0000.tar", f"/s/{i}", 10 + i) for i in (3, 0, 2, 1, 4)]
    parts = plan_parts(shards, 2)
    assert [[s.name for s in p.shards] for p in parts] == [
        ["000000-0000.tar", "000001-0000.tar"],
        ["000002-0000.tar", "000003-0000.tar"],
        ["000004-0000.tar"],
    ]
    assert parts[0].fingerprint == plan_parts(list(reversed(shards)), 2)[0].fingerprint
    changed = [ShardRef(s.name, s.url, s.size + 1) for s in shards]
    assert plan_parts(changed, 2)[0].fingerprint != parts[0].fingerprint


def test_assembler_writes_a_part_only_when_every_row_of_every_shard_arrived(tmp_path):
    fs = fsspec.filesystem("file")
    shards = [ShardRef("a.tar", "/a", 1), ShardRef("b.tar", "/b", 1)]
    (part,) = plan_parts(shards, 2)
    assembler = part_assembler(str(tmp_path), [part], row_group_size=2)
    rng = np.random.default_rng(0)
    rows = [token_row("a.tar", f"s1_{i:05d}", rng.integers(0, 1024, (1, 50))) for i in range(3)]
    rows.append(token_row("b.tar", "s2_00000", rng.integers(0, 1024, (1, 20))))
    # Out of order: b's end marker first, a's end marker before a's last row.
    assert assembler.add(end_row("b.tar", 1)) is None
    assert assembler.add(rows[3]) is None
    assert assembler.add(rows[1]) is None
    assert assembler.add(end_row("a.tar", 3)) is None
    assert assembler.add(rows[0]) is None
    result = assembler.add(rows[2])
    assert result is not None and result.rows == 4 and assembler.unfinished == []

    table = pq.read_table(tmp_path / "tokens" / part.name)
    validate_tokens_table(table)
    assert table.column("key").to_pylist() == sorted(r.key for r in rows)
    first = np.array(table.column("codes")[0].as_py(), dtype=np.uint16)
    expected = rows[0].decode_codes()
    np.testing.assert_array_equal(first, expected)
    assert pq.ParquetFile(tmp_path / "tokens" / part.name).metadata.num_row_groups == 2
    assert load_part_marker(fs, str(tmp_path), part).rows == 4


def test_assembler_turns_error_rows_into_rejects(tmp_path):
    (part,) = plan_parts([ShardRef("a.tar", "/a", 1)], 1)
    assembler = part_assembler(str(tmp_path), [part])
    assembler.add(token_row("a.tar", "s1_00000", np.ones((1, 5))))
    assembler.add(token_row("a.tar", "s1_00001", error="sample s1_00001 in a.tar: bad flac"))
    result = assembler.add(end_row("a.tar", 2))
    assert result.rows == 1
    assert [(r.path, r.stage) for r in result.rejects] == [("a.tar#s1_00001", "tokenize")]
    assert "bad flac" in result.rejects[0].reason


def test_a_part_of_a_replaced_run_is_not_written(tmp_path):
    parts = plan_parts([ShardRef("a.tar", "/a", 1), ShardRef("b.tar", "/b", 1)], 1)
    assembler = part_assembler(str(tmp_path), parts)
    assert assembler.add(end_row("a.tar", 0)) is not None  # While the run holds the output.
    claim_output(fsspec.filesystem("file"), str(tmp_path), TEST_RUN_FILE,
                 {"claimed by": "another run"}, ("tokens", "_tokenize"), True, str)  # fmt: skip
    with pytest.raises(Superseded):
        assembler.add(end_row("b.tar", 0))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / TEST_RUN_FILE]  # Neither part, marker nor partial file.


def test_tokens_table_has_nested_uint16_codes_with_explicit_shape():
    rows = [token_row("a.tar", "s_00000", np.arange(8).reshape(2, 4))]
    table = tokens_table(rows)
    assert table.schema.field("codes").type == pa.list_(pa.list_(pa.uint16()))
    assert table.column("codes").to_pylist() == [[[0, 1, 2, 3], [4, 5, 6, 7]]]
    assert table.column("n_codebooks").to_pylist() == [2]
    assert table.column("n_frames").to_pylist() == [4]


def test_validation_refuses_codes_that_contradict_their_shape():
    table = tokens_table([token_row("a.tar", "s_00000", np.arange(8).reshape(2, 4))])
    index = table.schema.get_field_index("n_frames")
    wrong = table.set_column(index, table.schema.field(index), pa.array([5], pa.int32()))
    with pytest.raises(ValueError, match="s_00000"):
        validate_tokens_table(wrong)
    with pytest.raises(ValueError, match="schema mismatch"):
        validate_tokens_table(table.drop_columns(["lyrics"]))


def test_readers_refuse_unknown_schema_versions():
    check_tokens_schema_version(TOKENS_SCHEMA)
    future = TOKENS_SCHEMA.with_metadata({"schema_version": "99"})
    with pytest.raises(ValueError, match="99"):
        check_tokens_schema_version(future)


def test_codebook_report_usage_and_efficiency():
    histogram = CodebookHistogram.empty(2, 8)
    histogram.add(np.array([np.arange(8).repeat(4), np.zeros(32, int)]))  # uniform / one code
    report = codebook_report(histogram, token_rate=25.0)
    uniform, collapsed = report["codebooks"]
    assert uniform["usage"] == 1.0 and uniform["efficiency"] == pytest.approx(1.0)
    assert collapsed["usage"] == 1 / 8 and collapsed["efficiency"] == 0.0
    assert report["nominal_bitrate_bps"] == 25.0 * 3 * 2
    assert report["entropy_bitrate_bps"] == pytest.approx(25.0 * 3)
    restored = CodebookHistogram.from_dict(json.loads(json.dumps(histogram.to_dict())))
    np.testing.assert_array_equal(restored.counts, histogram.counts)
    assert plot_codebook_usage(histogram, report).startswith(b"\x89PNG")


def test_a_shard_that_failed_to_read_leaves_its_part_unwritten_for_a_rerun(tmp_path):
    (failed,) = shard_rows(ShardTask("a.tar", str(tmp_path / "gone.tar")), StorageOptions())
    # The failure is its own kind of row, not a count of -1.
    assert failed.kind == SHARD_FAILED and failed.ends_shard and not failed.usable
    assert failed.shard_rows == 0 and "FileNotFoundError" in failed.error

    fs = fsspec.filesystem("file")
    parts = plan_parts([ShardRef("a.tar", "/a", 1), ShardRef("b.tar", "/b", 1)], 1)
    assembler = part_assembler(str(tmp_path), parts)
    # As the driver sees it: through the actor, which passes the failure on unchanged.
    assert assembler.add(TokenizedRow.of(failed, INFO, "test")) is None
    assert assembler.add(token_row("a.tar", "s1_00000", np.ones((1, 5)))) is None  # Late row.
    assert assembler.add(end_row("b.tar", 0)) is not None
    assert assembler.unfinished == [0] and "gone.tar" in assembler.failures[0]
    assert not (tmp_path / "tokens" / parts[0].name).exists()
    assert load_part_marker(fs, str(tmp_path), parts[0]) is None


def test_reader_rows_round_trip_through_the_ray_edge(tmp_path):
    """The flat_map edge yields dicts; an Arrow batch of them reads back as equal rows."""
    task = ShardTask("a.tar", str(tmp_path / "gone.tar"))
    (row,) = read_shard_rows(task.to_dict(), StorageOptions())
    assert ShardSampleRow.from_dict(row).kind == SHARD_FAILED
    rows = [
        ShardSampleRow(SAMPLE, "a.tar", "s_00000", pcm=b"\x01\x00" * 4, n_samples=2, gain=0.5),
        ShardSampleRow(SAMPLE, "a.tar", "s_00001", error="bad flac"),
        ShardSampleRow(SHARD_END, "a.tar", shard_rows=2),
    ]
    table = ShardSampleRow.to_table(rows)
    assert table.schema == ShardSampleRow.arrow_schema()
    assert ShardSampleRow.from_table(table) == rows
    tokenized = [token_row("a.tar", "s_00000", np.arange(6).reshape(2, 3)), end_row("a.tar", 1)]
    back = TokenizedRow.from_table(TokenizedRow.to_table(tokenized))
    assert all(math.isnan(r.input_db) for r in back)  # No DAC loudness: NaN, which != NaN.
    assert [replace(r, input_db=0.0) for r in back] == [replace(r, input_db=0.0) for r in tokenized]
    np.testing.assert_array_equal(back[0].decode_codes(), np.arange(6).reshape(2, 3))
    assert TokenizedRow.to_table([]).schema == TokenizedRow.arrow_schema()
    with pytest.raises(TypeError):  # A column the row type does not define is an error.
        ShardSampleRow.from_dict({**row, "n_samples_typo": 1})
