"""Resume after a stop and after a crash: nothing lost or doubled, finished units kept.

The job runs as `python -m jobs.prepare` in a subprocess with one song per unit. Once some
unit markers exist it gets SIGTERM (a supervisor stopping it): it must stop promptly with
status 143 and one line saying a rerun resumes. The rerun, once it has finished a unit of
its own, and every process it started (Ray's daemons and workers, the crash-isolation
children) get SIGKILL at once, as if the machine had died. The third run completes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.io import StorageOptions
from pipeline.prepare.corpus import discover
from pipeline.prepare.unit import UNITS_DIR
from tests.pipeline.helpers import read_samples, write_song

pytestmark = pytest.mark.integration

SONGS = 8
SECONDS = [5.0 + i % 3 for i in range(SONGS)]  # 2 s segments, 0.5 s tails kept: 3 or 4 each.


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc (no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _prepare_command(corpus: Path, output: Path, scratch: Path) -> list[str]:
    return [
        sys.executable, "-m", "jobs.prepare", "--input", str(corpus), "--output", str(output),
        "--segment-seconds", "2", "--min-tail-seconds", "0.5", "--songs-per-unit", "1",
        "--shard-max-samples", "4", "--num-cpus", "2", "--scratch-dir", str(scratch),
    ]  # fmt: skip


def _expected_keys(corpus: Path) -> set[str]:
    songs = discover(str(corpus), StorageOptions()).songs
    by_name = {Path(song.source).name: song.song_id for song in songs}
    keys = set()
    for i, seconds in enumerate(SECONDS):
        segments = int(seconds // 2) + (seconds % 2 >= 0.5)
        keys |= {f"{by_name[f'song{i:02d}.flac']}_{j:05d}" for j in range(segments)}
    return keys


def _markers(output: Path) -> dict[str, int]:
    """The unit markers written so far, by name, with their modification times."""
    return {p.name: p.stat().st_mtime_ns for p in (output / UNITS_DIR).glob("*.json")}


def _wait_for_markers(job: subprocess.Popen, output: Path, more_than: int) -> None:
    deadline = time.monotonic() + 120
    while len(_markers(output)) <= more_than:
        assert job.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, "no unit finished in time"
        time.sleep(0.02)


def test_a_stopped_then_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    corpus, output, scratch = tmp_path / "corpus", tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    for i, seconds in enumerate(SECONDS):
        write_song(str(corpus / f"song{i:02d}.flac"), seconds, rate=44_100, seed=i)
    command = _prepare_command(corpus, output, scratch)

    # SIGTERM: a prompt stop with status 143 and one line that says what to do.
    stopped_job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)  # fmt: skip
    try:
        _wait_for_markers(stopped_job, output, more_than=0)
        stopped_job.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, stderr = stopped_job.communicate(timeout=60)
    finally:
        if stopped_job.poll() is None:
            os.killpg(stopped_job.pid, signal.SIGKILL)
    assert stopped_job.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert time.monotonic() - stopped < 30
    assert "error: interrupted by SIGTERM" in stderr and "rerun the same command" in stderr
    after_stop = _markers(output)
    assert 1 <= len(after_stop) < SONGS, "the job was not stopped midway"

    # SIGKILL of the rerun and everything it started, once it finished a unit of its own.
    log = (tmp_path / "killed.log").open("wb")
    job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_markers(job, output, more_than=len(after_stop))
        victims = [job.pid, *_descendants(job.pid)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):  # Already gone.
                os.kill(pid, signal.SIGKILL)
        job.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in victims)
    finally:
        if job.poll() is None:
            job.kill()
        log.close()

    done_before = _markers(output)
    assert len(after_stop) < len(done_before) < SONGS, "the kill must interrupt the run"
    assert not (output / "summary.json").exists()

    rerun = subprocess.run(command, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]

    summary = json.loads((output / "summary.json").read_text())
    assert summary["units"] == SONGS
    assert summary["units_already_done"] == len(done_before)
    assert summary["units_run"] == SONGS - len(done_before)
    assert summary["units_failed"] == 0
    # Units finished before the stop and the kill were not redone.
    assert {name: _markers(output)[name] for name in done_before} == done_before

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] is True
    listed = sorted(s["name"] for s in manifest["shards"])
    on_disk = sorted(p.name for p in (output / "shards").iterdir())
    assert listed == on_disk
    keys = [s.key for s in read_samples([str(output / "shards" / n) for n in listed])]
    expected = _expected_keys(corpus)
    assert len(keys) == len(set(keys)), "a key appears twice"
    assert set(keys) == expected
    assert summary["segments"] == manifest["samples"] == len(expected)
    assert summary["songs_ok"] == SONGS
