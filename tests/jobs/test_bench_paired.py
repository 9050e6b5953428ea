"""Paired timing (`jobs/benchmarks/paired.py`) on fake clocks, and a smoke run of every
benchmark that quotes a paired ratio, at its tiniest size."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from jobs.bench import main
from jobs.benchmarks.paired import Clocks, Load, PairedResult, measure_pairs, warn_if_noisy


class FakeMachine:
    """Clocks that only the fake runs advance, and a log of which side ran in what order."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.log: list[str] = []
        self.clocks = Clocks(wall=lambda: self.wall, cpu=lambda: self.cpu)

    def side(self, name: str, walls: list[float], cpu_share: float) -> Callable[[], None]:
        """A run that takes the next of `walls` seconds, `cpu_share` of them on the CPU."""
        durations = iter(walls)

        def run() -> None:
            seconds = next(durations)
            self.log.append(name)
            self.wall += seconds
            self.cpu += seconds * cpu_share

        return run


def _measure(baseline: list[float], ours: list[float], warmup: int = 0) -> PairedResult:
    machine = FakeMachine()
    base_run = machine.side("baseline", baseline, cpu_share=1.0)
    ours_run = machine.side("ours", ours, cpu_share=0.5)
    return measure_pairs(base_run, ours_run, len(ours) - warmup, warmup=warmup,
                         clocks=machine.clocks)  # fmt: skip


@pytest.fixture
def loads(monkeypatch) -> Callable[[list[float]], None]:
    """Make the 1-minute load averages read in turn the given values, on 2 cores."""

    def install(values: list[float]) -> None:
        samples: Iterator[float] = iter(values)
        monkeypatch.setattr(os, "getloadavg", lambda: (next(samples), 0.5, 0.25))
        monkeypatch.setattr(os, "cpu_count", lambda: 2)

    return install


def test_the_sides_alternate_abba_after_the_warmup():
    machine = FakeMachine()
    result = measure_pairs(machine.side("baseline", [1.0] * 5, 1.0),
                           machine.side("ours", [1.0] * 5, 1.0), 4, warmup=1,
                           clocks=machine.clocks)  # fmt: skip
    assert machine.log == ["baseline", "ours"] + ["baseline", "ours", "ours", "baseline"] * 2
    assert [pair.baseline_first for pair in result.pairs] == [True, False, True, False]


def test_each_pair_gets_its_own_sides_times_and_ratio(loads):
    loads([1.0] * 5)
    # Warm-up 100/100 must not count; the second pair runs ours first, then the baseline.
    result = _measure([100.0, 2.0, 3.0, 4.0, 10.0], [100.0, 1.0, 1.0, 2.0, 2.0], warmup=1)
    assert result.seconds("baseline") == [2.0, 3.0, 4.0, 10.0]
    assert result.seconds("ours") == [1.0, 1.0, 2.0, 2.0]
    assert result.seconds("ours", cpu=True) == [0.5, 0.5, 1.0, 1.0]
    assert result.ratios == [2.0, 3.0, 2.0, 5.0]
    assert result.median == 2.5
    data = result.to_dict(cpu=True)
    assert (data["median"], data["min"], data["max"]) == (2.5, 2.0, 5.0)
    assert data["interquartile"] == [2.0, 3.5]
    assert data["per_pair"] == [2.0, 3.0, 2.0, 5.0]
    # Ours spends half its wall time on the CPU, the baseline all of it: twice the ratio.
    assert data["cpu_time_ratio"]["per_pair"] == [4.0, 6.0, 4.0, 10.0]
    assert data["baseline_cpu_seconds"] == [2.0, 3.0, 4.0, 10.0]


def test_fewer_than_four_pairs_have_no_quartiles_and_cpu_figures_are_opt_in(loads):
    loads([1.0] * 4)
    data = _measure([3.0, 4.0, 6.0], [1.0, 2.0, 2.0]).to_dict()
    assert (data["median"], data["min"], data["max"]) == (3.0, 2.0, 3.0)
    assert "interquartile" not in data
    assert "cpu_time_ratio" not in data and "ours_cpu_seconds" not in data


def test_load_is_sampled_before_each_pair_and_after_the_last(loads):
    loads([0.5, 1.5, 1.9])
    result = _measure([1.0, 1.0], [1.0, 1.0])
    assert [load.averages[0] for load in result.loads] == [0.5, 1.5, 1.9]
    assert not result.noisy  # 1.9 < 2 cores
    assert result.to_dict()["load"] == {
        "cores": 2,
        "before": [0.5, 0.5, 0.25],
        "after": [1.9, 0.5, 0.25],
        "max_1min": 1.9,
        "noisy": False,
    }


@pytest.mark.parametrize("values", [[2.5, 1.0, 1.0], [1.0, 1.0, 2.01]])
def test_a_load_above_the_cores_at_any_sample_makes_the_run_noisy(loads, values):
    loads(values)
    result = _measure([1.0, 1.0], [1.0, 1.0])
    assert result.noisy and result.to_dict()["load"]["noisy"]


def test_the_warning_names_the_worst_load_and_the_cores(capsys):
    warn_if_noisy([Load((1.0, 1.0, 1.0), 2), Load((5.3, 4.0, 3.0), 2)])
    assert capsys.readouterr().err == (
        "warning: load average 5.30 above the 2 cores: these timings are noise\n"
    )
    warn_if_noisy([Load((2.0, 9.0, 9.0), 2)])  # Exactly the core count: not above it.
    assert capsys.readouterr().err == ""


def test_pairs_must_be_positive():
    with pytest.raises(ValueError, match="pairs must be at least 1"):
        measure_pairs(lambda: None, lambda: None, 0)


# --- Smoke runs of the benchmarks at their tiniest sizes -------------------------------------


def _bench(capsys, *argv: str) -> dict:
    """Run `python -m jobs.bench ARGV` in this process; its JSON, checked for the warning."""
    assert main(list(argv)) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    loads = [block["load"] for block in _load_blocks(result)]
    assert loads, "no load averages in the output"
    noisy = any(load["noisy"] for load in loads)
    assert ("warning: load average" in captured.err) == noisy, captured.err
    return result


def _load_blocks(data: dict) -> Iterator[dict]:
    if "load" in data:
        yield data
    for value in data.values():
        if isinstance(value, dict):
            yield from _load_blocks(value)


def _check_paired(block: dict, pairs: int) -> None:
    assert len(block["per_pair"]) == len(block["ours_seconds"]) == pairs
    assert block["min"] <= block["median"] <= block["max"]


def test_encoder_bench_pairs_ours_with_the_naive_tiling(capsys):
    result = _bench(capsys, "encoder", "--preset", "tiny", "--segments", "1",
                    "--batch-size", "1", "--pairs", "2")  # fmt: skip
    _check_paired(result["speedup_same_audio"], 2)
    assert len(result["speedup_same_audio"]["cpu_time_ratio"]["per_pair"]) == 2
    # Winograd against the direct convolutions: a wrong transform would move most codes.
    assert result["ours"]["codes_equal_to_direct_convolution"] >= 0.99
    # Per audio second: the same ratios scaled by audio / computed audio (repeats included).
    share = result["audio_seconds"] / result["naive_official_tiling"]["computed_audio_seconds"]
    assert result["speedup_per_audio_second"]["median"] == pytest.approx(
        result["speedup_same_audio"]["median"] * share, abs=2e-3
    )


def test_encoder_bench_without_the_baseline_still_reports_the_load(capsys):
    result = _bench(capsys, "encoder", "--preset", "tiny", "--segments", "1", "--no-baseline")
    assert "speedup_same_audio" not in result and result["load"]["cores"] >= 1
    assert result["ours"]["seconds"] > 0


def test_decoder_bench_pairs_the_official_way_with_ours(capsys):
    result = _bench(capsys, "decoder", "--config", "tiny", "--device", "cpu", "--steps", "1",
                    "--project", "1", "--seconds", "1.28", "--window-codes", "32",
                    "--hop-codes", "24", "--pairs", "2")  # fmt: skip
    assert result["official_way_over_ours"]["steps"] == 1
    _check_paired(result["official_way_over_ours"], 2)
    assert result["measured"]["1"]["rtf"] > 0


@pytest.mark.integration
def test_prepare_bench_pairs_the_stage_with_the_raw_loop(capsys, ray_local, tmp_path):
    result = _bench(capsys, "prepare", "--scale", "0.1", "--pairs", "1", "--memory-minutes", "0",
                    "--workdir", str(tmp_path))  # fmt: skip
    _check_paired(result["prepare_over_raw"], 1)


@pytest.mark.integration
def test_tokenize_bench_pairs_the_stage_with_the_bare_tokenizer(capsys, ray_local, tmp_path):
    result = _bench(capsys, "tokenize", "--config", "tiny", "--scale", "0.1", "--pairs", "1",
                    "--batch-size", "2", "--workdir", str(tmp_path))  # fmt: skip
    _check_paired(result["stage_over_bare"], 1)


@pytest.mark.integration
def test_tokenize_bench_with_the_simulated_codec_measures_the_feed(capsys, ray_local, tmp_path):
    result = _bench(capsys, "tokenize", "--codec", "simulated", "--scale", "0.3",
                    "--segments", "12", "--batch-size", "2", "--pairs", "1",
                    "--workdir", str(tmp_path))  # fmt: skip
    ceiling, overlap = result["feed_ceiling"], result["overlap"]
    assert result["segments"] >= 12 and result["cpus"] == 2
    assert ceiling["segments_per_s_per_core"] > 0
    assert set(ceiling["per_segment_s"]) == {"read_decode", "staging", "device", "part_writing"}
    assert ceiling["per_segment_s"]["read_decode"] > 0
    # The device's time per segment follows from the ceiling of the warm-up run.
    assert overlap["device_segments_per_s"] == pytest.approx(
        0.6 * ceiling["warm_up_segments_per_s"], rel=0.01
    )
    assert overlap["median"] > 0 and overlap["per_segment_s"]["device"] > 0
