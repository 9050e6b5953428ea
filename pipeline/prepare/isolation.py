"""Crash isolation: run a unit in a child process so a decoder crash costs one file.

libsndfile and ffmpeg are native code and can take their process down with a signal, which
no `except` can catch (ffmpeg is a subprocess already; libsndfile runs in ours). The child
journals each song it starts and finishes. When it dies, the supervisor blames the song that
was in flight, records it as a reject, and runs the unit again without it. The retry rewrites
the unit's shards from scratch under the same names, so nothing is duplicated.

Child protocol: `python -m pipeline.prepare.isolation JOURNAL RESULT SUPERVISOR_PID` with the job on
stdin as JSON. The child dies with its supervisor (Linux), so a job stopped by a signal or a
lost worker leaves no unit writing behind it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys

from pipeline.claims import Fence
from pipeline.errors import EnvironmentFailure
from pipeline.prepare.records import Reject
from pipeline.prepare.unit import PrepareConfig, Unit, UnitResult, prepare_unit
from pipeline.scratch import owned_scratch

_PR_SET_PDEATHSIG = 1  # From <sys/prctl.h>.
# The child's status for "the environment failed" (EX_TEMPFAIL): the unit is retried by a
# rerun, and its one-line reason is the last line of the child's stderr.
ENVIRONMENT_EXIT = 75


class UnitFailed(RuntimeError):
    """The unit could not complete for a reason other than one song crashing the child."""


def run_unit_isolated(
    unit: Unit, config: PrepareConfig, output_url: str, fence: Fence
) -> UnitResult:
    """Prepare `unit` in child processes, skipping each song that crashes one.

    The children publish only while the output's claim carries `fence`'s run.
    """
    crashed: dict[str, Reject] = {}
    by_id = {song.song_id: song for song in unit.songs}
    with owned_scratch(config.scratch_dir) as tmp:
        journal = os.path.join(tmp, "journal")
        result_path = os.path.join(tmp, "result.json")
        # The child's spools and shards in progress go here too: a child that crashes cannot
        # clean up, and this directory is removed with everything in it.
        child_config = dataclasses.replace(config, scratch_dir=tmp)
        while True:
            job = {
                "unit": unit.to_dict(),
                "config": child_config.to_dict(),
                "output_url": output_url,
                "fence": fence.to_dict(),
                "skip": {song_id: r.to_dict() for song_id, r in crashed.items()},
            }
            completed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.prepare.isolation",
                    journal,
                    result_path,
                    str(os.getpid()),
                ],
                input=json.dumps(job).encode(),
                stderr=subprocess.PIPE,
                check=False,
            )
            if completed.returncode == 0:
                with open(result_path) as handle:
                    return UnitResult.from_dict(json.load(handle))
            culprit = _song_in_flight(journal)
            # Only death by a signal is a native crash. A Python error exits with a status:
            # per-song errors are already rejects inside the child, so a status means the
            # unit itself failed (storage, disk) and no song is to blame.
            if completed.returncode == ENVIRONMENT_EXIT:
                reason = completed.stderr.decode(errors="replace").strip().splitlines()[-1]
                raise UnitFailed(f"unit {unit.index}: {reason}")
            if completed.returncode > 0 or culprit is None or culprit in crashed:
                tail = completed.stderr.decode(errors="replace").strip()[-2000:]
                raise UnitFailed(
                    f"unit {unit.index} failed with exit status {completed.returncode}:\n{tail}"
                )
            song = by_id[culprit]
            crashed[culprit] = Reject(
                song.source,
                "decode",
                f"decoder crashed the worker process ({_describe_exit(completed.returncode)})",
                culprit,
            )


def _song_in_flight(journal: str) -> str | None:
    """The song the child had started but not finished when it died."""
    if not os.path.exists(journal):
        return None
    in_flight = None
    with open(journal) as handle:
        for line in handle:
            event, _, song_id = line.rstrip("\n").partition(" ")
            in_flight = song_id if event == "start" else None
    return in_flight


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _exit_with(parent_pid: int) -> None:
    """Die when the supervisor does: a stopped job must not leave a unit writing behind it."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # The supervisor died before the line above.
        os._exit(1)


def _child_main(journal_path: str, result_path: str, parent_pid: int) -> None:
    _exit_with(parent_pid)
    job = json.loads(sys.stdin.buffer.read())
    unit = Unit.from_dict(job["unit"])
    config = PrepareConfig.from_dict(job["config"])
    fence = Fence.from_dict(job["fence"])
    skip = {song_id: Reject.from_dict(r) for song_id, r in job["skip"].items()}
    with open(journal_path, "w") as journal:

        def on_song(event: str, song_id: str) -> None:
            journal.write(f"{event} {song_id}\n")
            journal.flush()  # Must be in the kernel before native code gets a chance to crash.

        try:
            result = prepare_unit(unit, config, job["output_url"], fence, skip, on_song)
        except EnvironmentFailure as error:
            print(error, file=sys.stderr)
            sys.exit(ENVIRONMENT_EXIT)
    with open(result_path, "w") as handle:
        json.dump(result.to_dict(), handle)


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
