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
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from jobs.benchmarks.fault_accounting import (
    Accounting,
    account,
    expected_segment_count,
    is_environment_reason,
    leftover_partials,
    legitimate_rejects,
    median_spool_bytes,
    read_rejects,
    scratch_disk_bytes,
    shard_key_counts,
)
from jobs.benchmarks.fault_sessions import Resources, tmpfs_unavailable
from jobs.benchmarks.fault_stages import (
    KINDS,
    MAX_RERUNS,
    STAGES,
    Fault,
    JobRun,
    Soak,
    StageRun,
    run_stages,
)
from jobs.benchmarks.paired import Load
from pipeline.audit import audit_run
from pipeline.io import StorageOptions
from testing.demo_corpus import make_demo_corpus

# The soak in parts: fault_stages.py runs one faulted stage and its reruns, fault_sessions.py
# owns the processes and mounts, fault_accounting.py checks a finished round; here, the rounds.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the soak's options to its subcommand's `parser`."""
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


# -- one round ----------------------------------------------------------------------------------


@dataclass
class RoundResult:
    """One round: its fault, its stages, the audit's accounting, and its problems."""

    index: int
    fault: Fault | None
    stages: list[StageRun]
    accounting: Accounting
    seconds: float
    problems: list[str] = field(default_factory=list)  # Beyond the stages' own.

    @property
    def kind(self) -> str:
        """The fault's kind, or "none" for the calibration round."""
        return self.fault.kind if self.fault else "none"

    @property
    def reruns(self) -> int:
        """Reruns over every stage."""
        return sum(s.reruns for s in self.stages)

    @property
    def landed(self) -> bool:
        """Whether the fault hit its stage while the job still ran."""
        return self.fault is not None and all(
            s.landed for s in self.stages if s.stage == self.fault.stage
        )

    @property
    def faulted_run(self) -> JobRun:
        """The faulted stage's first run (the one the fault was sent to)."""
        assert self.fault is not None
        return next(s.runs[0] for s in self.stages if s.stage == self.fault.stage)

    @property
    def all_problems(self) -> list[str]:
        """The stages' problems, then the round's own."""
        return [p for s in self.stages for p in s.problems] + self.problems

    def line(self, rounds: int, markers: dict[str, int]) -> str:
        """The round's one-line report.

        Args:
            rounds: Rounds in the soak, for "round i/n".
            markers: Completion markers a complete run of each stage writes.
        """
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


def run_round(index: int, fault: Fault | None, soak: Soak, expected: set[str]) -> RoundResult:
    """Runs round `index` with `fault` into a fresh output and audits it."""
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
    """A line giving the load averages `when` ("start", "end")."""
    load = Load.now()
    note = f"  (note: above the {load.cores} cores; timings are noisy)" if load.overloaded else ""
    return f"load average at {when}: {' '.join(f'{x:.2f}' for x in load.averages)}{note}"


def say(text: str) -> None:
    """Prints `text` to stderr at once (stdout is the JSON result)."""
    print(text, file=sys.stderr, flush=True)


def report_round(result: RoundResult, soak: Soak, rounds: int) -> None:
    """Prints the round's line and each of its problems."""
    say(result.line(rounds, soak.markers))
    for problem in result.all_problems:
        say(f"  ! {problem}")


def summarize(results: list[RoundResult], calibration: RoundResult, expected: int) -> dict:
    """The soak's totals over the faulted rounds.

    Args:
        results: The faulted rounds.
        calibration: The clean round.
        expected: Segments one round must give.

    Returns:
        The JSON-ready summary the benchmark prints.
    """

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
    """Runs the soak as `args` says: the calibration run, then the faulted rounds.

    Returns:
        The JSON-ready summary (totals, faults injected and landed, problems, load).
    """
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
