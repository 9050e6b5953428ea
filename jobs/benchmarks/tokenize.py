"""Tokenize stage throughput against the bare tokenizer on the same segments, in one run.

The bare figure is `MuCodecTokenizer.encode_batch` on segments already in memory, with the
stage's batch size, dtype and device: the ceiling the stage can reach. The stage figure is
the real `tokenize_shards` run (shard reading, FLAC decoding, Ray Data actors, Parquet
writing), timed from call to return on a warm local Ray. Hours of audio per device-hour
follow from the stage figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import ray
import torch

from jobs.demo import make_demo_corpus
from pipeline.execution import start_ray
from pipeline.prepare import prepare_corpus
from pipeline.shard_reader import iter_shard_samples, sample_row
from pipeline.tokenize import TokenizeConfig, actor_pool_shape, find_shards, tokenize_shards
from pipeline.tokenize_actor import TokenizeBatch, TokenizerSpec
from pipeline.unit import PrepareConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="tokenizer preset (random weights)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--scale", type=float, default=2.0, help="demo corpus duration scale")
    parser.add_argument("--actors", type=int, help="actor pool size (default: stage default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", help="where to write corpora and outputs (default: tmp)")


def _bare_seconds(actor: TokenizeBatch, rows: list[dict], batch_size: int) -> float:
    """Encode every row's audio with the actor's tokenizer, no I/O; returns wall seconds."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        actor._encode(rows[start : start + batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-tokenize-")
    corpus, prepared = os.path.join(workdir, "corpus"), os.path.join(workdir, "prepared")
    make_demo_corpus(corpus, args.scale)
    start_ray()
    prepare_corpus(corpus, prepared, PrepareConfig(), force=True)
    spec = TokenizerSpec(preset=args.config, dtype=args.dtype)
    config = TokenizeConfig(tokenizer=spec, batch_size=args.batch_size, actors=args.actors)

    rows = [
        sample_row(shard.name, key, members)
        for shard in find_shards(prepared, config.storage)
        for key, members in iter_shard_samples(shard.url, config.storage)
    ]
    audio_seconds = sum(r["duration_s"] for r in rows)
    # The bare run gets the threads the stage gives its model: actors x CPUs per actor.
    resources = ray.cluster_resources()
    shape = actor_pool_shape(config, int(resources.get("GPU", 0)), int(resources.get("CPU", 1)))
    threads = shape.actors * shape.torch_threads
    actor = TokenizeBatch(spec, torch_threads=threads)
    actor._encode(rows[: args.batch_size])  # Warm-up: kernels, allocator.
    bare = min(_bare_seconds(actor, rows, args.batch_size) for _ in range(args.repeats))

    stage = float("inf")
    summary = None
    for repeat in range(args.repeats):
        output = os.path.join(workdir, f"tokens-{repeat}")
        started = time.perf_counter()
        summary = tokenize_shards(prepared, output, config, force=True)
        stage = min(stage, time.perf_counter() - started)
    assert summary is not None and summary.segments == len(rows), summary

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "config": args.config,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model_threads": threads,
        "segments": len(rows),
        "audio_seconds": round(audio_seconds, 1),
        "batch_size": args.batch_size,
        "actors": summary.actors,
        "bare_segments_per_s": round(len(rows) / bare, 2),
        "stage_segments_per_s": round(len(rows) / stage, 2),
        "stage_over_bare": round(bare / stage, 3),
        "stage_audio_hours_per_hour": round(audio_seconds / stage, 1),
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result
