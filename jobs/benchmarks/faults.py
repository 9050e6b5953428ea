"""Fault-injection soak: nothing lost, nothing duplicated, and a rerun resumes.

Not run in CI: it takes minutes and mounts a tmpfs (root). The demo corpus is written once
(or `--corpus` names a catalog directory); a clean calibration run then records the segment
keys (the reference every round is checked against; a given corpus's rejects too) and how
long each stage takes from its first completion marker to its last (the window a timed
fault's delay is drawn from, so that it lands while work is in flight; a faster clean run
later shrinks it). Each round runs `jobs.prepare` then `jobs.tokenize` as real subprocesses
into a fresh output, with one fault drawn by the seeded RNG:

* sigkill: SIGKILL to the job's whole process group, a random delay after the stage's first
  completion marker (a machine that dies: nothing runs any cleanup);
* sigterm: SIGTERM to the job alone, likewise (a supervisor stopping it): it must exit 143
  and leave no process of its session behind;
* full-disk: prepare's --scratch-dir on a tmpfs too small for the longer songs: it must exit
  1, and a full disk must never become a reject.

The faulted stage is then rerun unchanged (at most 3 times) until it exits 0, the next stage
runs, and the round is audited: segments lost, duplicated or unexpected (pipeline.audit and
the shards' own keys against the calibration's), rejects whose reason is an environment
failure, rejects other than the corpus's two bad files, finished work that a rerun redid,
and processes that outlived their job.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from jobs.benchmarks.paired import Load
from pipeline.audit import AuditReport, audit_run, read_shard_keys
from pipeline.errors import ENVIRONMENT_ERRNOS, THROTTLING
from pipeline.io import StorageOptions
from pipeline.prepare.segment import SegmentConfig, plan_segments
from pipeline.shard_reader import find_shards
from testing.demo_corpus import BROKEN_FILE, DEMO_SONGS, make_demo_corpus

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("sigkill", "sigterm", "full-disk")
STAGES = ("prepare", "tokenize")
MARKER_DIRS = {"prepare": "_prepare/units", "tokenize": "_tokenize/parts"}
EXPECTED_STATUS = {None: 0, "sigkill": -signal.SIGKILL, "sigterm": 128 + signal.SIGTERM,
                   "full-disk": 1}  # fmt: skip
MAX_RERUNS = 3
JOB_TIMEOUT_S = 600.0  # A stage of this corpus takes well under a minute, even under load.
STOP_TIMEOUT_S = 60.0  # How long a SIGTERM'd job may take to stop.
LINGER_S = 10.0  # Ray's processes may take a moment to follow their driver out.
SPOOL_BYTES_PER_S = 48_000 * 2 * 4  # Prepare spools each song as 48 kHz stereo float32.

# What an environment failure looks like in a reject's reason: the strerror texts and
# "[Errno N]" of every errno pipeline.errors calls environmental, and object-store refusals.
ENVIRONMENT_MARKERS = tuple(
    sorted(
        {os.strerror(n) for n in ENVIRONMENT_ERRNOS}
        | {f"[Errno {n}]" for n in ENVIRONMENT_ERRNOS}
        | set(THROTTLING)
        | {"Service Unavailable", "MemoryError", "TimeoutError", "ConnectionError", "timed out"}
    )
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--rounds", type=int, default=10, help="faulted rounds (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default: 0)")
    parser.add_argument(
        "--scale", type=float, default=0.5, help="demo corpus duration scale (default: 0.5)"
    )
    parser.add_argument(
        "--corpus",
        help="a catalog directory to soak instead of the generated demo corpus; its clean "
        "run's segments and rejects are the reference (default: the demo corpus)",
    )
    parser.add_argument(
        "--workdir",
        help="where corpus, outputs and logs go; kept (default: a temp dir, removed at the end)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp workdir (to read the logs)"
    )


# -- what the corpus must give ----------------------------------------------------------------


def _scaled(seconds: float, scale: float) -> float:
    return seconds * scale if seconds > 10 else seconds  # As make_demo_corpus scales.


def expected_segment_count(scale: float) -> int:
    """Segments the demo corpus gives at `scale` under prepare's default segmenting."""
    config = SegmentConfig()
    return sum(
        len(plan_segments(round(_scaled(s.seconds, scale) * 48_000), config)) for s in DEMO_SONGS
    )


def legitimate_rejects(scale: float) -> set[str]:
    """Corpus-relative paths prepare must reject: the broken file and songs too short."""
    config = SegmentConfig()
    short = {
        s.path
        for s in DEMO_SONGS
        if not plan_segments(round(_scaled(s.seconds, scale) * 48_000), config)
    }
    return {BROKEN_FILE, *short}


def scratch_disk_bytes(scale: float) -> int:
    """A scratch disk that holds the median song's spool: the longer songs' units fail."""
    durations = sorted(_scaled(s.seconds, scale) for s in DEMO_SONGS)
    return int(SPOOL_BYTES_PER_S * durations[len(durations) // 2])


def is_environment_reason(reason: str) -> bool:
    return any(marker in reason for marker in ENVIRONMENT_MARKERS)


# -- round accounting (pure) --------------------------------------------------------------------


@dataclass
class Accounting:
    lost: list[str] = field(default_factory=list)  # Neither in the tables nor rejected.
    duplicated: list[str] = field(default_factory=list)  # In two shards or two token rows.
    unexpected: list[str] = field(default_factory=list)  # A key the clean run never made.
    damaged: list[str] = field(default_factory=list)  # Shards or tables that cannot be read.
    environment_rejects: list[dict] = field(default_factory=list)
    stray_rejects: list[dict] = field(default_factory=list)  # Other unexpected rejects.
    missing_rejects: list[str] = field(default_factory=list)  # Bad files not rejected.

    @property
    def ok(self) -> bool:
        return not any(vars(self).values())


def account(
    report: AuditReport,
    shard_keys: Counter,
    expected_keys: set[str],
    prepare_rejects: list[dict],
    tokenize_rejects: list[dict],
    legitimate: set[str],
) -> Accounting:
    """Check a finished round against the clean run.

    `shard_keys` counts every key in the prepared shards; `prepare_rejects` paths are
    relative to the corpus; tokenize must reject nothing (the corpus's audio is all valid).
    """
    rejects = prepare_rejects + tokenize_rejects
    environment = [r for r in rejects if is_environment_reason(r["reason"])]
    stray = [r for r in prepare_rejects if r["path"] not in legitimate] + tokenize_rejects
    return Accounting(
        lost=sorted((expected_keys - set(shard_keys)) | set(report.missing)),
        duplicated=sorted({k for k, n in shard_keys.items() if n > 1} | set(report.duplicated)),
        unexpected=sorted((set(shard_keys) - expected_keys) | set(report.unexpected)),
        damaged=[d.shard for d in report.damaged_shards if not d.rejected]
        + [d.file for d in report.damaged_tables],
        environment_rejects=environment,
        stray_rejects=[r for r in stray if r not in environment],
        missing_rejects=sorted(legitimate - {r["path"] for r in prepare_rejects}),
    )


# -- processes ----------------------------------------------------------------------------------


def session_members(session: int) -> list[int]:
    """Live processes of `session` (a job started with start_new_session: its pid)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # Gone meanwhile.
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_session(session: int) -> None:
    # The group first (atomic), then anyone of the session who moved to another group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signal.SIGKILL)
    for pid in session_members(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep_session(session: int, linger: float = LINGER_S) -> int:
    """Processes of a finished job's session still alive after `linger` s; killed."""
    deadline = time.monotonic() + linger
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = len(session_members(session))
    if left:
        kill_session(session)
    return left


@dataclass
class Resources:
    """What the soak must undo even when interrupted: live job sessions and mounts."""

    sessions: set[int] = field(default_factory=set)
    mounts: list[str] = field(default_factory=list)

    def release(self) -> None:
        for session in list(self.sessions):
            kill_session(session)
        self.sessions.clear()
        for mount in self.mounts:
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        self.mounts.clear()


@contextlib.contextmanager
def small_disk(path: str, size: int, resources: Resources) -> Iterator[str]:
    """A tmpfs of `size` bytes at `path`; raises OSError when it cannot be mounted."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    if mounted.returncode != 0:
        raise OSError(errno.EPERM, f"mount -t tmpfs: {mounted.stderr.strip()}")
    resources.mounts.append(path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
        resources.mounts.remove(path)


def tmpfs_unavailable(workdir: str, resources: Resources) -> str | None:
    """Why the full-disk fault cannot run here, or None when it can."""
    try:
        with small_disk(os.path.join(workdir, "tmpfs-probe"), 1 << 20, resources):
            return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)


# -- one job ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    kind: str  # One of KINDS.
    stage: str  # One of STAGES.
    fraction: float  # Of the stage's window after its first marker, for timed faults.


@dataclass
class JobRun:
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


# -- one stage, faulted and rerun ---------------------------------------------------------------


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
        return os.path.join(self.workdir, "scratch")

    def observe(self, stage: str, run: JobRun, markers: int) -> None:
        """Learn from a clean, complete run of `stage`."""
        if run.status == 0 and run.first_marker_s is not None and run.last_marker_s is not None:
            window = max(0.5, run.last_marker_s - run.first_marker_s)  # Never zero: room to land.
            self.windows[stage] = min(window, self.windows.get(stage, window))
            self.markers[stage] = markers


def stage_command(stage: str, output: str, scratch: str, soak: Soak) -> list[str]:
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
    return os.path.join(output, "prepared" if stage == "prepare" else "tokens",
                        MARKER_DIRS[stage])  # fmt: skip


def marker_times(directory: str) -> dict[str, int]:
    with contextlib.suppress(FileNotFoundError):
        return {e.name: e.stat().st_mtime_ns for e in os.scandir(directory)
                if e.name.endswith(".json")}  # fmt: skip
    return {}


@dataclass
class StageRun:
    stage: str
    runs: list[JobRun] = field(default_factory=list)  # The first run, then each rerun.
    landed: bool = True  # The fault hit a running job (a timed one can come too late).
    redone: int = 0  # Completion markers a rerun rewrote: finished work done again.
    problems: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [run.status for run in self.runs]

    @property
    def reruns(self) -> int:
        return max(0, len(self.runs) - 1)

    @property
    def lingering(self) -> int:
        return sum(run.lingering for run in self.runs)

    @property
    def done(self) -> bool:
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
    with open(path, errors="replace") as handle:
        return "".join("    | " + line for line in handle.readlines()[-lines:]).rstrip()


# -- one round ----------------------------------------------------------------------------------


@dataclass
class RoundResult:
    index: int
    fault: Fault | None
    stages: list[StageRun]
    accounting: Accounting
    seconds: float
    problems: list[str] = field(default_factory=list)  # Beyond the stages' own.

    @property
    def kind(self) -> str:
        return self.fault.kind if self.fault else "none"

    @property
    def reruns(self) -> int:
        return sum(s.reruns for s in self.stages)

    @property
    def landed(self) -> bool:
        return self.fault is not None and all(
            s.landed for s in self.stages if s.stage == self.fault.stage
        )

    @property
    def faulted_run(self) -> JobRun:
        assert self.fault is not None
        return next(s.runs[0] for s in self.stages if s.stage == self.fault.stage)

    @property
    def all_problems(self) -> list[str]:
        return [p for s in self.stages for p in s.problems] + self.problems

    def line(self, rounds: int, markers: dict[str, int]) -> str:
        where = f"{self.kind}@{self.fault.stage}" if self.fault else "calibration (no fault)"
        if self.fault and not self.landed:
            where += " (missed: the job ended first)"
        elif self.fault and self.fault.kind != "full-disk":
            total = markers.get(self.fault.stage, "?")
            where += f" (sent after {self.faulted_run.markers_at_fault} of {total} markers)"
        exits = ", ".join(f"{s.stage} {' '.join(map(str, s.statuses))}" for s in self.stages)
        a = self.accounting
        return (
            f"round {self.index}/{rounds}  {where}  exits: {exits}  "
            f"reruns {self.reruns}  lost {len(a.lost)}  duplicated {len(a.duplicated)}  "
            f"env rejects {len(a.environment_rejects)}  {self.seconds:.1f} s"
        )


def read_rejects(path: str, corpus: str | None = None) -> list[dict]:
    """A rejects table's rows (none when absent), paths relative to `corpus` when given."""
    if not os.path.exists(path):
        return []
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if corpus:
            row["path"] = os.path.relpath(row["path"], corpus)
    return rows


def shard_key_counts(prepared: str) -> tuple[Counter, list[str]]:
    """Every key in the manifest's shards, and files in shards/ the manifest does not list."""
    counts: Counter = Counter()
    shards = find_shards(prepared, StorageOptions())
    for shard in shards:
        counts.update(read_shard_keys(shard, StorageOptions())[0])
    listed = {s.name for s in shards}
    extra = sorted(set(os.listdir(os.path.join(prepared, "shards"))) - listed)
    return counts, extra


def leftover_partials(*roots: str) -> list[str]:
    """Half-written files (`<name>.partial-<pid>`) a complete run should have removed."""
    return [
        os.path.join(folder, name)
        for root in roots
        for folder, _, names in os.walk(root)
        for name in names
        if ".partial" in name
    ]


def audit_round(output: str, soak: Soak, expected_keys: set[str]) -> tuple[Accounting, list[str]]:
    """The round's accounting, and every problem with its outputs as one line each."""
    prepared, tokens = os.path.join(output, "prepared"), os.path.join(output, "tokens")
    counts, extra = shard_key_counts(prepared)
    accounting = account(
        audit_run(prepared, tokens, StorageOptions()),
        counts,
        expected_keys,
        read_rejects(os.path.join(prepared, "rejects.parquet"), soak.corpus),
        read_rejects(os.path.join(tokens, "rejects.parquet")),
        soak.legitimate,
    )
    problems = [f"shards not in the manifest: {extra}"] if extra else []
    if partials := leftover_partials(prepared, tokens):
        problems.append(f"partial files left: {partials}")
    for name in ("lost", "duplicated", "unexpected", "damaged", "missing_rejects"):
        if values := getattr(accounting, name):
            problems.append(f"{name}: {values}")
    for name in ("environment_rejects", "stray_rejects"):
        for row in getattr(accounting, name):
            problems.append(f"{name}: {row['stage']} {row['path']}: {row['reason']}")
    return accounting, problems


def run_stages(output: str, fault: Fault | None, soak: Soak) -> list[StageRun]:
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


def run_round(index: int, fault: Fault | None, soak: Soak, expected: set[str]) -> RoundResult:
    started = time.monotonic()
    output = os.path.join(soak.workdir, f"round-{index:03d}")
    stages = run_stages(output, fault, soak)
    if len(stages) == len(STAGES) and stages[-1].done:
        accounting, problems = audit_round(output, soak, expected)
    else:
        accounting, problems = Accounting(), [f"unfinished after {MAX_RERUNS} reruns: not audited"]
    return RoundResult(index, fault, stages, accounting, time.monotonic() - started, problems)


# -- the soak -----------------------------------------------------------------------------------


def draw_faults(rounds: int, seed: int, kinds: tuple[str, ...]) -> list[Fault]:
    """The faults of every round, drawn up front so a seed always gives the same ones.

    Kinds come from a shuffled bag: every kind once in each run of len(kinds) rounds, so
    even a short soak injects each of them.
    """
    rng = random.Random(seed)
    faults: list[Fault] = []
    while len(faults) < rounds:
        bag = list(kinds)
        rng.shuffle(bag)
        for kind in bag[: rounds - len(faults)]:
            # Only prepare takes a scratch dir; tokenize writes its parts next to its output.
            stage = "prepare" if kind == "full-disk" else rng.choice(STAGES)
            faults.append(Fault(kind, stage, rng.random()))
    return faults


def median_spool_bytes(prepared: str) -> int:
    """The spool of a clean run's median song: a scratch disk the longer songs overfill."""
    durations: dict[str, float] = {}
    for shard in find_shards(prepared, StorageOptions()):
        with tarfile.open(shard.url) as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    meta = json.load(archive.extractfile(member))
                    durations[meta["song_id"]] = meta["source_duration_s"]
    seconds = sorted(durations.values())
    return int(SPOOL_BYTES_PER_S * seconds[len(seconds) // 2])


def calibrate(soak: Soak, given_corpus: bool) -> tuple[RoundResult, set[str]]:
    """A clean run: the reference keys, and (Soak.observe) each stage's timing.

    A given corpus also takes its reference rejects and scratch disk size from this run.
    """
    started = time.monotonic()
    output = os.path.join(soak.workdir, "round-000")
    stages = run_stages(output, None, soak)
    if not (len(stages) == len(STAGES) and stages[-1].done):
        raise RuntimeError(f"the clean calibration run failed: {stages[-1].problems[-1]}")
    prepared = os.path.join(output, "prepared")
    expected = set(shard_key_counts(prepared)[0])
    if given_corpus:
        rejects = read_rejects(os.path.join(prepared, "rejects.parquet"), soak.corpus)
        soak.legitimate = {r["path"] for r in rejects if not is_environment_reason(r["reason"])}
        soak.disk_bytes = median_spool_bytes(prepared)
    accounting, problems = audit_round(output, soak, expected)
    if not given_corpus and len(expected) != expected_segment_count(soak.scale):
        problems.append(f"the clean run made {len(expected)} segments; the corpus should "
                        f"give {expected_segment_count(soak.scale)}")  # fmt: skip
    result = RoundResult(0, None, stages, accounting, time.monotonic() - started, problems)
    return result, expected


def load_line(when: str) -> str:
    load = Load.now()
    note = f"  (note: above the {load.cores} cores; timings are noisy)" if load.overloaded else ""
    return f"load average at {when}: {' '.join(f'{x:.2f}' for x in load.averages)}{note}"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report_round(result: RoundResult, soak: Soak, rounds: int) -> None:
    say(result.line(rounds, soak.markers))
    for problem in result.all_problems:
        say(f"  ! {problem}")


def summarize(results: list[RoundResult], calibration: RoundResult, expected: int) -> dict:
    def total(name: str) -> int:
        return sum(len(getattr(r.accounting, name)) for r in results)

    return {
        "rounds": len(results),
        "faults_injected": dict(Counter(r.kind for r in results)),
        "faults_landed": dict(Counter(r.kind for r in results if r.landed)),
        "segments_expected_per_round": expected,
        "segments_expected": expected * len(results),
        "lost": total("lost"),
        "duplicated": total("duplicated"),
        "unexpected": total("unexpected"),
        "damaged": total("damaged"),
        "environment_rejects": total("environment_rejects"),
        "other_unexpected_rejects": total("stray_rejects") + total("missing_rejects"),
        "reruns": sum(r.reruns for r in results),
        "lingering_processes": sum(s.lingering for r in results for s in r.stages),
        "rounds_with_problems": [r.index for r in results if r.all_problems],
        "calibration_ok": not calibration.all_problems,
    }


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    load_start = os.getloadavg()
    say(load_line("start"))
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-faults-")
    os.makedirs(workdir, exist_ok=True)
    resources = Resources()
    # SIGTERM to the soak must clean up like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        corpus = os.path.abspath(args.corpus) if args.corpus else os.path.join(workdir, "corpus")
        soak = Soak(corpus, workdir, args.scale, resources,
                    disk_bytes=scratch_disk_bytes(args.scale),
                    legitimate=legitimate_rejects(args.scale))  # fmt: skip
        os.makedirs(soak.scratch, exist_ok=True)  # Prepare wants an existing --scratch-dir.
        if not args.corpus:
            shutil.rmtree(soak.corpus, ignore_errors=True)
            make_demo_corpus(soak.corpus, args.scale)
        kinds = KINDS
        if reason := tmpfs_unavailable(workdir, resources):
            kinds = tuple(k for k in KINDS if k != "full-disk")
            say(f"full-disk fault skipped: cannot mount a tmpfs ({reason})")
        calibration, expected = calibrate(soak, given_corpus=bool(args.corpus))
        say(f"seed {args.seed}, corpus {args.corpus or f'demo at scale {args.scale}'}, "
            f"workdir {workdir}, scratch disk {soak.disk_bytes / 2**20:.1f} MiB")  # fmt: skip
        report_round(calibration, soak, args.rounds)
        say("timed faults: a delay after the stage's first completion marker, up to "
            + ", ".join(f"{w:.1f} s for {stage}" for stage, w in soak.windows.items())
            + " (the clean run's time from its first marker to its last)")  # fmt: skip
        results = []
        for index, fault in enumerate(draw_faults(args.rounds, args.seed, kinds), start=1):
            results.append(run_round(index, fault, soak, expected))
            report_round(results[-1], soak, args.rounds)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: one line, not a traceback.
        say("interrupted: stopping the job, unmounting, cleaning up")
        raise SystemExit(130) from None
    finally:
        resources.release()
        signal.signal(signal.SIGTERM, previous)
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say(load_line("end"))
    summary = summarize(results, calibration, len(expected))
    summary.update(
        seed=args.seed,
        corpus=args.corpus or "demo",
        scale=args.scale,
        skipped_kinds=sorted(set(KINDS) - set(kinds)),
        wall_seconds=round(time.monotonic() - started, 1),
        load_average_start=[round(x, 2) for x in load_start],
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        cores=os.cpu_count(),
    )
    if args.workdir or args.keep:
        summary["workdir"] = workdir
    return summary
