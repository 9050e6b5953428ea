"""A hostile catalog: no entry can stop, hang or rename the run.

One generated tree holds every kind of entry a real catalog can: regular songs under names
that are not UTF-8, hold a newline, are 255 bytes long, start with a dash, or differ only in
Unicode normalisation; links to a file, to a directory, to nothing, outside the roots, to a
device, in loops of one, two and three; a FIFO and a socket. `prepare` runs over it from the
directory (as the real job, which must end by itself and exit 0) and from a manifest, and
every entry ends segmented or rejected with its reason; a rerun writes the same output.
Directories that vanish or may not be read are walked in `walk_local_tree` directly, and an
object-store listing with directory markers and keys that are not UTF-8 goes through
discovery.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from jobs import prepare as prepare_job
from pipeline.io import StorageOptions
from pipeline.prepare.corpus import derive_song_id, discover
from pipeline.prepare.entries import walk_local_tree
from pipeline.prepare.fingerprint import resolve_duplicates
from pipeline.prepare.records import SongSource
from pipeline.prepare.stage import prepare_corpus
from testing.synth import synth_song, write_audio
from tests.pipeline.helpers import read_samples, shard_files, small_config

JOB_SECONDS = 240  # The bound the job must end within (it takes ~15 s on 2 busy cores).
UNDECODABLE = b"music/caf\xe9-\xff\xfe.wav"
LONG_NAME = "music/" + "l" * 251 + ".wav"  # 255 bytes: the longest name Linux allows.

# Entry (relative, as bytes) -> the song's outcome: "song", or a reject's reason (the start
# of it) when the catalog is read as a directory.
SONGS = (
    b"music/track1.wav", b"music/track2.wav", UNDECODABLE, b"music/new\nline.wav",
    LONG_NAME.encode(), b"music/-dash.wav", "music/caf\u00e9.wav".encode(),
    "music/cafe\u0301.wav".encode(),
)  # fmt: skip
REJECTED = {
    b"links/to_track2.wav": "duplicate of music-track2-",
    b"links/outside.wav": "outside the allowed roots",
    b"links/outside-dir": "outside the allowed roots",
    b"links/zero.wav": "outside the allowed roots",
    b"links/broken.wav": "broken symlink: its target 'missing.wav' does not exist",
    b"links/self.wav": "symlink loop",
    b"links/a.wav": "symlink loop",
    b"links/b.wav": "symlink loop",
    b"links/x.wav": "symlink loop",
    b"links/y.wav": "symlink loop",
    b"links/z.wav": "symlink loop",
    b"fifo.wav": "not a regular file (fifo)",
    b"sock.wav": "not a regular file (socket)",
}
LYRICS_FIFO = b"music/track1.lrc"  # The song stays; its lyrics are a FIFO.


def _write_song(path: bytes, seed: int) -> None:
    """A 1.3 s song at `path`, whatever bytes its name holds (written under a plain name)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staged = os.path.join(os.path.dirname(path), b"staged.wav")
    write_audio(os.fsdecode(staged), synth_song(1.3, 48_000, 2, seed, 0.7), 48_000, "PCM_16")
    os.rename(staged, path)


def build_hostile_tree(root: Path, outside: Path) -> None:
    """Every kind of entry under `root`; `outside` holds what links lead out to."""
    base = os.fsencode(root)
    for seed, relative in enumerate(SONGS, start=1):
        _write_song(os.path.join(base, relative), seed)
    _write_song(os.fsencode(outside / "elsewhere.wav"), 99)
    links = root / "links"
    links.mkdir()
    (links / "to_track2.wav").symlink_to("../music/track2.wav")
    (links / "music").symlink_to("../music")  # Into the tree: its files keep their real ids.
    (links / "outside.wav").symlink_to(outside / "elsewhere.wav")
    (links / "outside-dir").symlink_to(outside)
    (links / "zero.wav").symlink_to("/dev/zero")
    (links / "broken.wav").symlink_to("missing.wav")
    (links / "self.wav").symlink_to("self.wav")
    for name, target in (("a", "b"), ("b", "a"), ("x", "y"), ("y", "z"), ("z", "x")):
        (links / f"{name}.wav").symlink_to(f"{target}.wav")
    os.mkfifo(root / "fifo.wav")
    os.mkfifo(os.path.join(base, LYRICS_FIFO))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(root / "sock.wav"))  # The socket file stays after the close.


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    place = tmp_path_factory.mktemp("hostile")
    (place / "outside").mkdir()
    build_hostile_tree(place / "catalog", place / "outside")
    return place / "catalog"


def _relative(path: str, root: Path) -> bytes:
    return os.path.relpath(os.fsencode(path), os.fsencode(root))


def _outcomes(output: Path, root: Path) -> dict[bytes, str]:
    """Entry -> "song" (segmented) or its reject's reason, from an output's files."""
    outcomes: dict[bytes, str] = {}
    for sample in read_samples(shard_files(str(output))):
        outcomes[_relative(sample.meta["source"], root)] = "song"
    for row in pq.read_table(output / "rejects.parquet").to_pylist():
        path = row["path_bytes"] or os.fsencode(row["path"])
        outcomes[_relative(os.fsdecode(path), root)] = row["reason"]
    return outcomes


def _assert_every_entry_accounted(outcomes: dict[bytes, str], expected: dict[bytes, str]):
    assert set(outcomes) == set(expected)
    for entry, reason in expected.items():
        assert outcomes[entry].startswith(reason), (entry, outcomes[entry])


def _job_args(catalog: str, output: Path, *extra: str) -> list[str]:
    return [
        "--input", catalog, "--output", str(output), "--segment-seconds", "1",
        "--min-tail-seconds", "0.25", "--songs-per-unit", "3", "--scratch-dir",
        str(output.parent), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def directory_run(hostile, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    """The real job over the tree, in its own process: it must end by itself."""
    output = tmp_path_factory.mktemp("hostile-out") / "prepared"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "jobs.prepare", *_job_args(str(hostile), output), "--num-cpus", "2"],
        capture_output=True,
        timeout=JOB_SECONDS,
    )
    return output, completed, time.monotonic() - started


@pytest.mark.integration
def test_the_job_ends_by_itself_and_accounts_for_every_entry(hostile, directory_run):
    output, completed, seconds = directory_run
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]
    assert seconds < JOB_SECONDS and b"Traceback" not in completed.stderr
    expected = {song: "song" for song in SONGS} | REJECTED
    expected[LYRICS_FIFO] = "not a regular file (fifo); song kept without these lyrics"
    _assert_every_entry_accounted(_outcomes(output, hostile), expected)
    summary = json.loads((output / "summary.json").read_text())
    assert (summary["songs_ok"], summary["songs_rejected"]) == (len(SONGS), len(REJECTED))


@pytest.mark.integration
def test_an_undecodable_name_keeps_its_bytes_and_a_stable_id(hostile, directory_run):
    output, _, _ = directory_run
    samples = [
        s for s in read_samples(shard_files(str(output)))
        if os.fsencode(s.meta["source"]).endswith(UNDECODABLE)
    ]  # fmt: skip
    assert len(samples) == 2  # 1.3 s in 1 s segments, the tail kept.
    sample = samples[0]
    assert os.fsencode(sample.meta["source"]) == os.path.join(os.fsencode(hostile), UNDECODABLE)
    digest = hashlib.sha1(UNDECODABLE).hexdigest()[:12]
    assert sample.meta["song_id"] == derive_song_id(os.fsdecode(UNDECODABLE))
    assert sample.meta["song_id"] == f"music-caf-{digest}"


@pytest.mark.integration
def test_a_rerun_of_the_job_writes_the_same_output(ray_local, hostile, directory_run):
    output, _, _ = directory_run
    before = _snapshot(output)
    args = prepare_job.build_parser().parse_args(_job_args(str(hostile), output))
    summary = prepare_corpus(str(hostile), str(output), prepare_job.config_from_args(args))
    assert (summary.units_run, summary.files_hashed) == (0, 0)
    assert _snapshot(output) == before


def _snapshot(output: Path) -> dict[str, bytes]:
    names = ["rejects.parquet", *(os.path.relpath(p, output) for p in shard_files(str(output)))]
    return {name: (output / name).read_bytes() for name in names}


@pytest.mark.integration
def test_a_manifest_of_the_same_entries_ends_with_each_accounted(ray_local, hostile, tmp_path):
    """Here the policy, then the fingerprint pass, decide: a manifest row is never walked."""
    entries = [*SONGS, *REJECTED, b"music", b"no-such-file.wav"]
    manifest = hostile / ".manifest.jsonl"  # Hidden: the directory runs do not see it.
    rows = [{"path": os.fsdecode(entry)} for entry in entries]
    rows[0]["lyrics_path"] = os.fsdecode(LYRICS_FIFO)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = small_config(str(tmp_path), songs_per_unit=3, allowed_roots=("/dev",))
    prepare_corpus(str(manifest), str(tmp_path / "out"), config)
    expected = (
        {song: "song" for song in SONGS}
        | REJECTED
        | {
            b"links/zero.wav": "not a regular file (character device)",
            b"links/broken.wav": "unreadable: file not found",
            b"music": "not a regular file (directory)",
            LYRICS_FIFO: "unreadable lyrics: NotARegularFile: not a regular file (fifo)",
            b"no-such-file.wav": "unreadable: file not found",
        }
    )
    _assert_every_entry_accounted(_outcomes(tmp_path / "out", hostile), expected)


# --- walking: vanishing and unreadable directories --------------------------------------------


def test_a_directory_that_vanishes_during_the_walk_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    for name in ("a/one.wav", "b/two.wav", "c/three.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    real_scandir = os.scandir

    def scandir_then_remove_b(path):
        if os.fspath(path) == str(tmp_path / "c"):  # b is listed, and walked after c.
            (tmp_path / "b/two.wav").unlink()
            (tmp_path / "b").rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_then_remove_b)
    tree = walk_local_tree(str(tmp_path), lambda path: None)
    assert sorted(os.path.relpath(p, tmp_path) for p in tree.files) == ["a/one.wav", "c/three.wav"]
    (unread,) = tree.unread.items()
    assert unread[0] == str(tmp_path / "b")
    assert unread[1].reason == "unreadable: vanished during the walk" and unread[1].may_hold_songs


def test_an_unreadable_directory_is_reported_and_the_walk_goes_on():
    """Walked by an unprivileged user, since root reads any directory."""
    with _world_readable_dir() as root:
        (root / "open").mkdir()
        (root / "open/song.wav").write_bytes(b"x")
        (root / "locked").mkdir()
        (root / "locked/hidden.wav").write_bytes(b"x")
        os.chmod(root / "locked", 0)
        files, unread = _walk_unprivileged(str(root))
    assert files == [str(root / "open/song.wav")]
    assert unread == {str(root / "locked"): "unreadable: permission denied"}


@contextlib.contextmanager
def _world_readable_dir() -> Iterator[Path]:
    """A temporary directory that an unprivileged user may enter (pytest's is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="hostile-walk-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for directory, _, _ in os.walk(path):
            os.chmod(directory, 0o755)
        shutil.rmtree(path)


def _walk_unprivileged(root: str) -> tuple[list[str], dict[str, str]]:
    """`walk_local_tree(root)` in a child that has dropped root's rights (as nobody)."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits.
        status = 1
        try:
            os.close(reader)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            tree = walk_local_tree(root, lambda path: None)
            walked = [tree.files, {p: u.reason for p, u in tree.unread.items()}]
            os.write(writer, json.dumps(walked).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    files, unread = json.loads(report)
    return files, unread


# --- which song keeps its bytes --------------------------------------------------------------


def test_the_real_path_keeps_the_song_wherever_its_links_sort(tmp_path):
    real, link = str(tmp_path / "z-real.wav"), str(tmp_path / "a-link.wav")
    Path(real).write_bytes(b"x")
    os.symlink(real, link)
    songs = (SongSource("link", link), SongSource("real", real))
    results = {real: {"sha256": "same", "error": None, "environment": False}}
    kept, rejects, _ = resolve_duplicates(songs, {"link": real, "real": real}, results)
    assert [s.song_id for s in kept] == ["real"]
    assert [(r.song_id, r.reason) for r in rejects] == [("link", "duplicate of real")]


def test_the_last_runs_keeper_keeps_its_bytes_when_a_copy_that_sorts_first_is_added():
    songs = (SongSource("copy", "/c/0-copy.wav"), SongSource("first", "/c/b-original.wav"))
    targets = {s.song_id: s.source for s in songs}
    results = {s.source: {"sha256": "same", "error": None, "environment": False} for s in songs}
    kept, _, _ = resolve_duplicates(songs, targets, results)
    assert [s.song_id for s in kept] == ["copy"]  # A fresh output: sorted order.
    kept, rejects, _ = resolve_duplicates(songs, targets, results, frozenset({"/c/b-original.wav"}))
    assert [s.song_id for s in kept] == ["first"]
    assert [(r.song_id, r.reason) for r in rejects] == [("copy", "duplicate of first")]


@pytest.mark.integration
def test_adding_links_copies_and_hard_links_renames_no_song(ray_local, tmp_path):
    catalog = tmp_path / "catalog"
    _write_song(os.fsencode(catalog / "m/song.wav"), 1)
    output, config = tmp_path / "out", small_config(str(tmp_path))
    prepare_corpus(str(catalog), str(output), config)
    (song_id,) = {s.meta["song_id"] for s in read_samples(shard_files(str(output)))}

    (catalog / "0").mkdir()
    (catalog / "0/link.wav").symlink_to("../m/song.wav")
    (catalog / "0/copy.wav").write_bytes((catalog / "m/song.wav").read_bytes())
    os.link(catalog / "m/song.wav", catalog / "0/hard.wav")
    summary = prepare_corpus(str(catalog), str(output), config)
    assert {s.meta["song_id"] for s in read_samples(shard_files(str(output)))} == {song_id}
    rejects = pq.read_table(output / "rejects.parquet").to_pylist()
    assert sorted((os.path.relpath(r["path"], catalog), r["reason"]) for r in rejects) == [
        (f"0/{name}.wav", f"duplicate of {song_id}") for name in ("copy", "hard", "link")
    ]
    assert summary.units_already_done == 1


# --- object-store listings -------------------------------------------------------------------


@pytest.mark.integration
def test_an_s3_listing_with_markers_and_undecodable_keys_is_accounted_for(s3_endpoint):
    bucket = f"hostile-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3 = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for key, body in (("a/song.wav", b"x"), ("a/", b""), ("b/marker.wav/", b""),
                      ("b/holds-data.wav/", b"zz")):  # fmt: skip
        s3.pipe_file(f"{bucket}/catalog/{key}", body)
    # A key of bytes that are not UTF-8, as a store on a POSIX disk can hold: only a raw
    # request can write it.
    host, port = s3_endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.request("PUT", f"/{bucket}/catalog/caf%E9.wav", body=b"latin-1")
    assert connection.getresponse().status == 200

    storage = StorageOptions(endpoint_url=s3_endpoint)
    discovery = discover(f"s3://{bucket}/catalog", storage)
    assert [s.source for s in discovery.songs] == [f"s3://{bucket}/catalog/a/song.wav"]
    assert sorted((r.path.rsplit("/catalog/", 1)[1], r.reason) for r in discovery.rejects) == [
        ("b/holds-data.wav/", "object key ends in '/' yet holds 2 bytes; not followed"),
        ("caf\ufffd.wav", "name is not valid UTF-8: the store lists its bytes as U+FFFD"),
    ]
