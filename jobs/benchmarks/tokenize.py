"""Tokenize stage throughput against the bare tokenizer on the same segments, in one run.

    python -m jobs.bench tokenize --codec dac --config tiny --scale 1 --pairs 3

The bare figure is the codec's `encode` (--codec, default mucodec) on segments already in
memory, through the stage's own actor, with the stage's batch size, dtype and device, on as
many model threads as the stage's pool (fixed at its planned size here): the ceiling the
stage can reach. The stage figure is
the real `tokenize_shards` run (shard reading, FLAC decoding, Ray Data actors, Parquet
writing), timed from call to return on a warm local Ray. The two alternate in --pairs
pairs (jobs/benchmarks/paired.py) and the median of the per-pair ratios stage / bare
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

import ray
import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from jobs.benchmarks.paired import measure_pairs, warn_if_noisy
from pipeline.execution import start_ray
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.shard_reader import ShardSampleRow, find_shards, iter_shard_samples, sample_row
from pipeline.tokenize.actor import TokenizeBatch
from pipeline.tokenize.stage import TokenizeConfig, actor_pool_shape, tokenize_shards
from testing.demo_corpus import make_demo_corpus

ALL_PRESETS = {preset for name in registry.codecs() for preset in registry.plugin(name).presets}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the tokenize benchmark's options to its subcommand's `parser`."""
    parser.add_argument("--codec", default=registry.DEFAULT_CODEC, choices=registry.codecs(),
                        help="the codec whose stage is timed (default mucodec)")  # fmt: skip
    # An unknown name is refused here, before Ray starts, not by an actor mid-run.
    parser.add_argument("--config", default="tiny", choices=sorted(ALL_PRESETS),
                        help="the codec's preset (random weights)")  # fmt: skip
    parser.add_argument(
        "--precision", "--dtype", choices=("float32", "bfloat16"), default="float32"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--scale", type=float, default=2.0, help="demo corpus duration scale")
    parser.add_argument("--actors", type=int, help="actor pool size (default: stage default)")
    parser.add_argument("--pairs", type=int, default=3, help="timed bare / stage pairs (default 3)")
    parser.add_argument("--workdir", help="where to write corpora and outputs (default: tmp)")


def _encode_all(actor: TokenizeBatch, rows: list[ShardSampleRow], batch_size: int) -> None:
    """Encode every row's audio with the actor's tokenizer, no I/O, waiting for the GPU."""
    for start in range(0, len(rows), batch_size):
        actor._encode(rows[start : start + batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict:
    """Times the tokenize stage against its bare actors on a prepared demo corpus.

    Returns:
        The benchmark's JSON-ready result (throughput, the paired ratio, the load).
    """
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-tokenize-")
    corpus, prepared = os.path.join(workdir, "corpus"), os.path.join(workdir, "prepared")
    make_demo_corpus(corpus, args.scale)
    start_ray()
    prepare_corpus(corpus, prepared, PrepareConfig(), force=True)
    if args.config not in registry.plugin(args.codec).presets:
        raise SystemExit(f"error: {args.codec} has no preset {args.config!r}")
    spec = CodecSpec(args.codec, preset=args.config, precision=args.precision)
    config = TokenizeConfig(codecs=(spec,), batch_size=args.batch_size, actors=args.actors)

    rows = [
        sample_row(shard.name, key, members)
        for shard in find_shards(prepared, config.storage)
        for key, members in iter_shard_samples(shard.url, config.storage)
    ]
    audio_seconds = sum(r.duration_s for r in rows)
    # The bare run gets the threads the stage gives its model: actors x CPUs per actor.
    resources = ray.cluster_resources()
    shape = actor_pool_shape(config, int(resources.get("GPU", 0)), int(resources.get("CPU", 1)))
    threads = shape.actors * shape.torch_threads
    # The stage's pool is fixed at the planned size: left to autoscale, Ray Data adds actors
    # when a backlog builds, and the stage would run on more threads than the bare side.
    config = dataclasses.replace(config, actors=shape.actors)
    actor = TokenizeBatch(spec, torch_threads=threads)
    actor._encode(rows[: args.batch_size])  # Warm-up: kernels, allocator.
    summaries = []
    outputs = itertools.count()

    def stage() -> None:
        output = os.path.join(workdir, f"tokens-{next(outputs)}")
        summaries.append(tokenize_shards(prepared, output, config, force=True))

    paired = measure_pairs(lambda: _encode_all(actor, rows, args.batch_size), stage, args.pairs)
    summary = summaries[-1][args.codec]
    assert summary.segments == len(rows), summary
    bare = statistics.median(paired.seconds("baseline"))
    stage_s = statistics.median(paired.seconds("ours"))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "codec": args.codec,
        "config": args.config,
        "dtype": args.precision,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model_threads": threads,
        "segments": len(rows),
        "audio_seconds": round(audio_seconds, 1),
        "batch_size": args.batch_size,
        "actors": summary.actors,
        "bare_segments_per_s": round(len(rows) / bare, 2),
        "stage_segments_per_s": round(len(rows) / stage_s, 2),
        "stage_over_bare": paired.to_dict(),
        "stage_audio_hours_per_hour": round(audio_seconds / stage_s, 1),
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    warn_if_noisy(paired.loads)
    return result
