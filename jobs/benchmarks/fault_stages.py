"""One stage of a fault round: run the real job, inject its fault, rerun it until it exits 0.

A job is a real `python -m jobs.<stage>` subprocess in its own session; a timed fault is sent
a drawn delay after the stage's first completion marker, so that it lands while work is in
flight.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from jobs.benchmarks.fault_sessions import Resources, kill_session, small_disk, sweep_session

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("sigkill", "sigterm", "full-disk")
STAGES = ("prepare", "tokenize")
MARKER_DIRS = {"prepare": "_prepare/units", "tokenize": "_tokenize/parts"}
EXPECTED_STATUS = {None: 0, "sigkill": -signal.SIGKILL, "sigterm": 128 + signal.SIGTERM,
                   "full-disk": 1}  # fmt: skip
MAX_RERUNS = 3
JOB_TIMEOUT_S = 600.0  # A stage of this corpus takes well under a minute, even under load.
STOP_TIMEOUT_S = 60.0  # How long a SIGTERM'd job may take to stop.


@dataclass(frozen=True)
class Fault:
    """One injected fault: what, in which stage, and when.

    Attributes:
        kind: One of KINDS.
        stage: One of STAGES.
        fraction: Of the stage's window after its first marker, for timed faults.
    """

    kind: str  # One of KINDS.
    stage: str  # One of STAGES.
    fraction: float  # Of the stage's window after its first marker, for timed faults.


@dataclass
class JobRun:
    """One run of a job subprocess: its command, log, exit status and marker timing."""

    command: list[str]
    log: str
    status: int
    seconds: float
    first_marker_s: float | None  # From the start; None when no marker appeared.
    last_marker_s: float | None  # When the last marker it wrote appeared, from the start.
    signalled: bool  # A timed fault was sent while the job still ran.
    markers_at_fault: int | None  # Completion markers written when it was sent.
    lingering: int  # Processes of its session left after it exited.


def _job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # A private Ray each.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    return env


def run_job(
    command: list[str], log: str, markers: str, resources: Resources,
    fault: str | None = None, delay: float = 0.0,
) -> JobRun:  # fmt: skip
    """Run one job in its own session; send `fault` `delay` s after its first marker."""
    started = time.monotonic()
    with open(log, "w") as handle:
        job = subprocess.Popen(command, cwd=REPO_ROOT, env=_job_env(), stdout=handle,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    resources.sessions.add(job.pid)
    first_marker = last_marker = signalled_at = markers_at_fault = None
    seen = 0
    deadline = started + JOB_TIMEOUT_S
    status = None
    while status is None:
        now = time.monotonic()
        if (count := len(marker_times(markers))) > seen:
            seen, last_marker = count, now - started
            first_marker = last_marker if first_marker is None else first_marker
        due = first_marker is not None and now >= started + first_marker + delay
        if fault and signalled_at is None and due:
            signalled_at = now
            markers_at_fault = len(marker_times(markers))
            if fault == "sigkill":  # A machine that dies: the whole tree at once.
                kill_session(job.pid)
            else:  # A supervisor's stop: the job alone; stopping its tree is its job.
                job.send_signal(signal.SIGTERM)
                deadline = min(deadline, now + STOP_TIMEOUT_S)
        if now > deadline:
            kill_session(job.pid)
            job.wait(timeout=30)
            status = 124  # As timeout(1) reports it.
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            status = job.wait(timeout=0.1)
    seconds = time.monotonic() - started
    lingering = sweep_session(job.pid)
    resources.sessions.discard(job.pid)
    signalled = signalled_at is not None
    return JobRun(command, log, status, seconds, first_marker, last_marker, signalled,
                  markers_at_fault, lingering)  # fmt: skip


@dataclass
class Soak:
    """What every round shares."""

    corpus: str
    workdir: str
    scale: float
    resources: Resources
    disk_bytes: int
    # Corpus-relative paths prepare must reject; a given corpus learns them from its clean run.
    legitimate: set[str] = field(default_factory=set)
    # Per stage: the shortest time between its first and last markers seen in a clean run
    # (while work is in flight; the shortest, so that a timed fault seldom comes after the
    # work when load drops), and how many markers a complete run writes.
    windows: dict[str, float] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)

    @property
    def scratch(self) -> str:
        """The scratch directory every unfaulted prepare run gets."""
        return os.path.join(self.workdir, "scratch")

    def observe(self, stage: str, run: JobRun, markers: int) -> None:
        """Learn from a clean, complete run of `stage`."""
        if run.status == 0 and run.first_marker_s is not None and run.last_marker_s is not None:
            window = max(0.5, run.last_marker_s - run.first_marker_s)  # Never zero: room to land.
            self.windows[stage] = min(window, self.windows.get(stage, window))
            self.markers[stage] = markers


def stage_command(stage: str, output: str, scratch: str, soak: Soak) -> list[str]:
    """The command line that runs `stage` into `output`'s prepared/ or tokens/.

    Args:
        stage: "prepare" or "tokenize".
        output: The round's output directory.
        scratch: Prepare's --scratch-dir.
        soak: The soak (its corpus).
    """
    prepared, tokens = os.path.join(output, "prepared"), os.path.join(output, "tokens")
    if stage == "prepare":
        # Two songs a unit: five units, so a fault can land between markers.
        args = ["--input", soak.corpus, "--output", prepared, "--songs-per-unit", "2",
                "--scratch-dir", scratch]  # fmt: skip
    else:  # One shard a part: a part per prepare unit with segments.
        args = ["--shards", prepared, "--output", tokens, "--config", "tiny",
                "--shards-per-part", "1"]  # fmt: skip
    return [sys.executable, "-m", f"jobs.{stage}", *args, "--num-cpus", "2"]


def marker_dir(stage: str, output: str) -> str:
    """The directory where `stage` writes its completion markers under `output`."""
    return os.path.join(output, "prepared" if stage == "prepare" else "tokens",
                        MARKER_DIRS[stage])  # fmt: skip


def marker_times(directory: str) -> dict[str, int]:
    """Each completion marker's mtime (ns) in `directory` by file name; {} if none."""
    with contextlib.suppress(FileNotFoundError):
        return {e.name: e.stat().st_mtime_ns for e in os.scandir(directory)
                if e.name.endswith(".json")}  # fmt: skip
    return {}


@dataclass
class StageRun:
    """A stage of a round: its first (faulted) run, each rerun, and what went wrong."""

    stage: str
    runs: list[JobRun] = field(default_factory=list)  # The first run, then each rerun.
    landed: bool = True  # The fault hit a running job (a timed one can come too late).
    redone: int = 0  # Completion markers a rerun rewrote: finished work done again.
    problems: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        """The exit status of each run, first run first."""
        return [run.status for run in self.runs]

    @property
    def reruns(self) -> int:
        """Runs after the first."""
        return max(0, len(self.runs) - 1)

    @property
    def lingering(self) -> int:
        """Processes that outlived their job, over every run."""
        return sum(run.lingering for run in self.runs)

    @property
    def done(self) -> bool:
        """Whether the last run exited 0."""
        return bool(self.runs) and self.runs[-1].status == 0


def _first_run(stage: str, output: str, log: str, fault: Fault | None, soak: Soak) -> JobRun:
    markers = marker_dir(stage, output)
    if fault and fault.kind == "full-disk":
        disk = os.path.join(output, "small-disk")
        with small_disk(disk, soak.disk_bytes, soak.resources):
            return run_job(stage_command(stage, output, disk, soak), log, markers,
                           soak.resources)  # fmt: skip
    command = stage_command(stage, output, soak.scratch, soak)
    if fault:
        delay = fault.fraction * soak.windows.get(stage, 0.0)
        return run_job(command, log, markers, soak.resources, fault.kind, delay)
    return run_job(command, log, markers, soak.resources)


def _check_run(result: StageRun, run: JobRun, expected: int) -> None:
    if run.status != expected:
        result.problems.append(f"exit {run.status}, expected {expected}: "
                               f"{' '.join(run.command)}\n{tail(run.log)}")  # fmt: skip
    if run.lingering:
        result.problems.append(f"{run.lingering} processes of its session outlived "
                               f"{' '.join(run.command[2:4])} (killed)")  # fmt: skip


def run_stage(stage: str, output: str, fault: Fault | None, soak: Soak, logs: str) -> StageRun:
    """Run `stage` once with `fault`, then rerun it without until it exits 0."""
    result = StageRun(stage)
    first = _first_run(stage, output, os.path.join(logs, f"{stage}-0.log"), fault, soak)
    result.runs.append(first)
    markers = marker_dir(stage, output)
    if fault:
        result.landed = first.status != 0 if fault.kind == "full-disk" else first.signalled
        # A SIGTERM after the last marker finds the job done but for its summary: exit 0
        # is right then, and the fault came too late to test anything.
        finished = first.markers_at_fault == len(marker_times(markers))
        if fault.kind == "sigterm" and first.status == 0 and finished:
            result.landed = False
    _check_run(result, first, EXPECTED_STATUS[fault.kind if fault and result.landed else None])
    if fault is None:
        soak.observe(stage, first, len(marker_times(markers)))
    while not result.done and result.reruns < MAX_RERUNS:
        before = marker_times(markers)
        log = os.path.join(logs, f"{stage}-{len(result.runs)}.log")
        run = run_job(stage_command(stage, output, soak.scratch, soak), log, markers,
                      soak.resources)  # fmt: skip
        result.runs.append(run)
        _check_run(result, run, 0)
        after = marker_times(markers)
        result.redone += sum(1 for name, mtime in before.items() if after.get(name) != mtime)
    if result.redone:
        result.problems.append(f"{stage}: reruns rewrote {result.redone} completion markers")
    return result


def tail(path: str, lines: int = 15) -> str:
    """The last `lines` lines of the log at `path`, indented for a report."""
    with open(path, errors="replace") as handle:
        return "".join("    | " + line for line in handle.readlines()[-lines:]).rstrip()


def run_stages(output: str, fault: Fault | None, soak: Soak) -> list[StageRun]:
    """Runs every stage into a fresh `output`, `fault` in its stage; stops at an unfinished one.

    Returns:
        The stages run, in order.
    """
    shutil.rmtree(output, ignore_errors=True)  # A fresh output every round.
    logs = os.path.join(output, "logs")
    os.makedirs(logs)
    stages: list[StageRun] = []
    for stage in STAGES:
        stages.append(run_stage(stage, output, fault if fault and fault.stage == stage else None,
                                soak, logs))  # fmt: skip
        if not stages[-1].done:
            break  # Tokenizing an unfinished prepare output proves nothing.
    return stages
