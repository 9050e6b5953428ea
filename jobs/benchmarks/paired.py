"""Paired timing: a baseline and ours alternate, and the median of the per-pair ratios is quoted.

On a shared machine the load drifts within a run, so each side's best time may come from a
quiet moment the other side never saw, and their quotient measures the machine. Here the
two sides run back to back in each pair, in the order B O, O B, B O, ... (ABBA: drift that
favours whoever runs second cancels over two pairs), each pair gives its own ratio, and the
median of those ratios is quoted with its spread. The 1-minute load average is sampled
before every pair and after the last; a run that saw it above the core count is `noisy`
and says so on stderr. The load includes the benchmark itself (a 2-thread run adds ~2).

The direction is fixed: ratio = baseline seconds / ours seconds, so > 1 means ours is
faster, and against a ceiling (the bare tokenizer, the raw decode loop) it is the fraction
of the ceiling reached.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Load:
    """The load averages over 1, 5 and 15 minutes, and the core count, at one moment."""

    averages: tuple[float, float, float]
    cores: int

    @classmethod
    def now(cls) -> Load:
        """The load averages and core count of this machine at this moment."""
        return cls(os.getloadavg(), os.cpu_count() or 1)

    @property
    def overloaded(self) -> bool:
        """More runnable work than cores: a timing taken now measures the queue."""
        return self.averages[0] > self.cores


def load_json(loads: Sequence[Load]) -> dict[str, Any]:
    """JSON for the load samples of a run, first to last (at least one)."""
    return {
        "cores": loads[0].cores,
        "before": [round(x, 2) for x in loads[0].averages],
        "after": [round(x, 2) for x in loads[-1].averages],
        "max_1min": round(max(load.averages[0] for load in loads), 2),
        "noisy": any(load.overloaded for load in loads),
    }


def warn_if_noisy(loads: Sequence[Load]) -> None:
    """Print one warning line to stderr if any sample was overloaded."""
    worst = max(loads, key=lambda load: load.averages[0])
    if worst.overloaded:
        print(f"warning: load average {worst.averages[0]:.2f} above the {worst.cores} cores: "
              "these timings are noise", file=sys.stderr, flush=True)  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max, the quartiles when there are 4 or more values, and the values."""
    result: dict[str, Any] = {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }
    if len(values) >= 4:
        # "inclusive": quartiles interpolated between the values, never beyond them.
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        result["interquartile"] = [round(q1, 3), round(q3, 3)]
    result["per_pair"] = [round(v, 3) for v in values]
    return result


@dataclass(frozen=True)
class Timing:
    """One timed run: wall seconds and this process's CPU seconds."""

    wall_s: float
    cpu_s: float


@dataclass(frozen=True)
class Clocks:
    """Where time is read; tests put fake clocks here."""

    wall: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = time.process_time

    def measure(self, run: Callable[[], object]) -> Timing:
        """Run `run` once; a GPU side must synchronise before it returns."""
        wall, cpu = self.wall(), self.cpu()
        run()
        return Timing(self.wall() - wall, self.cpu() - cpu)


@dataclass(frozen=True)
class Pair:
    """One baseline run and one ours run, back to back, and the load sampled before them."""

    baseline: Timing
    ours: Timing
    baseline_first: bool
    load: Load

    @property
    def ratio(self) -> float:
        """Baseline wall seconds over ours (> 1: ours is faster)."""
        return self.baseline.wall_s / self.ours.wall_s

    @property
    def cpu_ratio(self) -> float:
        """Baseline CPU seconds over ours (> 1: ours uses less CPU)."""
        return self.baseline.cpu_s / self.ours.cpu_s


@dataclass(frozen=True)
class PairedResult:
    """Every pair of a paired measurement, and the load after the last one."""

    pairs: tuple[Pair, ...]
    load_after: Load

    @property
    def ratios(self) -> list[float]:
        """baseline / ours wall seconds, per pair."""
        return [pair.ratio for pair in self.pairs]

    @property
    def median(self) -> float:
        """The median of the pairs' wall-time ratios."""
        return statistics.median(self.ratios)

    @property
    def loads(self) -> list[Load]:
        """The load before each pair, then the load after the last one."""
        return [pair.load for pair in self.pairs] + [self.load_after]

    @property
    def noisy(self) -> bool:
        """Whether the machine was overloaded at any point: timings are noisy."""
        return any(load.overloaded for load in self.loads)

    def seconds(self, side: Literal["baseline", "ours"], cpu: bool = False) -> list[float]:
        """One side's wall (or CPU) seconds, per pair."""
        timings = [getattr(pair, side) for pair in self.pairs]
        return [t.cpu_s if cpu else t.wall_s for t in timings]

    def to_dict(self, cpu: bool = False) -> dict[str, Any]:
        """The benchmark's JSON-ready report of this measurement.

        A report, not a config: it is never read back, so it does not use
        mucodec.config.JsonConfig.

        Args:
            cpu: Also report CPU-time figures (only meaningful when both sides run in this
                process).

        Returns:
            The ratio's spread, each side's seconds (wall, and CPU with `cpu`) and the load.
        """
        result: dict[str, Any] = {
            "direction": "baseline seconds / ours seconds (> 1: ours is faster)",
            **spread(self.ratios),
            "baseline_seconds": [round(s, 3) for s in self.seconds("baseline")],
            "ours_seconds": [round(s, 3) for s in self.seconds("ours")],
        }
        if cpu:
            result["cpu_time_ratio"] = spread([pair.cpu_ratio for pair in self.pairs])
            result["baseline_cpu_seconds"] = [round(s, 3) for s in self.seconds("baseline", True)]
            result["ours_cpu_seconds"] = [round(s, 3) for s in self.seconds("ours", True)]
        result["load"] = load_json(self.loads)
        return result


def measure_pairs(
    baseline: Callable[[], object],
    ours: Callable[[], object],
    pairs: int,
    *,
    warmup: int = 0,
    clocks: Clocks | None = None,
) -> PairedResult:
    """Time `pairs` pairs of `baseline` and `ours`, alternating which goes first (ABBA).

    `warmup` untimed pairs run first (caches, lazy initialisation, kernel autotuning).
    """
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    clocks = clocks or Clocks()
    for _ in range(warmup):
        baseline()
        ours()
    measured = []
    for index in range(pairs):
        load = Load.now()
        if baseline_first := index % 2 == 0:
            base = clocks.measure(baseline)
            mine = clocks.measure(ours)
        else:
            mine = clocks.measure(ours)
            base = clocks.measure(baseline)
        measured.append(Pair(base, mine, baseline_first, load))
    return PairedResult(tuple(measured), Load.now())
