"""One retry budget per object: botocore repeats a failed S3 request; no layer repeats it again.

The S3 tests run against a real S3 API (moto's server) behind a loopback proxy that fails
chosen objects and records every request (tests/pipeline/s3_fault_proxy.py). The jobs run
through their CLI entry with the storage options a user gets. docs/reliability.md ("Retried
first, by one layer each") states the counts and waits checked here.
"""

from __future__ import annotations

import errno
import itertools
import json
import uuid
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs
from aiobotocore.response import AioReadTimeoutError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ResponseStreamingError,
)
from s3fs.errors import translate_boto_error

from core.errors import InvalidSetting
from jobs import prepare as prepare_job
from pipeline.errors import (
    RETRY_DELAY_SCALE_VARIABLE,
    RETRY_DELAYS_SECONDS,
    EnvironmentFailure,
    retry_delay_scale,
    with_retries,
)
from pipeline.io import S3_ATTEMPTS, StorageOptions, filesystem
from tests.pipeline.helpers import write_song
from tests.pipeline.s3_fault_proxy import SLOW_DOWN, TOO_MANY_REQUESTS, Request, S3FaultProxy

# botocore draws its waits before the 2nd to 5th try below 1, 2, 4 and 8 s; while a store
# throttles, its rate limiter spaces requests by up to 2 s more each.
BACKOFF_BOUND_SECONDS = 1 + 2 + 4 + 8
THROTTLED_BOUND_SECONDS = BACKOFF_BOUND_SECONDS + 2 * (S3_ATTEMPTS - 1)
SLACK_SECONDS = 3.0  # Scheduling on a busy two-core machine.


def _store_answer(status: int, code: str, **retry_metadata) -> OSError:
    """What s3fs raises for an S3 error answer: botocore's ClientError, translated."""
    metadata = {"HTTPStatusCode": status, **retry_metadata}
    response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": metadata}
    return translate_boto_error(ClientError(response, "GetObject"))


class Flaky:
    """Work that raises `error` on its first `failures` calls, then returns "read"."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "read"


@pytest.mark.parametrize(
    "error",
    [
        _store_answer(503, "InternalError", RetryAttempts=4, MaxAttemptsReached=True),
        _store_answer(503, "SlowDown", RetryAttempts=2, RetryQuotaReached=True),
        EndpointConnectionError(endpoint_url="http://store"),
        ConnectionClosedError(endpoint_url="http://store"),
    ],
    ids=["5xx-attempts-spent", "slowdown-quota-spent", "unreachable", "closed-without-answer"],
)
def test_what_botocore_retried_is_not_tried_again(error):
    work = Flaky(error, failures=1)
    with pytest.raises(EnvironmentFailure, match="tried 1 times"):
        with_retries(work, "s3://b/song.flac")
    assert work.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        ResponseStreamingError(error=ConnectionResetError(errno.ECONNRESET, "reset")),
        AioReadTimeoutError(endpoint_url="http://store", error=TimeoutError()),
        OSError(errno.EIO, "Input/output error"),
        _store_answer(429, "429", RetryAttempts=0),  # A HEAD's 429: no code botocore retries.
    ],
    ids=["body-cut", "body-stalled", "disk-eio", "429-not-retried-below"],
)
def test_what_no_layer_below_retried_is_tried_again(error, monkeypatch):
    monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, "0")
    work = Flaky(error, failures=len(RETRY_DELAYS_SECONDS))
    assert with_retries(work, "s3://b/song.flac") == "read"
    assert work.calls == len(RETRY_DELAYS_SECONDS) + 1


def test_the_waits_are_full_jitter_below_doubling_caps_times_the_scale(monkeypatch):
    draws, sleeps = [], []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    monkeypatch.setattr("pipeline.errors.random.uniform", uniform)
    monkeypatch.setattr("pipeline.errors.time.sleep", sleeps.append)
    monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, "0.5")
    with pytest.raises(EnvironmentFailure, match="tried 3 times"):
        with_retries(Flaky(OSError(errno.EIO, "Input/output error"), 3), "spool")
    assert RETRY_DELAYS_SECONDS == (4.0, 8.0)
    assert draws == [(0, 4.0), (0, 8.0)]
    assert sleeps == [1.0, 2.0]


def test_the_scale_of_the_waits_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(RETRY_DELAY_SCALE_VARIABLE, raising=False)
    assert retry_delay_scale() == 1.0
    monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, "0.01")
    assert retry_delay_scale() == 0.01
    for bad in ("-1", "nan", "inf", "soon"):
        monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, bad)
        with pytest.raises(InvalidSetting, match=RETRY_DELAY_SCALE_VARIABLE):
            retry_delay_scale()


def test_a_bad_scale_stops_a_job_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, "soon")
    (tmp_path / "catalog").mkdir()
    args = ["--input", str(tmp_path / "catalog"), "--output", str(tmp_path / "out")]
    with pytest.raises(InvalidSetting, match=f"{RETRY_DELAY_SCALE_VARIABLE}='soon'"):
        prepare_job.main(args)


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"budget-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.mark.integration
def test_a_body_cut_short_is_read_again_by_the_job_alone(s3_endpoint, bucket, monkeypatch):
    monkeypatch.setenv(RETRY_DELAY_SCALE_VARIABLE, "0")
    data = bytes(range(256)) * 1024
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="a", Body=data)
    proxy = S3FaultProxy(s3_endpoint, cut=True)
    fs, path = filesystem(f"s3://{bucket}/a", StorageOptions(endpoint_url=proxy.url))

    def read() -> bytes:
        with fs.open(path, "rb") as handle:
            return handle.read()

    try:
        proxy.failing = {f"GET /{bucket}/a": 1}
        assert with_retries(read, "a") == data
        # botocore had an answer and s3fs's retries are off: the job's second try read it.
        assert [r.failed for r in proxy.requests_for("GET ")] == [True, False]
        proxy.failing = {f"GET /{bucket}/a": None}
        with pytest.raises(EnvironmentFailure, match=r"ClientPayloadError.*tried 3 times"):
            with_retries(read, "a")
        assert len(proxy.requests_for("GET ")) == 2 + len(RETRY_DELAYS_SECONDS) + 1
    finally:
        proxy.close()


def _two_song_catalog(s3_endpoint: str, bucket: str, tmp_path: Path) -> list[str]:
    """Uploads one.flac and two.flac; returns the prepare job's arguments for a local output."""
    s3 = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for seed, name in enumerate(("one.flac", "two.flac"), start=1):
        write_song(str(tmp_path / "local" / name), 2.5, seed=seed)
        s3.put_file(str(tmp_path / "local" / name), f"{bucket}/corpus/{name}")
    (tmp_path / "scratch").mkdir()
    return [
        "--input", f"s3://{bucket}/corpus", "--output", str(tmp_path / "out"),
        "--segment-seconds", "1", "--min-tail-seconds", "0.25", "--songs-per-unit", "1",
        "--scratch-dir", str(tmp_path / "scratch"),
    ]  # fmt: skip


def _waits(requests: list[Request]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("reset", "requests_per_try"), [(False, 1), (True, 2)], ids=["503", "no-answer"]
)
def test_an_object_that_always_fails_gets_one_requests_budget_in_a_job(
    ray_local, s3_endpoint, bucket, tmp_path, reset, requests_per_try
):
    args = _two_song_catalog(s3_endpoint, bucket, tmp_path)
    proxy = S3FaultProxy(s3_endpoint, reset=reset)
    proxy.failing = {"corpus/one.flac": None}
    try:
        status = prepare_job.main([*args, "--s3-endpoint-url", proxy.url])
    finally:
        proxy.close()
    assert status == 1
    requests = proxy.requests_for("/corpus/one.flac")
    # aiohttp sends a request whose connection closed without an answer once more, at once.
    assert len(requests) == S3_ATTEMPTS * requests_per_try and all(r.failed for r in requests)
    assert sum(_waits(requests)) <= BACKOFF_BOUND_SECONDS + SLACK_SECONDS
    output = tmp_path / "out"
    assert pq.read_table(output / "rejects.parquet").num_rows == 0, "not the song's fault"
    assert json.loads((output / "manifest.json").read_text())["complete"] is False
    assert json.loads((output / "summary.json").read_text())["songs_ok"] == 1


@pytest.mark.integration
def test_a_throttling_store_slows_the_job_down_and_the_job_finishes(
    ray_local, s3_endpoint, bucket, tmp_path
):
    args = _two_song_catalog(s3_endpoint, bucket, tmp_path)
    proxy = S3FaultProxy(s3_endpoint, answers=(SLOW_DOWN, TOO_MANY_REQUESTS))
    throttled = S3_ATTEMPTS - 1  # The last of one request's tries gets through.
    proxy.failing = {f"GET /{bucket}/corpus/one.flac": throttled}
    try:
        status = prepare_job.main([*args, "--s3-endpoint-url", proxy.url])
    finally:
        proxy.close()
    assert status == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["songs_ok"], summary["rejects"]) == (2, 0)
    one, two = proxy.requests_for("/corpus/one.flac"), proxy.requests_for("/corpus/two.flac")
    # Each throttling answer cost one request more than the unthrottled song's, no more.
    assert len(one) == len(two) + throttled and sum(r.failed for r in one) == throttled
    gets = [r for r in one if r.target.startswith("GET ")]
    first = next(i for i, r in enumerate(gets) if r.failed)
    waits = _waits(gets[first : first + throttled + 1])
    # It backs off for seconds where retrying at once takes milliseconds, within the bound,
    # and once throttled does not speed up again (less scheduling noise).
    assert 3.0 <= sum(waits) <= THROTTLED_BOUND_SECONDS + SLACK_SECONDS, waits
    assert min(waits[1:]) >= waits[0] - 0.25, waits
