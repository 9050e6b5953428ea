"""`python -m jobs.bench quality`: what it compares is documented, and its cost figures are
measured (the paired comparison itself starts two Ray instances: run it by hand)."""

from __future__ import annotations

import argparse

from jobs import bench
from jobs.benchmarks import quality


def test_the_description_says_what_is_compared_and_the_defaults_hold() -> None:
    text = " ".join((quality.__doc__ or "").split())
    for words in ("--baseline", "survey", "per-pair ratios", "worktree"):
        assert words in text
    parser = argparse.ArgumentParser()
    quality.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.baseline, args.pairs, args.scale) == ("f3ae0cb", 5, 4.0)
    assert "quality" in bench.BENCHMARKS


def test_measure_costs_are_timed_per_segment() -> None:
    costs = quality._measure_costs()
    assert set(costs) == {
        "analyse_ms_per_segment",
        "analyse_worst_ms_per_segment",
        "clipping_ms_per_segment",
    }
    assert costs["analyse_worst_ms_per_segment"] > costs["analyse_ms_per_segment"]
    assert all(0 < value < 1000 for value in costs.values())
