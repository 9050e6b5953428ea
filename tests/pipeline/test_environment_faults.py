"""Environment failures never become rejects: the unit stays unfinished and a rerun does it."""

from __future__ import annotations

import errno
import json
import uuid
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.errors import EnvironmentFailure, is_environment_failure, with_retries
from pipeline.io import S3_ATTEMPTS, StorageOptions
from pipeline.prepare.stage import prepare_corpus
from tests.pipeline.helpers import (
    mounted_tmpfs,
    read_samples,
    shard_files,
    small_config,
    write_song,
)
from tests.pipeline.s3_fault_proxy import S3FaultProxy


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs: room for short songs' scratch, not for a long one's spool."""
    with mounted_tmpfs(tmp_path / "small-disk", "24m") as mount:
        yield mount


@pytest.mark.integration
def test_a_full_scratch_disk_fails_the_unit_and_a_rerun_completes_it(
    tmp_path, small_disk, ray_local
):
    corpus, output = tmp_path / "corpus", str(tmp_path / "out")
    write_song(str(corpus / "a.flac"), 2.5, seed=1)
    write_song(str(corpus / "b.flac"), 2.5, seed=2)
    # 48 kHz stereo float32 spool: 80 s need 30.7 MB, more than the disk has.
    write_song(str(corpus / "long.flac"), 80.0, rate=8_000, channels=1, seed=3)

    full = prepare_corpus(str(corpus), output, small_config(str(small_disk), songs_per_unit=1))
    assert full.units_failed == 1 and "No space left on device" in full.failures[0]
    rejects = pq.read_table(Path(output) / "rejects.parquet").to_pylist()
    assert rejects == [], "a full disk is not the song's fault"
    manifest = json.loads((Path(output) / "manifest.json").read_text())
    assert not manifest["complete"] and full.songs_ok == 2

    (tmp_path / "scratch").mkdir()
    rerun = prepare_corpus(str(corpus), output, small_config(str(tmp_path / "scratch"),
                                                             songs_per_unit=1))  # fmt: skip
    assert (rerun.units_failed, rerun.units_run, rerun.songs_ok) == (0, 1, 3)
    samples = read_samples(shard_files(output))
    assert len(samples) == len({s.key for s in samples}) == rerun.segments == 3 + 3 + 80
    assert json.loads((Path(output) / "manifest.json").read_text())["complete"]


def test_the_taxonomy_tells_the_environment_from_the_input():
    assert is_environment_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert is_environment_failure(OSError(errno.EBUSY, "Please reduce your request rate"))
    assert is_environment_failure(TimeoutError("read timed out"))
    assert is_environment_failure(MemoryError())
    wrapped = RuntimeError("decoder stopped")
    wrapped.__cause__ = ConnectionResetError(errno.ECONNRESET, "reset by peer")
    assert is_environment_failure(wrapped)
    assert not is_environment_failure(FileNotFoundError(errno.ENOENT, "gone"))
    assert not is_environment_failure(PermissionError(errno.EACCES, "denied"))
    assert not is_environment_failure(ValueError("not audio"))


def test_environment_failures_are_retried_then_reported_and_input_errors_are_not():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "SlowDown")
        return "read"

    assert with_retries(flaky, "s3://b/song.flac", delays=(0, 0)) == "read" and len(calls) == 3

    def throttled():
        raise OSError(errno.EBUSY, "SlowDown")

    with pytest.raises(EnvironmentFailure, match=r"s3://b/x.flac: OSError.*tried 3 times"):
        with_retries(throttled, "s3://b/x.flac", delays=(0, 0))

    full = []

    def disk_full():
        full.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(EnvironmentFailure, match="tried 1 times"):
        with_retries(disk_full, "spool", delays=(0, 0))
    with pytest.raises(ValueError):
        with_retries(lambda: int("x"), "input", delays=(0, 0))


@pytest.mark.integration
def test_a_lasting_object_store_error_fails_the_unit_and_a_rerun_completes_it(
    tmp_path, s3_endpoint
):
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3 = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    local = tmp_path / "corpus"
    write_song(str(local / "one.flac"), 2.5, seed=1)
    (local / "one.lrc").write_text("[00:01.25]hello from s3\n")
    write_song(str(local / "two.flac"), 2.5, seed=2)
    for name in ("one.flac", "one.lrc", "two.flac"):
        s3.put_file(str(local / name), f"{bucket}/corpus/{name}")

    proxy = S3FaultProxy(s3_endpoint)
    proxy.failing = {"corpus/one.lrc": None, "corpus/two.flac": None}
    storage = StorageOptions(endpoint_url=proxy.url)
    (tmp_path / "scratch").mkdir()
    config = small_config(str(tmp_path / "scratch"), songs_per_unit=1, storage=storage)
    output = str(tmp_path / "out")
    try:
        faulty = prepare_corpus(f"s3://{bucket}/corpus", output, config)
        # botocore's tries of each object's first request, and no more: the job does not
        # try again what botocore gave up on (test_retry_budget.py has the details).
        assert faulty.units_failed == 2 and proxy.faults == 2 * S3_ATTEMPTS
        assert pq.read_table(Path(output) / "rejects.parquet").num_rows == 0
        proxy.failing = {}
        rerun = prepare_corpus(f"s3://{bucket}/corpus", output, config)
    finally:
        proxy.close()
    assert (rerun.units_failed, rerun.units_run, rerun.songs_ok, rerun.rejects) == (0, 2, 2, 0)
    samples = read_samples(shard_files(output))
    assert len(samples) == len({s.key for s in samples}) == 6
    with_lyrics = [s for s in samples if s.meta["source"].endswith("one.flac")]
    assert any(line["text"] == "hello from s3" for s in with_lyrics for line in s.meta["lyrics"]), [
        s.meta.get("lyrics") for s in with_lyrics
    ]


@pytest.mark.integration
@pytest.mark.parametrize("reset", [False, True], ids=["503", "connection-reset"])
def test_transient_object_store_errors_are_retried_without_loss(tmp_path, s3_endpoint, reset):
    bucket = f"flaky-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3 = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    local = tmp_path / "corpus"
    write_song(str(local / "one.flac"), 2.5, seed=1)
    (local / "one.lrc").write_text("[00:01.25]hello from s3\n")
    for name in ("one.flac", "one.lrc"):
        s3.put_file(str(local / name), f"{bucket}/corpus/{name}")

    proxy = S3FaultProxy(s3_endpoint, reset=reset)
    proxy.failing = {"corpus/one.lrc": 1, "corpus/one.flac": 1}  # Each fails once, then heals.
    storage = StorageOptions(endpoint_url=proxy.url)
    (tmp_path / "scratch").mkdir()
    config = small_config(str(tmp_path / "scratch"), storage=storage)
    output = str(tmp_path / "out")
    try:
        summary = prepare_corpus(f"s3://{bucket}/corpus", output, config)
    finally:
        proxy.close()
    assert proxy.faults == 2
    assert (summary.units_failed, summary.songs_ok, summary.rejects) == (0, 1, 0)
    samples = read_samples(shard_files(output))
    assert [s.meta["lyrics"] for s in samples][1] == [{"t": 0.25, "text": "hello from s3"}]
