"""Prepare throughput against raw decode + resample + FLAC encode, and worker peak memory.

Both figures come from the same files in the same run, each on one core: the raw loop reads a
whole file, resamples it with soxr and encodes 35.84 s FLAC segments, with none of the
pipeline's work (spool, lyrics, metadata, tar, markers, process isolation, Ray). The pipeline
runs the real stage on a one-CPU local Ray, timed from `prepare_corpus` call to return. The
two alternate in `--pairs` pairs (jobs/benchmarks/paired.py) and the median of the per-pair
ratios prepare / raw throughput is quoted with its spread and the load average; the
throughputs and times come from each side's median.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import statistics
import tempfile

import numpy as np
import soundfile as sf
import soxr

from jobs.benchmarks.paired import measure_pairs, warn_if_noisy
from pipeline.claims import claim_output
from pipeline.execution import start_ray
from pipeline.io import StorageOptions, filesystem
from pipeline.prepare.audio import open_audio
from pipeline.prepare.corpus import discover
from pipeline.prepare.dsp import TARGET_RATE, to_pcm16, to_stereo
from pipeline.prepare.isolation import run_unit_isolated
from pipeline.prepare.records import SongSource
from pipeline.prepare.segment import SegmentConfig
from pipeline.prepare.stage import RUN_FILE, prepare_corpus
from pipeline.prepare.unit import PrepareConfig, Unit
from testing.demo_corpus import make_demo_corpus
from testing.synth import synth_song, write_audio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the prepare benchmark's options to its subcommand's `parser`."""
    parser.add_argument("--scale", type=float, default=4.0, help="demo corpus duration scale")
    parser.add_argument(
        "--pairs", type=int, default=3, help="timed raw / prepare pairs (default 3)"
    )
    parser.add_argument(
        "--memory-minutes",
        type=float,
        default=60.0,
        help="length of the long file for the peak-memory check (0: skip)",
    )
    parser.add_argument("--workdir", help="where to write corpora and outputs (default: tmp)")


def _raw(paths: list[str], segment: SegmentConfig, flac_level: float) -> None:
    """Decode -> stereo -> 48 kHz -> 16-bit FLAC segments, whole-file in memory."""
    for path in paths:
        with open_audio(path, path.rsplit(".", 1)[-1].lower()) as stream:
            audio = to_stereo(np.concatenate(list(stream.blocks)))
            rate = stream.info.sample_rate
        if rate != TARGET_RATE:
            audio = soxr.resample(audio, rate, TARGET_RATE, quality="HQ")
        for start in range(0, len(audio), segment.segment_frames):
            pcm = to_pcm16(audio[start : start + segment.segment_frames])
            sf.write(io.BytesIO(), pcm, TARGET_RATE, "PCM_16", format="FLAC",
                     compression_level=flac_level)  # fmt: skip


def _usable_paths(corpus: str) -> tuple[list[str], float]:
    """The corpus files the pipeline accepts, and their total duration."""
    paths, seconds = [], 0.0
    for song in discover(corpus, StorageOptions()).songs:
        try:
            with open_audio(song.source, song.source.rsplit(".", 1)[-1].lower()) as stream:
                frames = sum(len(block) for block in stream.blocks)
                duration = frames / stream.info.sample_rate
        except Exception:
            continue
        if duration >= SegmentConfig().min_tail_seconds:
            paths.append(song.source)
            seconds += duration
    return paths, seconds


def _peak_memory(workdir: str, minutes: float) -> dict:
    """Prepare one `minutes`-long 44.1 kHz file in the isolated worker; report its peak RSS."""
    path = os.path.join(workdir, "long", "long.flac")
    seconds = minutes * 60
    rate = 44_100
    chunks = [
        synth_song(min(600.0, seconds - 600 * index), rate, 2, seed=index)
        for index in range(int(np.ceil(seconds / 600)))
    ]
    write_audio(path, np.concatenate(chunks), rate, "PCM_16")
    del chunks
    song = SongSource(song_id="long", source=path)
    output = os.path.join(workdir, "long-out")
    fs, root = filesystem(output, StorageOptions())
    # A unit writes only into an output claimed for its run.
    fence = claim_output(fs, root, RUN_FILE, {"benchmark": "peak memory"}, (), False, str)
    result = run_unit_isolated(Unit(0, (song,)), PrepareConfig(), output, fence)
    return {
        "input_minutes": minutes,
        "segments": result.segments,
        "peak_worker_rss_mb": round(result.peak_rss_bytes / 2**20, 1),
        "wall_seconds": round(result.wall_seconds, 1),
    }


def run(args: argparse.Namespace) -> dict:
    """Times prepare against a raw decode of the same demo corpus, as `args` says.

    Returns:
        The benchmark's JSON-ready result (throughput, the paired ratio, memory, the load).
    """
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-prepare-")
    corpus = os.path.join(workdir, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    make_demo_corpus(corpus, args.scale)
    paths, audio_seconds = _usable_paths(corpus)
    config = PrepareConfig()
    start_ray(num_cpus=1)

    summaries = []
    runs = itertools.count()
    for index in range(args.pairs):  # A rerun into an earlier output would resume, not redo.
        shutil.rmtree(os.path.join(workdir, f"out-{index}"), ignore_errors=True)

    def prepare() -> None:
        summary = prepare_corpus(corpus, os.path.join(workdir, f"out-{next(runs)}"), config)
        assert summary.units_failed == 0, summary.failures
        summaries.append(summary)

    flac_level = config.flac_level / 8
    paired = measure_pairs(lambda: _raw(paths, config.segment, flac_level), prepare, args.pairs)
    raw_s = statistics.median(paired.seconds("baseline"))
    prepare_s = statistics.median(paired.seconds("ours"))
    result = {
        "corpus_files": len(paths),
        "corpus_audio_seconds": round(audio_seconds, 1),
        "cores": 1,
        "raw_audio_s_per_wall_s_per_core": round(audio_seconds / raw_s, 1),
        "prepare_audio_s_per_wall_s_per_core": round(audio_seconds / prepare_s, 1),
        "prepare_over_raw": paired.to_dict(),
        # Hashing every source (pipeline/prepare/fingerprint.py), part of the prepare time above.
        "fingerprint_seconds": round(
            statistics.median([s.fingerprint_seconds for s in summaries]), 2
        ),
        "prepare_seconds": round(prepare_s, 2),
    }
    if args.memory_minutes > 0:
        result["memory"] = _peak_memory(workdir, args.memory_minutes)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    warn_if_noisy(paired.loads)
    return result
