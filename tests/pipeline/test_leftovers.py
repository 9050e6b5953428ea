"""What killed runs leave behind is removed by the next run; live runs' files are kept.

Scratch directories are named after their owner process; one whose owner is gone (or whose
pid now belongs to another process) is removed when the next unit creates its own. Partial
files in an output are removed once a run of that output is complete. The workers of a run
whose output a forced run of another config has claimed publish nothing more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from audio_codecs.base import CodecSpec
from jobs.benchmarks.fault_sessions import kill_session
from pipeline.io import PARTIAL, remove_partials
from pipeline.prepare.isolation import run_unit_isolated
from pipeline.prepare.records import SongSource
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import UNITS_DIR, Unit
from pipeline.scratch import SCRATCH_DIR, owned_scratch, owner_tag
from pipeline.tokenize.stage import TokenizeConfig, tokenize_shards
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import claimed, read_samples, small_config, write_song


def _dead_owner_tag() -> str:
    """The scratch name prefix of a process that has exited, recorded while it ran."""
    process = subprocess.Popen(["sleep", "60"])
    tag = owner_tag(process.pid)
    process.kill()
    process.wait()
    return tag


def _reused_pid_tag() -> str:
    """Our own pid with another start time: an owner whose pid was given to us since."""
    pid, start, rest = owner_tag(os.getpid()).split("-", 2)
    return f"{pid}-{int(start) - 1}-{rest}"


def _partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if PARTIAL in p.name)


def test_scratch_is_removed_on_exit(tmp_path):
    with owned_scratch(str(tmp_path)) as scratch:
        assert Path(scratch).parent == tmp_path / SCRATCH_DIR
        assert Path(scratch).name.startswith(owner_tag(os.getpid()))
        (Path(scratch) / "spool.f32").write_bytes(b"\0" * 1024)
    assert os.listdir(tmp_path / SCRATCH_DIR) == []


def test_new_scratch_removes_only_directories_whose_owner_is_gone(tmp_path):
    root = tmp_path / SCRATCH_DIR
    dead = root / f"{_dead_owner_tag()}dead"
    reused = root / f"{_reused_pid_tag()}reused"
    live = root / f"{owner_tag(os.getpid())}live"
    pid, start, _ = _dead_owner_tag().split("-", 2)
    other_host = root / f"{pid}-{start}-elsewhere.invalid-x"  # Its pids are not ours to check.
    unrelated = root / "notes"
    for directory in (dead, reused, live, other_host, unrelated):
        (directory / "prepare-unit-000000-x").mkdir(parents=True)
        (directory / "prepare-unit-000000-x" / "000000-0000.tar.partial").write_bytes(b"x")

    with owned_scratch(str(tmp_path)) as scratch:
        assert sorted(root.iterdir()) == sorted([live, other_host, unrelated, Path(scratch)])


def test_remove_partials_touches_only_the_named_outputs(tmp_path):
    owned = [tmp_path / "shards" / f"000000-0000.tar{PARTIAL}7",
             tmp_path / "_prepare" / "units" / f"000000.json{PARTIAL}7",
             tmp_path / f"manifest.json{PARTIAL}7"]  # fmt: skip
    others = [tmp_path / f"notes.txt{PARTIAL}7", tmp_path / "shards" / "000000-0000.tar"]
    for path in owned + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    remove_partials(LocalFileSystem(), str(tmp_path), ["shards", "_prepare", "manifest.json"])
    assert [p for p in owned + others if p.exists()] == others


KILLABLE_UNIT = """
import sys
from pipeline.prepare.isolation import run_unit_isolated
from pipeline.prepare.records import SongSource
from pipeline.prepare.unit import Unit
from tests.pipeline.helpers import claimed, small_config

song, scratch, output = sys.argv[1:]
unit = Unit(0, (SongSource("long", song),))
run_unit_isolated(unit, small_config(scratch), output, claimed(output))
"""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"  # A zombie has finished.


def _wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the unit's child")
def test_the_next_unit_removes_the_scratch_of_a_killed_one(tmp_path):
    song = tmp_path / "long.flac"
    write_song(str(song), seconds=120.0, rate=44_100)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_UNIT, str(song), str(scratch), str(tmp_path / "out")],
        cwd=REPO_ROOT,
    )

    def spools() -> list[Path]:
        return list((scratch / SCRATCH_DIR).glob("*/prepare-unit-*/*.f32"))

    _wait_for(spools, 60, "the unit to start decoding")
    child = int(Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text())
    supervisor.kill()
    supervisor.wait()
    _wait_for(lambda: not _running(child), 10, "the unit's child to die with its supervisor")
    (left,) = (scratch / SCRATCH_DIR).iterdir()
    assert spools(), "the killed unit left its spool behind"

    songs = [SongSource("short", str(tmp_path / "short.flac"))]
    write_song(songs[0].source, seconds=1.0)
    output = str(tmp_path / "out")
    result = run_unit_isolated(Unit(1, tuple(songs)), small_config(str(scratch)), output,
                               claimed(output))  # fmt: skip
    assert result.segments == 1
    assert not left.exists() and os.listdir(scratch / SCRATCH_DIR) == []


@pytest.fixture(scope="module")
def prepared_over_leftovers(ray_local, tmp_path_factory) -> dict[str, Path]:
    """A prepare run into an output and a scratch dir where a killed run left files."""
    base = tmp_path_factory.mktemp("leftovers")
    for seed, seconds in enumerate([3.0, 2.5]):
        write_song(str(base / "corpus" / f"song{seed}.flac"), seconds=seconds, seed=seed)
    root = base / "scratch" / SCRATCH_DIR
    dead = root / f"{_dead_owner_tag()}killed"
    (dead / "prepare-unit-000000-x").mkdir(parents=True)
    (dead / "prepare-unit-000000-x" / "tmp1234.f32").write_bytes(b"\0" * 4096)
    (dead / "journal").write_text("start song0\n")
    live = root / f"{owner_tag(os.getpid())}running"
    live.mkdir()
    (live / "tmp5678.f32").write_bytes(b"\0" * 4096)
    output = base / "prepared"
    stale = [output / "shards" / f"000000-0000.tar{PARTIAL}1",
             output / f"manifest.json{PARTIAL}1",
             output / "_prepare" / "units" / f"000001.json{PARTIAL}1"]  # fmt: skip
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")

    config = small_config(str(base / "scratch"), segment_seconds=2.0, min_tail_seconds=0.4,
                          songs_per_unit=1)  # fmt: skip
    summary = prepare_corpus(str(base / "corpus"), str(output), config)
    assert summary.failures == [] and summary.segments == 4
    return {"base": base, "output": output, "dead": dead, "live": live, "root": root}


@pytest.mark.integration
def test_prepare_removes_a_killed_runs_leftovers_and_keeps_a_live_runs_scratch(
    prepared_over_leftovers,
):
    paths = prepared_over_leftovers
    assert not paths["dead"].exists()
    assert (paths["live"] / "tmp5678.f32").exists()
    assert list(paths["root"].iterdir()) == [paths["live"]]  # This run's scratch is gone too.
    assert _partials(paths["output"]) == []
    assert sorted(p.name for p in (paths["output"] / "shards").iterdir()) == [
        "000000-0000.tar", "000001-0000.tar"
    ]  # fmt: skip


@pytest.mark.integration
def test_a_tokenize_rerun_removes_partials_a_killed_run_left(prepared_over_leftovers):
    root = prepared_over_leftovers["base"] / "tokens"
    output = root / "mucodec"
    config = TokenizeConfig(codecs=(CodecSpec("mucodec", preset="tiny"),), batch_size=4,
                            shards_per_part=1)  # fmt: skip
    first = tokenize_shards(str(prepared_over_leftovers["output"]), str(root), config)["mucodec"]
    assert first.parts_unfinished == 0 and first.segments == 4
    stale = [output / f"codebook_stats.png{PARTIAL}1",
             output / "tokens" / f"part-000000.parquet{PARTIAL}1",
             output / "_tokenize" / "parts" / f"000001.json{PARTIAL}1"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"half")

    rerun = tokenize_shards(str(prepared_over_leftovers["output"]), str(root), config)["mucodec"]

    assert rerun.parts_run == 0 and rerun.parts_already_done == 2
    assert _partials(output) == []
    assert (output / "codebook_stats.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.integration
def test_a_run_replaced_by_a_forced_run_publishes_nothing_more(ray_local, tmp_path):
    """A job whose output a forced run of another config claims while its units are at work:
    its workers (like those a killed job leaves running) publish nothing more, and the
    forced run ends with its own shards and markers only."""
    corpus, output, scratch = tmp_path / "corpus", tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    for seed in range(4):
        write_song(str(corpus / f"song{seed}.flac"), seconds=4.0, seed=seed)
    replaced = subprocess.Popen(
        [sys.executable, "-m", "jobs.prepare", "--input", str(corpus), "--output", str(output),
         "--segment-seconds", "1", "--songs-per-unit", "1", "--num-cpus", "2",
         "--scratch-dir", str(scratch)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: replaced.poll() is None and any((output / UNITS_DIR).glob("*.json")),
                  180, "the first run's units to be at work")  # fmt: skip
        stderr: list[str] = []

        def once_the_replaced_run_ends(done: int, files: int) -> None:
            # The forced run has claimed the output; it reads no marker before this returns.
            if not stderr:
                stderr.append(replaced.communicate(timeout=180)[1])

        # Same units (one song each): a marker of the replaced run would pass for the new one's.
        config = small_config(str(scratch), segment_seconds=2.0, songs_per_unit=1)
        summary = prepare_corpus(str(corpus), str(output), config, force=True,
                                 fingerprint_progress=once_the_replaced_run_ends)  # fmt: skip
    finally:
        kill_session(replaced.pid)  # What is left of its Ray, or all of it if the test failed.

    assert replaced.returncode == 2 and "another run has claimed this output" in stderr[0]
    assert summary.failures == [] and summary.units_already_done == 0 and summary.segments == 8
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["config"]["segment"]["segment_seconds"] == 2.0
    listed = {s["name"]: s for s in manifest["shards"]}
    assert sorted(listed) == sorted(p.name for p in (output / "shards").iterdir())
    samples = read_samples([str(output / "shards" / name) for name in sorted(listed)])
    assert len(samples) == 8 and {s.meta["duration_s"] for s in samples} == {2.0}
    markers = sorted((output / UNITS_DIR).iterdir())
    assert [p.name for p in markers] == [f"{index:06d}.json" for index in range(4)]
    for marker in markers:
        for shard in json.loads(marker.read_text())["shards"]:
            assert shard == listed[shard["name"]] and shard["samples"] == 2
