"""The tokenize stage end to end: prepare's shards -> MuCodec token Parquet parts.

Three steps on Ray Data, streaming:
  1. CPU tasks read shards and decode FLAC to PCM16 rows (`pipeline.shard_reader`), one task
     per shard, spread over every CPU of the cluster;
  2. an actor pool runs the tokenizer on batches (`pipeline.tokenize.actor`), one GPU per
     actor when the cluster has GPUs, so decoding of the next batches overlaps compute;
  3. the driver groups finished rows into parts and writes each part when complete
     (`pipeline.tokenize.parts`).

Output layout under the output URL:
    tokens/part-<n>.parquet       token rows (schemas/tokens.py)
    rejects.parquet               samples or shards that could not be tokenized
    codebook_stats.json / .png    per-codebook usage and bitrate efficiency of the run
    summary.json                  counts, hours, tokens, throughput
    _tokenize/run.json            the input and tokenizer this output belongs to
    _tokenize/parts/<n>.json      per-part completion markers
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mucodec.config import JsonConfig
from pipeline.claims import claim_output
from pipeline.errors import InvalidSetting, describe, is_environment_failure
from pipeline.io import (
    StorageOptions,
    atomic_write,
    filesystem,
    join,
    remove_partials,
    write_json,
)
from pipeline.shard_reader import ShardTask, find_shards, read_shard_rows
from pipeline.tokenize.actor import TokenizeBatch, TokenizerSpec
from pipeline.tokenize.codebook_stats import CodebookHistogram, codebook_report, plot_codebook_usage
from pipeline.tokenize.parts import (
    TOKENS_DIR,
    Part,
    PartAssembler,
    PartResult,
    load_part_markers,
    plan_parts,
)
from pipeline.tokenize.rows import TokenizedRow
from schemas.rejects import REJECTS_SCHEMA
from schemas.run import versioned_summary

log = logging.getLogger(__name__)

RUN_FILE = "_tokenize/run.json"
# Everything a run writes under its output (a `--force` claim deletes these).
OUTPUTS = (TOKENS_DIR, "_tokenize", "rejects.parquet", "summary.json",
           "codebook_stats.json", "codebook_stats.png")  # fmt: skip


@dataclass(frozen=True)
class TokenizeConfig:
    """How the stage runs; `tokenizer` decides what is computed."""

    tokenizer: TokenizerSpec
    batch_size: int = 16
    actors: int | None = None  # Default: one per GPU, else as many as CPUs allow.
    cpus_per_actor: int | None = None  # Default: 1 with a GPU; CPU actors 1-2 torch threads.
    shards_per_part: int = 16
    row_group_size: int = 1024
    storage: StorageOptions = field(default_factory=StorageOptions)


@dataclass
class TokenizeSummary(JsonConfig):
    """What a tokenize run did; written (with its schema version) to `summary.json`.

    Counts cover the whole output (this run and the ones it resumed) except the rates,
    which are this run's: segments per wall second and hours of audio per wall hour.
    """

    shards: int
    parts: int
    parts_run: int
    parts_already_done: int
    parts_unfinished: int
    failures: list[str]
    segments: int
    audio_hours: float
    tokens: int
    rejects: int
    wall_seconds: float
    segments_per_second: float
    audio_hours_per_hour: float
    actors: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        """The `summary.json` content, with its schema version."""
        return versioned_summary("tokenize", super().to_dict())


def tokenize_shards(
    shards_url: str,
    output_url: str,
    config: TokenizeConfig,
    *,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> TokenizeSummary:
    """Tokenize every shard under `shards_url` into parts at `output_url`, resuming.

    Args:
        shards_url: Prepare's output (or a directory of `.tar` shards).
        output_url: Where to write the token parts and run artifacts.
        config: How to run; `config.tokenizer` decides the codes.
        force: Replace an output that holds another run instead of refusing it.
        progress: Called as `progress(segments, total)` while segments come back from the
            actors; `total` is None when the shards have no prepare manifest to count them.

    Returns:
        The run's summary (also written to `summary.json`).

    Raises:
        OutputInUse: `output_url` holds a different run and `force` is not set.
        UnsupportedVersion: An artifact read (manifest, part marker) has an unknown version.
    """
    import ray

    started = time.perf_counter()
    fs, root = filesystem(output_url, config.storage)
    _claim_output(fs, root, shards_url, config, force)
    parts = plan_parts(find_shards(shards_url, config.storage), config.shards_per_part)
    done = load_part_markers(fs, root, parts)
    pending = [p for p in parts if p.index not in done]
    log.info("%d parts, %d already done", len(parts), len(done))

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    shape = actor_pool_shape(config, gpus, cpus)
    device = "cuda" if gpus else "cpu"
    if pending:
        assembler = PartAssembler(fs, root, pending, config.row_group_size)
        dataset = _build_dataset(pending, config, shape, gpus > 0)
        segments, total = 0, _segment_count(pending)
        if progress:
            progress(segments, total)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in TokenizedRow.from_table(batch):
                    segments += not row.ends_shard
                    result = assembler.add(row)
                    if result is not None:
                        done[result.index] = result
                if progress:
                    progress(segments, total)
        except Exception as error:
            if not _cluster_failure(error):
                raise
            # The parts not yet written stay unfinished; a rerun does them.
            reason = describe(error).splitlines()[0]
            assembler.fail_remaining(f"the cluster failed the stage: {reason}")
        unfinished = assembler.unfinished
        failures = [f"part {i}: {why}" for i, why in sorted(assembler.failures.items())]
        for why, count in Counter(assembler.failures.values()).items():
            log.error("%d parts unfinished (rerun to retry): %s", count, why)
    else:
        unfinished, failures = [], []

    results = [done[p.index] for p in parts if p.index in done]
    _write_run_artifacts(fs, root, results)
    if len(results) == len(parts):
        # Every part is written and this driver is their only writer: a partial file still
        # here lost its writer to a kill.
        remove_partials(fs, root, OUTPUTS)
    wall = time.perf_counter() - started
    segments_this_run = sum(done[p.index].rows for p in pending if p.index in done)
    audio_this_run = sum(done[p.index].audio_seconds for p in pending if p.index in done)
    summary = TokenizeSummary(
        shards=sum(len(p.shards) for p in parts),
        parts=len(parts),
        parts_run=len(pending),
        parts_already_done=len(parts) - len(pending),
        parts_unfinished=len(unfinished),
        failures=failures,
        segments=sum(r.rows for r in results),
        audio_hours=sum(r.audio_seconds for r in results) / 3600,
        tokens=sum(r.tokens for r in results),
        rejects=sum(len(r.rejects) for r in results),
        wall_seconds=wall,
        segments_per_second=segments_this_run / wall if wall else 0.0,
        audio_hours_per_hour=audio_this_run / wall if wall else 0.0,
        actors=shape.actors,
        device=device,
    )
    write_json(fs, join(root, "summary.json"), summary.to_dict())
    return summary


def _cluster_failure(error: BaseException) -> bool:
    """A lost node or actor, an execution that stopped making progress, or storage trouble."""
    from ray.data.exceptions import ExecutionTimeoutError
    from ray.exceptions import ActorDiedError, NodeDiedError, ObjectLostError, RayActorError

    lost = (ExecutionTimeoutError, ActorDiedError, NodeDiedError, ObjectLostError, RayActorError)
    return isinstance(error, lost) or is_environment_failure(error)


def _segment_count(parts: list[Part]) -> int | None:
    counts = [shard.samples for part in parts for shard in part.shards]
    return None if None in counts else sum(counts)


@dataclass(frozen=True)
class PoolShape:
    """How the stage splits the cluster between tokenizer actors and shard readers."""

    actors: int
    actor_cpus: float  # Ray CPUs each actor reserves.
    torch_threads: int  # Threads each actor's model runs on.
    reader_cpus: float = 1.0  # Ray CPUs each shard-reading task reserves.


def actor_pool_shape(config: TokenizeConfig, gpus: int, cpus: int) -> PoolShape:
    """The actor pool for a cluster of `gpus` GPUs and `cpus` CPUs, leaving CPU for readers.

    Actors that reserved every CPU would starve the reading tasks that feed them: the
    pipeline would wait forever. A one-CPU cluster (a laptop, or what is left after losing a
    node) runs one actor and the readers on half a CPU each: they take turns.
    """
    if gpus:
        per_actor = config.cpus_per_actor or 1
        actors = config.actors or gpus
    else:
        per_actor = config.cpus_per_actor or (1 if cpus <= 4 else 2)
        actors = config.actors or max(1, (cpus - 1) // per_actor)
    if actors * per_actor < cpus:
        return PoolShape(actors, per_actor, per_actor)
    if actors == 1 and cpus == 1:
        return PoolShape(1, 0.5, 1, reader_cpus=0.5)
    raise InvalidSetting(
        f"{actors} actors x {per_actor} CPUs leave none of the {cpus} CPUs for reading "
        "shards; lower --actors"
    )


def _build_dataset(pending: list[Part], config: TokenizeConfig, shape: PoolShape, use_gpu: bool):
    import ray

    shard_rows = [ShardTask(s.name, s.url).to_dict() for p in pending for s in p.shards]
    return (
        ray.data.from_items(shard_rows, override_num_blocks=len(shard_rows))
        .flat_map(
            read_shard_rows, fn_kwargs={"storage": config.storage}, num_cpus=shape.reader_cpus
        )
        .map_batches(
            TokenizeBatch,
            fn_constructor_kwargs={"spec": config.tokenizer, "torch_threads": shape.torch_threads},
            batch_size=config.batch_size,
            batch_format="pyarrow",
            compute=_actor_pool(config, shape),
            num_gpus=1 if use_gpu else 0,
            num_cpus=shape.actor_cpus,
        )
    )


def _actor_pool(config: TokenizeConfig, shape: PoolShape):
    """`--actors` fixes the pool; by default it starts at the planned size and Ray Data adds
    actors as nodes join (within the stage's resource budget, so readers keep theirs) and
    drops them when they no longer fit."""
    import ray

    if config.actors:
        return ray.data.ActorPoolStrategy(size=shape.actors)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=None, initial_size=shape.actors)


def _claim_output(fs, root: str, shards_url: str, config: TokenizeConfig, force: bool) -> None:
    claim = {
        "shards_url": shards_url,
        "tokenizer": config.tokenizer.identity(),
        "shards_per_part": config.shards_per_part,
    }
    claim_output(
        fs, root, RUN_FILE, claim, OUTPUTS, force,
        describe=lambda previous: (
            f"tokens of {previous['shards_url']!r} made by {previous['tokenizer']}"
        ),
    )  # fmt: skip


def _write_run_artifacts(fs, root: str, results: list[PartResult]) -> None:
    rejects = [r.to_dict() for result in results for r in result.rejects]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), buffer)
    with atomic_write(fs, join(root, "rejects.parquet")) as handle:
        handle.write(buffer.getvalue())
    histograms = [CodebookHistogram.from_dict(r.histogram) for r in results if r.histogram]
    if not histograms:
        return
    total = histograms[0]
    for other in histograms[1:]:
        total.merge(other)
    report = codebook_report(total, results[0].token_rate)
    write_json(fs, join(root, "codebook_stats.json"), report)
    with atomic_write(fs, join(root, "codebook_stats.png")) as handle:
        handle.write(plot_codebook_usage(total, report))
