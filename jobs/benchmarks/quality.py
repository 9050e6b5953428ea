"""What quality measures cost prepare: this tree's prepare against a baseline commit's, paired.

Two long-lived worker processes, one running this tree's code and one a git worktree of
`--baseline` (default: the commit before the measures), each with its own one-CPU local Ray
started once. They take turns (ABBA, jobs/benchmarks/paired.py) preparing the demo corpus
into a fresh output, after one untimed warm-up each; a worker times its own `prepare_corpus`
call, so process and Ray start-up are not counted. Quoted: the median of the per-pair
ratios baseline seconds / this tree's seconds, over the whole call and with this tree's
survey (Chromaprint fingerprints, tags; `survey_seconds`) taken out, since the survey is a
pass of its own whose cost is reported apart. Also: the measures' own cost per 35.84 s
segment (analysis at 48 kHz, clipping at 44.1 kHz), timed in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from jobs.benchmarks.paired import Clocks, Timing, measure_pairs, warn_if_noisy
from pipeline.prepare.segment import SegmentConfig
from pipeline.quality.clipping import ClippingCounter
from pipeline.quality.measures import analyse
from testing.demo_corpus import make_demo_corpus
from testing.synth import synth_song

DEFAULT_BASELINE = "f3ae0cb"  # The last commit before quality measures.
# The worker uses only what both trees have: prepare_corpus, PrepareConfig, start_ray.
# Results go to a pipe of their own: a job's stdout is Ray-managed once Ray starts.
_WORKER = """
import json, os, sys, time
from pipeline.execution import start_ray
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
corpus, workdir, answers = sys.argv[1], sys.argv[2], os.fdopen(int(sys.argv[3]), "w")
start_ray(num_cpus=1)
for index, line in enumerate(sys.stdin):
    started = time.perf_counter()
    summary = prepare_corpus(corpus, os.path.join(workdir, f"out-{index}"), PrepareConfig())
    seconds = time.perf_counter() - started
    assert summary.units_failed == 0, summary.failures
    print(json.dumps({"seconds": seconds, "survey_seconds": getattr(summary, "survey_seconds", 0.0),
                      "audio_seconds": summary.audio_seconds_this_run}), file=answers, flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the benchmark's options to its subcommand's `parser`."""
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE,
        help=f"the commit to compare with (default: {DEFAULT_BASELINE})",
    )  # fmt: skip
    parser.add_argument("--scale", type=float, default=4.0, help="demo corpus duration scale")
    parser.add_argument("--pairs", type=int, default=5, help="timed pairs (default 5)")
    parser.add_argument("--workdir", help="where to write corpora and outputs (default: tmp)")


class _Worker:
    """A prepare process of one tree, answering one timed run per request."""

    def __init__(self, tree: str, corpus: str, workdir: str) -> None:
        os.makedirs(workdir, exist_ok=True)
        environment = {**os.environ, "PYTHONPATH": tree}
        answers, theirs = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, corpus, workdir, str(theirs)], cwd=tree,
            env=environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            pass_fds=(theirs,),
        )  # fmt: skip
        os.close(theirs)
        self._answers = os.fdopen(answers)
        self.runs: list[dict] = []

    def run(self) -> float:
        """One prepare into a fresh output; its own timing (seconds)."""
        assert self._process.stdin
        self._process.stdin.write("run\n")
        self._process.stdin.flush()
        line = self._answers.readline()
        if not line:
            raise RuntimeError(f"the prepare worker exited ({self._process.wait()})")
        self.runs.append(json.loads(line))
        return self.runs[-1]["seconds"]

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        self._process.wait(timeout=120)


class _ReportedClocks(Clocks):
    """Wall time as the worker reported it, not as seen around the request."""

    def measure(self, run: Callable[[], object]) -> Timing:
        """Run `run`, which returns the seconds its worker timed."""
        return Timing(float(run()), 0.0)  # type: ignore[arg-type]


def _measure_costs() -> dict:
    """ms per 35.84 s segment: `analyse` at 48 kHz stereo, on music and at its worst (noise
    crushed to near full scale: every true-peak block clears the bound and is interpolated),
    and clipping at 44.1 kHz stereo."""
    frames = SegmentConfig().segment_frames
    audio = synth_song(frames / 48_000, 48_000, 2, seed=0)
    noise = np.random.default_rng(0).standard_normal((frames, 2))
    crushed = (0.99 * np.tanh(8 * noise)).astype(np.float32)
    source = synth_song(frames / 48_000, 44_100, 2, seed=1)

    def best(run, repeats: int = 7) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return round(min(times) * 1000, 2)

    def clipping() -> None:
        counter = ClippingCounter(44_100, 2)
        for start in range(0, len(source), 220_500):  # The decoder's 5 s blocks.
            counter.feed(source[start : start + 220_500])

    return {"analyse_ms_per_segment": best(lambda: analyse(audio)),
            "analyse_worst_ms_per_segment": best(lambda: analyse(crushed)),
            "clipping_ms_per_segment": best(clipping)}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    """Runs the paired comparison and the cost measurement; returns the JSON report."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-quality-")
    baseline_tree = os.path.join(workdir, "baseline-tree")
    shutil.rmtree(baseline_tree, ignore_errors=True)
    subprocess.run(["git", "-C", here, "worktree", "prune"], check=True)
    subprocess.run(["git", "-C", here, "worktree", "add", "--detach", baseline_tree,
                    args.baseline], check=True, capture_output=True)  # fmt: skip
    corpus = os.path.join(workdir, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    make_demo_corpus(corpus, args.scale)
    costs = _measure_costs()
    baseline = _Worker(baseline_tree, corpus, os.path.join(workdir, "baseline-out"))
    ours = _Worker(here, corpus, os.path.join(workdir, "ours-out"))
    try:
        paired = measure_pairs(baseline.run, ours.run, args.pairs, warmup=1,
                               clocks=_ReportedClocks())  # fmt: skip
    finally:
        baseline.close()
        ours.close()
        subprocess.run(["git", "-C", here, "worktree", "remove", "--force", baseline_tree],
                       check=False, capture_output=True)  # fmt: skip
    timed = ours.runs[1:]  # The first run of each worker is the warm-up.
    without_survey = [b["seconds"] / (o["seconds"] - o["survey_seconds"])
                      for b, o in zip(baseline.runs[1:], timed, strict=True)]  # fmt: skip
    audio = statistics.median(r["audio_seconds"] for r in timed)
    result = {
        "baseline": args.baseline,
        "corpus_audio_seconds": round(audio, 1),
        "cores": 1,
        "whole_prepare": paired.to_dict(),
        "without_survey": {
            "direction": "baseline seconds / (ours seconds - survey seconds)",
            "median": round(statistics.median(without_survey), 3),
            "per_pair": [round(r, 3) for r in without_survey],
        },
        "survey_seconds": round(statistics.median(r["survey_seconds"] for r in timed), 3),
        "measure_costs": costs,
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    warn_if_noisy(paired.loads)
    return result
