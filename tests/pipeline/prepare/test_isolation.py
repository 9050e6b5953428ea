"""Crash isolation: a decoder that kills its process costs only the file it was decoding.

The crash is real: a `sitecustomize.py` put first on the child's PYTHONPATH wraps
`soundfile.SoundFile.__init__` so that opening a path containing "crashme" calls
`os.abort()` (SIGABRT, as a native decoder crash would). Product code has no test hooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.prepare.isolation import UnitFailed, run_unit_isolated
from pipeline.prepare.records import SongSource
from pipeline.prepare.unit import Unit, load_marker
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import claimed, read_samples, shard_files, small_config, write_song

CRASHING_SITECUSTOMIZE = textwrap.dedent(
    """
    import os

    if os.environ.get("CRASH_AT_STARTUP"):
        os.abort()
    if os.environ.get("EXIT_IN_SONG"):
        import atexit
        import pipeline.prepare.unit

        _prepare_song = pipeline.prepare.unit._prepare_song

        def _failing(song, *args):
            if "exitme" in song.song_id:
                raise SystemExit(3)  # A Python-level unit failure, not a crash.
            return _prepare_song(song, *args)

        pipeline.prepare.unit._prepare_song = _failing

    import soundfile

    _original_init = soundfile.SoundFile.__init__

    def _init(self, file, *args, **kwargs):
        if "crashme" in str(file):
            os.abort()
        _original_init(self, file, *args, **kwargs)

    soundfile.SoundFile.__init__ = _init
    """
)


@pytest.fixture
def crashing_decoder(tmp_path, monkeypatch):
    """Child Python processes started during the test crash on files named *crashme*."""
    hook_dir = tmp_path / "crash-hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(CRASHING_SITECUSTOMIZE)
    path = [str(hook_dir), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    return hook_dir


def _songs(corpus, names):
    songs = []
    for seed, name in enumerate(names):
        path = os.path.join(corpus, f"{name}.flac")
        write_song(path, seconds=2.0, seed=seed)
        songs.append(SongSource(name, path))
    return songs


def test_a_song_that_crashes_the_decoder_is_rejected_and_the_rest_complete(
    tmp_path, scratch, crashing_decoder
):
    songs = _songs(tmp_path, ["alpha", "beta-crashme", "gamma", "delta-crashme", "omega"])
    unit = Unit(3, tuple(songs))
    output = str(tmp_path / "out")
    config = small_config(scratch)

    result = run_unit_isolated(unit, config, output, claimed(output))

    crashed = {r.song_id: r for r in result.rejects}
    assert set(crashed) == {"beta-crashme", "delta-crashme"}
    for song_id, reject in crashed.items():
        assert reject.stage == "decode"
        assert "crashed" in reject.reason and "SIGABRT" in reject.reason
        assert reject.path.endswith(f"{song_id}.flac")
    assert (result.songs, result.songs_ok, result.segments) == (5, 3, 6)
    keys = [s.key for s in read_samples(shard_files(output))]
    assert keys == [f"{song}_{i:05d}" for song in ("alpha", "gamma", "omega") for i in (0, 1)]
    assert [os.path.basename(p) for p in shard_files(output)] == ["000003-0000.tar"]
    assert load_marker(output, unit, config.storage) == result


def test_a_crash_outside_any_song_fails_the_unit_with_the_exit_status(
    tmp_path, scratch, crashing_decoder, monkeypatch
):
    monkeypatch.setenv("CRASH_AT_STARTUP", "1")
    output = str(tmp_path / "out")
    unit = Unit(0, tuple(_songs(tmp_path, ["fine"])))
    with pytest.raises(UnitFailed, match="unit 0 failed with exit status -6"):
        run_unit_isolated(unit, small_config(scratch), output, claimed(output))


def test_a_python_failure_during_a_song_fails_the_unit_without_blaming_the_song(
    tmp_path, scratch, crashing_decoder, monkeypatch
):
    """Only a signal is a decoder crash; an exit status means the unit failed (storage...)."""
    monkeypatch.setenv("EXIT_IN_SONG", "1")
    output = str(tmp_path / "out")
    unit = Unit(0, tuple(_songs(tmp_path, ["fine", "song-exitme"])))
    with pytest.raises(UnitFailed, match="exit status 3"):
        run_unit_isolated(unit, small_config(scratch), output, claimed(output))


def test_without_crashes_the_isolated_result_equals_the_in_process_one(tmp_path, scratch):
    from pipeline.prepare.unit import prepare_unit

    unit = Unit(0, tuple(_songs(tmp_path, ["one", "two"])))
    config = small_config(scratch)
    outputs = [str(tmp_path / "isolated"), str(tmp_path / "direct")]
    isolated = run_unit_isolated(unit, config, outputs[0], claimed(outputs[0]))
    direct = prepare_unit(unit, config, outputs[1], claimed(outputs[1]))
    assert isolated.shards == direct.shards
    assert (isolated.songs_ok, isolated.segments, isolated.rejects) == (2, 4, [])


SUPERVISOR = """
import os, subprocess, sys, time
module = "pipeline.prepare.isolation"
child = subprocess.Popen(
    [sys.executable, "-m", module, sys.argv[1], sys.argv[2], str(os.getpid())],
    stdin=int(sys.argv[3]),  # The test holds the other end: the child waits for its job.
)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_unit_child_dies_with_its_supervisor(tmp_path):
    # A job stopped by a signal (or a lost Ray worker) must not leave a unit writing shards.
    job_reader, job_writer = os.pipe()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / "journal"), str(tmp_path / "result"),
         str(job_reader)],
        stdout=subprocess.PIPE, text=True, pass_fds=(job_reader,),
    )  # fmt: skip
    os.close(job_reader)
    child = int(supervisor.stdout.readline())
    time.sleep(3)  # Let the child get past its imports to where it waits for the job.
    assert Path(f"/proc/{child}").exists()
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.close(job_writer)
    assert not _alive(child), "the unit's child outlived its supervisor"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # A zombie has exited; only its parent (init now) reaps it.
