"""Tokenize stage throughput against the bare tokenizer on the same segments, in one run.

    python -m jobs.bench tokenize --codec dac --config tiny --scale 1 --pairs 3
    python -m jobs.bench tokenize --codec simulated     # the feed: jobs/benchmarks/feed.py

The bare figure is the codec's `encode` (--codec, default mucodec) on segments already in
memory, through the stage's own actor, with the stage's batch size, dtype and device, on as
many model threads as the stage's pool (fixed at its planned size here), as many batches at
a time as the stage's actor takes (two on a GPU): the ceiling the stage can reach. The
stage figure is the real `tokenize_shards` run (shard reading, FLAC decoding, Ray Data
actors, Parquet writing), timed from call to return on a warm local Ray. The two alternate
in --pairs pairs (jobs/benchmarks/paired.py) and the median of the per-pair ratios stage / bare
throughput is quoted with its spread and the load average. Throughputs, and hours of audio
per device-hour, come from each side's median time.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shutil
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor

import ray
import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from jobs.benchmarks import feed
from jobs.benchmarks.paired import measure_pairs, warn_if_noisy
from pipeline.execution import start_ray
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.shard_reader import ShardSampleRow, find_shards, iter_shard_samples, sample_row
from pipeline.tokenize.actor import TokenizeBatch
from pipeline.tokenize.stage import (
    GPU_BATCH,
    TokenizeConfig,
    actor_pool_shape,
    tokenize_shards,
)
from testing.demo_corpus import make_demo_corpus

ALL_PRESETS = {
    preset for name in registry.codecs(simulated=True) for preset in registry.plugin(name).presets
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the tokenize benchmark's options to its subcommand's `parser`."""
    parser.add_argument("--codec", default=registry.DEFAULT_CODEC,
                        choices=registry.codecs(simulated=True),
                        help="the codec whose stage is timed (default mucodec)")  # fmt: skip
    # An unknown name is refused here, before Ray starts, not by an actor mid-run.
    parser.add_argument(
        "--config",
        choices=sorted(ALL_PRESETS),
        help="the codec's preset (random weights; default: its tiny one)",
    )
    parser.add_argument(
        "--precision", "--dtype", choices=("float32", "bfloat16"), default="float32"
    )
    parser.add_argument("--batch-size", type=int,
                        help="segments per batch (default 8 on CPUs; on a GPU the stage's own "
                        "default, calls fitted to memory; simulated: 16)")  # fmt: skip
    parser.add_argument("--scale", type=float, default=2.0, help="demo corpus duration scale")
    parser.add_argument("--actors", type=int, help="actor pool size (default: stage default)")
    parser.add_argument("--pairs", type=int, default=3, help="timed bare / stage pairs (default 3)")
    parser.add_argument("--workdir", help="where to write corpora and outputs (default: tmp)")
    parser.add_argument("--segments", type=int,
                        help="segments per run, at least, from copies of a prepared corpus "
                        "(default: the demo corpus at --scale; simulated: 1000)")  # fmt: skip


def _encode_all(
    actor: TokenizeBatch, rows: list[ShardSampleRow], batch_size: int, calls: int
) -> None:
    """Encode every row's audio with the actor, no I/O, `calls` batches at a time as the
    stage's actor takes them, waiting for the GPU."""
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(actor._encode, batches))
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict:
    """Times the tokenize stage against its bare actors on a prepared corpus.

    Returns:
        The benchmark's JSON-ready result (throughput, the paired ratio, the stage's steady
        rate and fixed costs, the load).
    """
    if registry.simulates_device(args.codec):
        args.batch_size = args.batch_size or 16
        args.segments = args.segments or 1000
        return feed.run(args)
    args.config = args.config or registry.plugin(args.codec).tiny_preset
    if args.config not in registry.plugin(args.codec).presets:
        raise SystemExit(f"error: {args.codec} has no preset {args.config!r}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-tokenize-")
    start_ray()
    if args.segments:
        prepared, _ = feed.feed_corpus(workdir, args.segments)
    else:
        corpus, prepared = os.path.join(workdir, "corpus"), os.path.join(workdir, "prepared")
        make_demo_corpus(corpus, args.scale)
        prepare_corpus(corpus, prepared, PrepareConfig(), force=True)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    # On a GPU, no --batch-size: the stage's default, each call as large as memory allows.
    batch = args.batch_size or (None if gpus else 8)
    spec = CodecSpec(args.codec, preset=args.config, precision=args.precision)
    config = TokenizeConfig(codecs=(spec,), batch_size=batch, actors=args.actors)

    rows = [
        sample_row(shard.name, key, members)
        for shard in find_shards(prepared, config.storage)
        for key, members in iter_shard_samples(shard.url, config.storage)
    ]
    audio_seconds = sum(r.duration_s for r in rows)
    # The bare run gets the threads the stage gives its model: actors x CPUs per actor.
    shape = actor_pool_shape(config, gpus, cpus)
    threads = shape.actors * shape.torch_threads
    # The stage's pool is fixed at the planned size: left to autoscale, Ray Data adds actors
    # when a backlog builds, and the stage would run on more threads than the bare side.
    config = dataclasses.replace(config, actors=shape.actors)
    share = None if batch else shape.memory_share
    actor = TokenizeBatch(spec, torch_threads=threads, memory_share=share)
    bare_batch = batch or GPU_BATCH
    actor._encode(rows[:bare_batch])  # Warm-up: kernels, allocator (and the memory probe).
    summaries = []
    outputs = itertools.count()

    def stage() -> None:
        output = feed.fresh_output(workdir, next(outputs))
        summaries.append(tokenize_shards(prepared, output, config, force=True)[args.codec])

    paired = measure_pairs(
        lambda: _encode_all(actor, rows, bare_batch, shape.calls_per_actor), stage, args.pairs
    )
    summary = summaries[-1]
    assert summary.segments == len(rows), summary
    bare = statistics.median(paired.seconds("baseline"))
    stage_s = statistics.median(paired.seconds("ours"))
    steady = statistics.median(s.timing.steady_segments_per_second for s in summaries)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "codec": args.codec,
        "config": args.config,
        "dtype": args.precision,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model_threads": threads,
        "segments": len(rows),
        "audio_seconds": round(audio_seconds, 1),
        "batch_size": bare_batch,
        "encode_batch": actor.encode_batch or bare_batch,
        "actors": summary.actors,
        "bare_segments_per_s": round(len(rows) / bare, 2),
        "stage_segments_per_s": round(len(rows) / stage_s, 2),
        "stage_over_bare": paired.to_dict(),
        "stage_audio_hours_per_hour": round(audio_seconds / stage_s, 1),
        "stage_steady_segments_per_s": round(steady, 2),
        "steady_over_bare": round(steady * bare / len(rows), 3),
        "steady_audio_hours_per_hour": round(steady * audio_seconds / len(rows), 1),
        "stage_fixed_s": summary.timing.fixed,
        "per_segment_s": summary.timing.per_segment,
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    warn_if_noisy(paired.loads)
    return result
