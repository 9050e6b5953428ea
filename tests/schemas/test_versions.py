"""Every reader of a persisted artifact refuses a version it does not know, naming the file.

Each test writes the artifact as its writer would, with version 999, and reads it back
through the reader the pipeline uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import UnsupportedVersion
from pipeline.audit import read_rejects, token_keys
from pipeline.io import StorageOptions
from pipeline.prepare.stage import PrepareSummary
from pipeline.prepare.unit import UnitResult
from pipeline.shard_reader import ShardRef, find_shards
from pipeline.spotcheck.stage import (
    SpotcheckSummary,
    _read_index,
    read_metrics,
    read_sample_metrics,
)
from pipeline.tokenize.codebook_stats import CodebookHistogram, codebook_report
from pipeline.tokenize.dataset import TokenDataset
from pipeline.tokenize.parts import PartResult, load_part_markers, part_marker_path, plan_parts
from pipeline.tokenize.stage import TokenizeSummary
from schemas.codebook_stats import check_codebook_stats
from schemas.manifest import MANIFEST_VERSION
from schemas.metrics import METRICS_SCHEMA
from schemas.rejects import REJECTS_SCHEMA
from schemas.run import check_summary
from schemas.tokens import TOKENS_SCHEMA

STORAGE = StorageOptions()
FUTURE = 999


def refused(where: str | Path):
    """Expect the clear refusal: the file, the version found and the one supported."""
    return pytest.raises(
        UnsupportedVersion, match=rf"{where}.*version '?{FUTURE}'? is not supported"
    )


def test_find_shards_refuses_a_manifest_of_an_unknown_version(tmp_path):
    (tmp_path / "shards").mkdir()
    manifest = {"version": FUTURE, "complete": True, "shards": [], "samples": 0}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with refused(tmp_path / "manifest.json"):
        find_shards(str(tmp_path), STORAGE)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "version": MANIFEST_VERSION}))
    assert find_shards(str(tmp_path), STORAGE) == []


def test_unit_markers_of_an_unknown_version_are_refused():
    with refused(r"_prepare/units/000003\.json"):
        UnitResult.from_dict({"index": 3, "version": FUTURE})


def test_part_markers_of_an_unknown_version_are_refused(tmp_path):
    fs = fsspec.filesystem("file")
    (part,) = plan_parts([ShardRef("a.tar", "/a", 1)], 1)
    result = PartResult(part.index, part.fingerprint, "tokens/x", 0, 0, 0, 0.0, 25.0, [], {})
    marker = Path(part_marker_path(str(tmp_path), part.index))
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps(result.to_dict()))
    assert load_part_markers(fs, str(tmp_path), [part])[0] == result
    marker.write_text(json.dumps({**result.to_dict(), "version": FUTURE}))
    with refused(r"_tokenize/parts/000000\.json"):
        load_part_markers(fs, str(tmp_path), [part])


@pytest.mark.parametrize(
    ("stage", "summary"),
    [
        ("prepare", PrepareSummary(*[0] * 24, failures=[])),
        ("tokenize", TokenizeSummary(*[0] * 5, [], *[0] * 8, device="cpu")),
        ("spotcheck", SpotcheckSummary([], 0, 0, 0, 0, 0, [], 0.0, {})),
    ],
)
def test_summaries_carry_a_version_their_reader_checks(stage, summary):
    written = json.loads(json.dumps(summary.to_dict()))
    assert check_summary(stage, written, "summary.json") == written
    with refused("out/summary.json"):
        check_summary(stage, {**written, "version": FUTURE}, "out/summary.json")
    without = {k: v for k, v in written.items() if k != "version"}
    with pytest.raises(UnsupportedVersion, match="None"):
        check_summary(stage, without, "out/summary.json")


def test_codebook_stats_carry_a_version_their_reader_checks():
    histogram = CodebookHistogram.empty(1, 4)
    histogram.add(np.array([[0, 1, 1, 3]]))
    report = json.loads(json.dumps(codebook_report(histogram, 25.0)))
    assert check_codebook_stats(report, "codebook_stats.json") == report
    with refused("codebook_stats.json"):
        check_codebook_stats({**report, "version": FUTURE}, "codebook_stats.json")


def _with_version(schema: pa.Schema, version: int) -> pa.Schema:
    return schema.with_metadata({**schema.metadata, b"schema_version": str(version).encode()})


def test_the_metrics_table_reader_refuses_an_unknown_version(tmp_path):
    path = tmp_path / "metrics.parquet"
    pq.write_table(METRICS_SCHEMA.empty_table(), path)
    assert read_metrics(str(tmp_path)).schema.equals(METRICS_SCHEMA, check_metadata=True)
    pq.write_table(METRICS_SCHEMA.empty_table().cast(_with_version(METRICS_SCHEMA, FUTURE)), path)
    with refused(path):
        read_metrics(str(path))


def test_the_audit_refuses_a_rejects_table_of_an_unknown_version(tmp_path):
    path = tmp_path / "rejects.parquet"
    rows = [{"path": "a.tar", "stage": "tokenize", "reason": "x", "song_id": None}]
    pq.write_table(pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA), path)
    rejects, damaged = read_rejects(str(tmp_path), STORAGE, {"a.tar"})
    assert rejects.shards == {"a.tar"} and damaged == []
    future = pa.Table.from_pylist(rows, schema=_with_version(REJECTS_SCHEMA, FUTURE))
    pq.write_table(future, path)
    with refused(path):
        read_rejects(str(tmp_path), STORAGE, {"a.tar"})


def test_token_table_readers_refuse_an_unknown_version(tmp_path):
    path = tmp_path / "tokens" / "part-000000.parquet"
    path.parent.mkdir()
    pq.write_table(TOKENS_SCHEMA.empty_table().cast(_with_version(TOKENS_SCHEMA, FUTURE)), path)
    with refused(path):
        token_keys(str(tmp_path), STORAGE)  # The audit.
    with refused(path):
        _read_index([str(path)], STORAGE)  # The spot-check.
    with refused(path):
        list(TokenDataset(str(tmp_path)))  # The training reader.


def test_a_samples_metrics_json_of_an_unknown_version_is_refused(tmp_path):
    fs = fsspec.filesystem("file")
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"key": "a_00000", "version": FUTURE}))
    with refused(path):
        read_sample_metrics(fs, str(path))
