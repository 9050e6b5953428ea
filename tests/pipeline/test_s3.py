"""S3 in and out through s3fs, against a real S3 API (moto's server) on loopback.

The job runs through its CLI entry (`jobs.prepare.main`) in this process, on the session's
Ray, whose workers and isolation children got the dummy credentials from the environment.
"""

from __future__ import annotations

import io
import json
import os
import uuid

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from jobs import prepare as prepare_job
from tests.pipeline.helpers import read_samples, write_song

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"catalog-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(s3_endpoint) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)


def _upload_corpus(s3: s3fs.S3FileSystem, bucket: str, local) -> None:
    write_song(str(local / "A/one.flac"), 2.5, rate=44_100, seed=1)
    (local / "A/one.lrc").write_text("[00:01.25]hello from s3\n")
    write_song(str(local / "B/two.wav"), 1.5, rate=48_000, channels=1, seed=2)
    (local / "B/broken.mp3").write_bytes(b"not an mp3" * 100)
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            s3.put_file(path, f"{bucket}/corpus/{os.path.relpath(path, local)}")


def _args(input_url: str, output_url: str, endpoint: str, scratch: str) -> list[str]:
    return [
        "--input", input_url, "--output", output_url, "--s3-endpoint-url", endpoint,
        "--segment-seconds", "1", "--min-tail-seconds", "0.25", "--songs-per-unit", "2",
        "--scratch-dir", scratch,
    ]  # fmt: skip


def _read_output(s3: s3fs.S3FileSystem, prefix: str, tmp_path):
    manifest = json.loads(s3.cat_file(f"{prefix}/manifest.json"))
    summary = json.loads(s3.cat_file(f"{prefix}/summary.json"))
    rejects = pq.read_table(io.BytesIO(s3.cat_file(f"{prefix}/rejects.parquet"))).to_pylist()
    local = tmp_path / "downloaded"
    local.mkdir(exist_ok=True)
    paths = []
    for shard in manifest["shards"]:
        path = local / shard["name"]
        s3.get_file(f"{prefix}/shards/{shard['name']}", str(path))
        paths.append(str(path))
    return manifest, summary, rejects, read_samples(paths)


def test_s3_corpus_to_s3_output_and_rerun(ray_local, s3, bucket, s3_endpoint, tmp_path, scratch):
    _upload_corpus(s3, bucket, tmp_path / "local")
    output = f"s3://{bucket}/prepared"
    args = _args(f"s3://{bucket}/corpus", output, s3_endpoint, scratch)

    assert prepare_job.main(args) == 0

    manifest, summary, rejects, samples = _read_output(s3, f"{bucket}/prepared", tmp_path)
    assert manifest["complete"] is True
    shard_names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{bucket}/prepared/shards"))
    assert shard_names == sorted(s["name"] for s in manifest["shards"])
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys)) == 5 == summary["segments"] == manifest["samples"]
    by_source = {}
    for sample in samples:
        by_source.setdefault(sample.meta["source"], []).append(sample)
    assert sorted(by_source) == [
        f"s3://{bucket}/corpus/A/one.flac",
        f"s3://{bucket}/corpus/B/two.wav",
    ]
    one = sorted(by_source[f"s3://{bucket}/corpus/A/one.flac"], key=lambda s: s.key)
    assert [s.meta["lyrics"] for s in one] == [[], [{"t": 0.25, "text": "hello from s3"}], []]
    assert all(s.info().samplerate == 48_000 for s in samples)
    assert [(r["path"], r["stage"]) for r in rejects] == [
        (f"s3://{bucket}/corpus/B/broken.mp3", "decode")
    ]
    assert (summary["songs_in"], summary["songs_ok"], summary["songs_rejected"]) == (3, 2, 1)
    assert s3.exists(f"{bucket}/prepared/_prepare/units/000000.json")
    assert s3.exists(f"{bucket}/prepared/_prepare/units/000001.json")

    # A rerun finds the unit markers on S3 and does nothing new.
    before = {p: s3.info(p)["ETag"] for p in s3.ls(f"{bucket}/prepared/shards")}
    assert prepare_job.main(args) == 0
    summary = json.loads(s3.cat_file(f"{bucket}/prepared/summary.json"))
    assert (summary["units_run"], summary["units_already_done"]) == (0, 2)
    s3.invalidate_cache()
    assert {p: s3.info(p)["ETag"] for p in s3.ls(f"{bucket}/prepared/shards")} == before


def test_s3_manifest_with_relative_paths_to_a_local_output(
    ray_local, s3, bucket, s3_endpoint, tmp_path, scratch
):
    _upload_corpus(s3, bucket, tmp_path / "local")
    rows = [
        {"path": "corpus/A/one.flac", "song_id": "one", "lyrics_path": "corpus/A/one.lrc"},
        {"path": "corpus/B/two.wav", "song_id": "two", "title": "Two"},
        {"path": "corpus/B/missing.flac", "song_id": "missing"},
    ]
    s3.pipe_file(f"{bucket}/catalog.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    output = tmp_path / "out"
    args = _args(f"s3://{bucket}/catalog.jsonl", str(output), s3_endpoint, scratch)

    assert prepare_job.main(args) == 0

    shards = sorted(str(p) for p in (output / "shards").iterdir())
    samples = read_samples(shards)
    assert [s.key for s in samples] == [
        "one_00000",
        "one_00001",
        "one_00002",
        "two_00000",
        "two_00001",
    ]
    assert samples[1].meta["lyrics"] == [{"t": 0.25, "text": "hello from s3"}]
    assert samples[3].meta["title"] == "Two"
    (reject,) = pq.read_table(output / "rejects.parquet").to_pylist()
    assert reject["song_id"] == "missing"
    assert reject["path"] == f"s3://{bucket}/corpus/B/missing.flac"
    assert "not found" in reject["reason"]
