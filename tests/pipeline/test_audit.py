"""The audit on damaged runs: real shards written by prepare, real token and rejects Parquet.

No Ray and no model: prepare's unit function writes the shards, and tokenize's own reader and
part writer produce the tables, with zero codes standing in for the tokenizer's.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_codecs.base import CodecInfo
from jobs import audit as audit_job
from pipeline.audit import AuditReport, audit_codec
from pipeline.io import StorageOptions
from pipeline.prepare.records import SongSource
from pipeline.shard_reader import ShardSampleRow, ShardTask, find_shards, shard_rows
from pipeline.tokenize.parts import PartResult, plan_parts
from pipeline.tokenize.rows import TokenizedRow
from schemas.manifest import MANIFEST_VERSION
from schemas.rejects import REJECTS_SCHEMA
from tests.pipeline.helpers import part_assembler, run_unit, small_config, write_song

STORAGE = StorageOptions()
SAMPLES_PER_SHARD = 4  # A 3.5 s song in 1 s segments, its 0.5 s tail kept.
INFO = CodecInfo(
    codec="mucodec", preset="", config="{}", weights_sha256="random-weights-seed-0",
    sample_rate=48_000, frame_rate=25.0, channels=1, num_codebooks=1, codebook_size=1024,
    encoder_layer=2,
)  # fmt: skip
OLD_FIELDS = {"shard_samples", "token_rows", "rejected", "missing", "duplicated", "unexpected"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A prepare output of two shards (one song each) with prepare's manifest."""
    root = tmp_path_factory.mktemp("audit")
    (root / "scratch").mkdir()
    shards = []
    for index, song_id in enumerate(("alpha", "beta")):
        write_song(str(root / f"{song_id}.flac"), 3.5, seed=index)
        source = SongSource(song_id, str(root / f"{song_id}.flac"))
        config = small_config(str(root / "scratch"))
        shards += run_unit([source], str(root / "prepared"), config, index).shards
    assert [s.samples for s in shards] == [SAMPLES_PER_SHARD] * 2
    manifest = {
        "version": MANIFEST_VERSION,
        "complete": True,
        "shards": [asdict(s) for s in shards],
    }
    (root / "prepared" / "manifest.json").write_text(json.dumps(manifest))
    return root / "prepared"


@pytest.fixture
def prepared(pristine, tmp_path) -> Path:
    """A copy of the prepare output for one test to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "prepared"))


def shard_path(prepared: Path, index: int) -> Path:
    return prepared / "shards" / f"{index:06d}-0000.tar"


def fake_actor(row: ShardSampleRow) -> TokenizedRow:
    """What the tokenizer actor returns for a reader row, with zero codes for a sample."""
    codes = np.zeros((1, 4), "u2") if row.usable else None
    return TokenizedRow.of(row, INFO, "test", codes)


def tokenize(prepared: Path, output: Path) -> list[PartResult]:
    """Tokenize's reading and writing (one shard per part): parts, markers, rejects table."""
    parts = plan_parts(find_shards(str(prepared), STORAGE), shards_per_part=1)
    assembler = part_assembler(str(output), parts)
    results = []
    for shard in (s for part in parts for s in part.shards):
        for row in shard_rows(ShardTask(shard.name, shard.url), STORAGE):
            if (result := assembler.add(fake_actor(row))) is not None:
                results.append(result)
    assert len(results) == len(parts)
    rejects = [r.to_dict() for result in results for r in result.rejects]
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), output / "rejects.parquet")
    return results


def truncate_in_sample(path: Path, sample: int, at_boundary: bool = False) -> None:
    """Cut a shard inside sample `sample`'s first member, or just before its header."""
    with tarfile.open(path) as tar:
        first = tar.getmembers()[3 * sample]  # Prepare writes .flac, .json, .txt per sample.
    cut = first.offset if at_boundary else first.offset_data + first.size // 2
    with open(path, "r+b") as handle:
        handle.truncate(cut)


def keys_of(path: Path) -> list[str]:
    return pq.read_table(path, columns=["key"]).column("key").to_pylist()


def test_a_clean_run_passes_and_keeps_the_report_shape(prepared, tmp_path):
    tokenize(prepared, tmp_path / "tokens")
    report = audit_codec(str(prepared), str(tmp_path / "tokens"), STORAGE)
    assert report.ok and report.shard_samples == report.token_rows == 2 * SAMPLES_PER_SHARD
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == OLD_FIELDS | {"damaged_shards", "damaged_tables", "ok"}
    assert (data["damaged_shards"], data["damaged_tables"], data["ok"]) == ([], [], True)


def test_a_truncated_shard_that_tokenize_rejected_is_reported_and_accounted_for(
    prepared, tmp_path, capsys
):
    truncate_in_sample(shard_path(prepared, 1), 2)
    results = tokenize(prepared, tmp_path / "tokens")
    assert [r.path for r in results[1].rejects] == ["000001-0000.tar"]  # The whole shard.

    report = audit_codec(str(prepared), str(tmp_path / "tokens"), STORAGE)
    (damaged,) = report.damaged_shards
    assert damaged.shard == "000001-0000.tar" and damaged.rejected
    assert damaged.reason.startswith("ReadError") and "after 2 samples" in damaged.reason
    # The two samples before the damage still count, and were tokenized.
    assert report.shard_samples == report.token_rows == SAMPLES_PER_SHARD + 2
    assert report.ok and report.missing == report.unexpected == []

    # The job reads it too, without crashing, and passes it.
    shutil.copytree(tmp_path / "tokens", tmp_path / "run" / "mucodec")  # A codec's table.
    command = ["--shards", str(prepared), "--tokens", str(tmp_path / "run")]
    assert audit_job.main(command) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is True and list(printed["codecs"]) == ["mucodec"]
    assert printed["codecs"]["mucodec"]["damaged_shards"] == [asdict(damaged)]


@pytest.mark.parametrize("at_boundary", [False, True], ids=["mid-member", "member-boundary"])
def test_a_shard_damaged_after_tokenize_fails_the_audit(prepared, tmp_path, at_boundary):
    tokenize(prepared, tmp_path / "tokens")
    truncate_in_sample(shard_path(prepared, 0), 1, at_boundary)

    report = audit_codec(str(prepared), str(tmp_path / "tokens"), STORAGE)
    (damaged,) = report.damaged_shards
    assert (damaged.shard, damaged.rejected) == ("000000-0000.tar", False)
    if at_boundary:  # A tar cut between members reads as a complete, shorter archive.
        assert damaged.reason == "1 samples readable, prepare's manifest lists 4"
    else:
        assert damaged.reason.startswith("ReadError")
    assert report.shard_samples == SAMPLES_PER_SHARD + 1
    assert report.unexpected == [f"alpha_{i:05d}" for i in range(1, SAMPLES_PER_SHARD)]
    assert not report.ok


def test_a_shard_missing_after_tokenize_is_reported_not_a_crash(prepared, tmp_path):
    tokenize(prepared, tmp_path / "tokens")
    shard_path(prepared, 0).unlink()

    report = audit_codec(str(prepared), str(tmp_path / "tokens"), STORAGE)
    (damaged,) = report.damaged_shards
    assert (damaged.shard, damaged.rejected) == ("000000-0000.tar", False)
    assert "FileNotFoundError" in damaged.reason or "0 samples readable" in damaged.reason
    assert len(report.unexpected) == SAMPLES_PER_SHARD and not report.ok


def test_link_members_are_not_samples_and_a_rejected_sample_is_accounted_for(prepared, tmp_path):
    path = shard_path(prepared, 0)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            if member.name == "alpha_00001.flac":
                data = b"not a flac" * 10  # A sample tokenize cannot decode: a keyed reject.
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for name, kind in [("alpha_00009.flac", tarfile.SYMTYPE), ("alpha_00010", tarfile.DIRTYPE),
                           ("alpha_00011.json", tarfile.LNKTYPE)]:  # fmt: skip
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "alpha_00000.flac"
            tar.addfile(link)
    results = tokenize(prepared, tmp_path / "tokens")
    assert [r.path for r in results[0].rejects] == ["000000-0000.tar#alpha_00001"]

    report = audit_codec(str(prepared), str(tmp_path / "tokens"), STORAGE)
    assert report == AuditReport(
        shard_samples=2 * SAMPLES_PER_SHARD, token_rows=2 * SAMPLES_PER_SHARD - 1, rejected=1,
        missing=[], duplicated=[], unexpected=[],
    )  # fmt: skip
    assert report.ok


def test_unreadable_tables_are_reported_and_their_keys_show_as_missing(prepared, tmp_path):
    output = tmp_path / "tokens"
    tokenize(prepared, output)
    part = output / "tokens" / "part-000001.parquet"
    lost = keys_of(part)
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    (output / "rejects.parquet").write_bytes(b"PAR1 cut short")

    report = audit_codec(str(prepared), str(output), STORAGE)
    assert [(t.file, t.reason.split(":")[0]) for t in report.damaged_tables] == [
        (str(part), "ArrowInvalid"), (f"{output}/rejects.parquet", "ArrowInvalid"),
    ]  # fmt: skip
    assert report.missing == sorted(lost) and report.token_rows == SAMPLES_PER_SHARD
    assert report.damaged_shards == [] and not report.ok
