"""Output claims: of two runs started together exactly one takes an output, on disk and on S3;
a run whose claim was replaced (--force) publishes nothing more to it.

The S3 tests use moto's S3 API on loopback, served one request at a time: real S3 applies a
conditional put atomically, while moto checks and then stores, so two requests handled in
parallel could both pass its check. No Ray is needed, so none is started.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pytest
import s3fs

from core.errors import OutputInUse, UnsupportedVersion
from pipeline.claims import RUN_ID, Fence, Superseded, claim_output
from pipeline.io import upload_file, write_json
from schemas.run import CLAIM_VERSION

RUN_FILE = "_stage/run.json"
OWNED = ("data", "_stage", "summary.json")
ROUNDS = 20


def claim(fs, root: str, value: dict[str, Any], force: bool = False) -> Fence:
    return claim_output(
        fs, root, RUN_FILE, value, OWNED, force,
        describe=lambda previous: f"run {previous['run']}",
    )  # fmt: skip


def race(fs_a, fs_b, root: str) -> dict[str, str]:
    """Runs A and B claim `root` at the same instant; each one's outcome."""
    barrier = threading.Barrier(2)

    def run(fs, name: str) -> str:
        barrier.wait()
        try:
            claim(fs, root, {"run": name})
        except OutputInUse:
            return "refused"
        return "claimed"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = pool.map(run, (fs_a, fs_b), ("A", "B"))
        return dict(zip("AB", outcomes, strict=True))


def put(fs, path: str, data: bytes) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def read_claim(fs, root: str) -> dict[str, Any]:
    """The claim as the stage made it; the file also carries the claim format's version and
    the id of the run that holds it."""
    fs.invalidate_cache()
    data = json.loads(fs.cat_file(f"{root}/{RUN_FILE}"))
    assert data.pop("version") == CLAIM_VERSION
    assert len(data.pop(RUN_ID)) == 32
    return data


def assert_one_winner(fs, root: str, outcomes: dict[str, str]) -> None:
    assert sorted(outcomes.values()) == ["claimed", "refused"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "claimed")
    assert read_claim(fs, root) == {"run": winner}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 API on a free loopback port, one request at a time; returns its URL."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def s3_client(endpoint: str) -> s3fs.S3FileSystem:
    """A client of its own, as each run has: no shared listing cache."""
    return s3fs.S3FileSystem(
        endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True
    )


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"claims-{uuid.uuid4().hex[:8]}"
    s3_client(s3_server).mkdir(name)
    return name


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> tuple[fsspec.AbstractFileSystem, str]:
    """A filesystem and an output root on it."""
    if request.param == "local":
        return fsspec.filesystem("file"), str(tmp_path / "output")
    bucket = request.getfixturevalue("bucket")
    return s3_client(request.getfixturevalue("s3_server")), f"{bucket}/output"


def test_of_two_runs_started_together_one_claims_a_local_output(tmp_path):
    fs = fsspec.filesystem("file")
    for round_ in range(ROUNDS):
        root = str(tmp_path / f"output-{round_}")
        assert_one_winner(fs, root, race(fs, fs, root))
        # Each run's staged claim is gone; only the run file has the name.
        assert [p.name for p in (tmp_path / f"output-{round_}/_stage").iterdir()] == ["run.json"]


def test_of_two_runs_started_together_one_claims_an_s3_output(s3_server, bucket):
    fs_a, fs_b = s3_client(s3_server), s3_client(s3_server)
    for round_ in range(ROUNDS):
        root = f"{bucket}/output-{round_}"
        # Both clients have listed the output before, as a run does: a stale listing must
        # not hide the winner's claim from the loser.
        assert not fs_a.exists(f"{root}/{RUN_FILE}") and not fs_b.exists(f"{root}/{RUN_FILE}")
        assert_one_winner(fs_a, root, race(fs_a, fs_b, root))


def test_two_attempts_of_the_same_run_both_proceed(output):
    fs, root = output
    barrier = threading.Barrier(2)

    def attempt() -> Fence:
        barrier.wait()
        return claim(fs, root, {"run": "A"})

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: attempt(), range(2))  # Neither raises.
    assert read_claim(fs, root) == {"run": "A"}
    assert first == second  # One run: neither attempt's writers refuse the other's.


def test_a_rerun_with_the_same_claim_resumes_and_keeps_the_output(output):
    fs, root = output
    first = claim(fs, root, {"run": "A"})
    put(fs, f"{root}/data/done.bin", b"finished work")
    # Even forced: the same inputs and config are a resume, with the same run id.
    assert claim(fs, root, {"run": "A"}, force=True) == first
    assert fs.cat_file(f"{root}/data/done.bin") == b"finished work"
    assert read_claim(fs, root) == {"run": "A"}
    first.check(fs)  # The first attempt's leftover writers may still publish.


def test_a_claim_of_an_unknown_version_is_refused_even_with_force(output):
    fs, root = output
    put(fs, f"{root}/{RUN_FILE}", json.dumps({"run": "A", "version": 99}).encode())
    with pytest.raises(UnsupportedVersion, match="run claim version 99"):
        claim(fs, root, {"run": "A"}, force=True)


def test_a_claim_from_before_claims_had_a_version_is_another_run(output):
    fs, root = output
    put(fs, f"{root}/{RUN_FILE}", json.dumps({"run": "A"}).encode())
    with pytest.raises(OutputInUse, match="--force"):
        claim(fs, root, {"run": "A"})
    claim(fs, root, {"run": "A"}, force=True)
    assert read_claim(fs, root) == {"run": "A"}


def test_another_run_is_refused_and_nothing_is_touched(output):
    fs, root = output
    claim(fs, root, {"run": "A"})
    put(fs, f"{root}/data/done.bin", b"finished work")
    with pytest.raises(OutputInUse, match=r"holds run A; .*--force"):
        claim(fs, root, {"run": "B"})
    assert fs.cat_file(f"{root}/data/done.bin") == b"finished work"
    assert read_claim(fs, root) == {"run": "A"}


def test_force_replaces_another_runs_claim_then_deletes_its_output(output, monkeypatch):
    fs, root = output
    claim(fs, root, {"run": "A"})
    put(fs, f"{root}/data/done.bin", b"A's work")
    put(fs, f"{root}/_stage/parts/000000.json", b"{}")
    put(fs, f"{root}/summary.json", b"{}")
    put(fs, f"{root}/keep.txt", b"not the stage's")
    claims_when_deleting = []

    def rm(path, *args, **kwargs):
        claims_when_deleting.append(read_claim(fs, root))
        return type(fs).rm(fs, path, *args, **kwargs)

    monkeypatch.setattr(fs, "rm", rm)
    claim(fs, root, {"run": "B"}, force=True)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/data") and not fs.exists(f"{root}/summary.json")
    assert not fs.exists(f"{root}/_stage/parts")
    assert fs.cat_file(f"{root}/keep.txt") == b"not the stage's"
    assert read_claim(fs, root) == {"run": "B"}
    # B's claim was in place before A's outputs went: A's writers were refused by then.
    assert claims_when_deleting and all(c == {"run": "B"} for c in claims_when_deleting)


def test_a_replaced_runs_writers_publish_nothing(output, tmp_path):
    fs, root = output
    first_a = claim(fs, root, {"run": "A"})
    b = claim(fs, root, {"run": "B"}, force=True)
    # Forced back to A's claim: another run all the same, with another id.
    second_a = claim(fs, root, {"run": "A"}, force=True)
    staged = tmp_path / "staged.tar"
    for fence in (first_a, b):
        staged.write_bytes(b"shard")
        with pytest.raises(Superseded, match="another run has claimed this output"):
            upload_file(fs, str(staged), f"{root}/data/0.tar", fence.guard(fs))
        with pytest.raises(Superseded):
            write_json(fs, f"{root}/_stage/parts/0.json", {"by": "old"}, fence.guard(fs))
    fs.invalidate_cache()
    assert fs.find(root) == [f"{root}/{RUN_FILE}"]  # Not even a partial file.
    write_json(fs, f"{root}/_stage/parts/0.json", {"by": "holder"}, second_a.guard(fs))
    assert json.loads(fs.cat_file(f"{root}/_stage/parts/0.json")) == {"by": "holder"}


def test_a_claim_from_before_run_ids_is_resumed_and_fences_too(output):
    fs, root = output
    put(fs, f"{root}/{RUN_FILE}", json.dumps({"run": "A", "version": CLAIM_VERSION}).encode())
    old = claim(fs, root, {"run": "A"})
    old.check(fs)
    claim(fs, root, {"run": "B"}, force=True)
    with pytest.raises(Superseded):
        old.check(fs)


def test_without_an_atomic_create_the_claim_still_works_and_warns(caplog, tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/claims-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="pipeline.claims"):
        claim(fs, root, {"run": "A"})
        with pytest.raises(OutputInUse):
            claim(fs, root, {"run": "B"})
    assert "could both claim this output" in caplog.text
    assert read_claim(fs, root) == {"run": "A"}


def test_an_s3_store_without_conditional_writes_falls_back_and_warns(
    caplog, monkeypatch, s3_server, bucket
):
    fs = s3_client(s3_server)

    def not_implemented(*args, **kwargs) -> None:  # What s3fs makes of a 501 answer.
        raise OSError(errno.ENOSYS, "NotImplemented")

    monkeypatch.setattr(fs, "pipe_file", not_implemented)
    root = f"{bucket}/output"
    with caplog.at_level(logging.WARNING, logger="pipeline.claims"):
        claim(fs, root, {"run": "A"})
        with pytest.raises(OutputInUse):
            claim(fs, root, {"run": "B"})
    assert "does not support conditional writes" in caplog.text
    assert read_claim(fs, root) == {"run": "A"}
