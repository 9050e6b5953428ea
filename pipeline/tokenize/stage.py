"""The tokenize stage end to end: prepare's shards -> one token table per codec.

Three steps on Ray Data, streaming, the shards read and decoded once for every codec:
  1. CPU tasks read shards and decode FLAC to PCM16 rows (`pipeline.shard_reader`), one task
     per shard, spread over every CPU of the cluster;
  2. one actor pool per codec, in a chain, each adding its codec's codes to the rows
     (`pipeline.tokenize.actor`), one GPU per actor when the cluster has GPUs, so decoding
     of the next batches overlaps compute;
  3. the driver hands each codec's rows to that codec's parts and writes each part when
     complete (`pipeline.tokenize.parts`).

Output layout under the output URL, for each codec, under `<codec>/`:
    tokens/part-<n>.parquet       token rows (schemas/tokens.py)
    rejects.parquet               samples or shards that could not be tokenized
    codebook_stats.json / .png    per-codebook usage and bitrate efficiency of the run
    summary.json                  counts, hours, tokens, throughput
    _tokenize/run.json            the input and codec this output belongs to
    _tokenize/parts/<n>.json      per-part completion markers
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from core.config import JsonConfig
from core.errors import InvalidSetting
from pipeline.claims import Fence, claim_output
from pipeline.errors import describe, is_environment_failure
from pipeline.io import (
    StorageOptions,
    atomic_write,
    filesystem,
    join,
    remove_partials,
    write_json,
)
from pipeline.shard_reader import ShardRef, ShardTask, find_shards, read_shard_rows
from pipeline.tokenize.actor import TokenizeBatch, spec_identity
from pipeline.tokenize.codebook_stats import CodebookHistogram, codebook_report, plot_codebook_usage
from pipeline.tokenize.parts import (
    TOKENS_DIR,
    Part,
    PartAssembler,
    PartResult,
    load_part_markers,
    plan_parts,
)
from pipeline.tokenize.rows import ChainRow
from pipeline.tokenize.timing import CodecClock, StageTiming
from schemas.rejects import REJECTS_SCHEMA
from schemas.run import versioned_summary

log = logging.getLogger(__name__)

RUN_FILE = "_tokenize/run.json"
# Everything a run writes under its output (a `--force` claim deletes these).
OUTPUTS = (TOKENS_DIR, "_tokenize", "rejects.parquet", "summary.json",
           "codebook_stats.json", "codebook_stats.png")  # fmt: skip


@dataclass(frozen=True)
class TokenizeConfig:
    """How the stage runs; `codecs` decide what is computed (one table each).

    Attributes:
        codecs: The codecs to run, each once (their names are their output folders).
        device: "auto" (CUDA when an actor has a GPU, else CPU), "cpu" or "cuda".
    """

    codecs: tuple[CodecSpec, ...]
    device: str = "auto"
    batch_size: int | None = None  # Default: 16 on CPUs; on GPUs 128, split as memory allows.
    actors: int | None = None  # Default: one per GPU, else as many as CPUs allow.
    cpus_per_actor: int | None = None  # Default: 1 with a GPU; CPU actors 1-2 torch threads.
    shards_per_part: int = 16
    row_group_size: int = 1024
    storage: StorageOptions = field(default_factory=StorageOptions)

    def __post_init__(self) -> None:
        names = [spec.codec for spec in self.codecs]
        if not names or len(set(names)) != len(names):
            raise InvalidSetting(f"give each codec once, at least one: {names}")


@dataclass
class TokenizeSummary(JsonConfig):
    """What a tokenize run did for one codec; written (with its version) to `summary.json`.

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
    codec: str = ""
    timing: StageTiming = field(default_factory=StageTiming)

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
) -> dict[str, TokenizeSummary]:
    """Tokenize every shard under `shards_url` with every codec, resuming each codec's parts.

    The shards are read and decoded once; one actor pool per codec adds that codec's rows
    (`pipeline.tokenize.actor`), and the driver writes each codec's parts under
    `<output_url>/<codec>/`. A part done for every codec is not read again; a part done for
    some codecs only runs the others.

    Args:
        shards_url: Prepare's output (or a directory of `.tar` shards).
        output_url: Where to write each codec's token parts and run artifacts.
        config: How to run; `config.codecs` decide the codes.
        force: Replace a codec output that holds another run instead of refusing it.
        progress: Called as `progress(rows, total)` while rows (one per segment and codec)
            come back from the actors; `total` is None when the shards have no prepare
            manifest to count them.

    Returns:
        Each codec's summary (also written to its `summary.json`), in `config.codecs` order.

    Raises:
        OutputInUse: A codec's output holds a different run and `force` is not set.
        UnsupportedVersion: An artifact read (manifest, part marker) has an unknown version.
    """
    import ray

    started = time.time()
    fs, root = filesystem(output_url, config.storage)
    names = [spec.codec for spec in config.codecs]
    roots = {name: join(root, name) for name in names}
    fences = {
        spec.codec: _claim_output(fs, roots[spec.codec], shards_url, spec, config, force).guard(fs)
        for spec in config.codecs
    }
    parts = plan_parts(find_shards(shards_url, config.storage), config.shards_per_part)
    done = {name: load_part_markers(fs, roots[name], parts) for name in names}
    todo = {name: [p for p in parts if p.index not in done[name]] for name in names}
    pending = [p for p in parts if any(p.index not in done[name] for name in names)]
    chain = [spec for spec in config.codecs if todo[spec.codec]]
    for name in names:
        log.info("%s: %d parts, %d already done", name, len(parts), len(done[name]))

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    simulated = all(registry.simulates_device(spec.codec) for spec in config.codecs)
    shape = actor_pool_shape(config, gpus, cpus, pools=max(1, len(chain)), simulated=simulated)
    failures: dict[str, list[str]] = {name: [] for name in names}
    unfinished: dict[str, list[int]] = {name: [] for name in names}
    clocks = {name: CodecClock() for name in names}
    flowing = time.time()
    if pending:
        assemblers = {
            spec.codec: PartAssembler(fs, roots[spec.codec], todo[spec.codec],
                                      config.row_group_size, fences[spec.codec])
            for spec in chain
        }  # fmt: skip
        skip = {
            spec.codec: sorted(s.name for p in pending if p.index in done[spec.codec]
                               for s in p.shards)
            for spec in chain
        }  # fmt: skip
        dataset = _build_dataset(pending, config, chain, skip, shape, gpus > 0, cpus)
        counts = [_segment_count(todo[spec.codec]) for spec in chain]
        rows, total = 0, None if None in counts else sum(counts)
        if progress:
            progress(rows, total)
        flowing = time.time()
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in ChainRow.from_table(batch):
                    rows += not row.ends_shard
                    clock = clocks[row.tokenizer]
                    clock.saw(row)
                    result = clock.timed(assemblers[row.tokenizer].add, row)
                    if result is not None:
                        done[row.tokenizer][result.index] = result
                if progress:
                    progress(rows, total)
        except Exception as error:
            if not _cluster_failure(error):
                raise
            # The parts not yet written stay unfinished; a rerun does them.
            reason = describe(error).splitlines()[0]
            for assembler in assemblers.values():
                assembler.fail_remaining(f"the cluster failed the stage: {reason}")
        for name, assembler in assemblers.items():
            unfinished[name] = assembler.unfinished
            failures[name] = [f"part {i}: {why}" for i, why in sorted(assembler.failures.items())]
            for why, count in Counter(assembler.failures.values()).items():
                log.error("%s: %d parts unfinished (rerun to retry): %s", name, count, why)

    device = "cuda" if gpus else "cpu"
    return {
        name: _finish_codec(
            fs, roots[name], name, parts, todo[name], done[name], unfinished[name],
            failures[name], (started, flowing, clocks[name]), shape.actors, device,
            fences[name],
        )
        for name in names
    }  # fmt: skip


def _finish_codec(
    fs, root: str, codec: str, parts: list[Part], todo: list[Part],
    done: dict[int, PartResult], unfinished: list[int], failures: list[str],
    times: tuple[float, float, CodecClock], actors: int, device: str,
    fence: Callable[[], None],
) -> TokenizeSummary:  # fmt: skip
    """Write one codec's run artifacts and summary; return the summary.

    A run replaced meanwhile (--force) stops at its first fenced write, before it deletes.
    """
    started, flowing, clock = times
    results = [done[p.index] for p in parts if p.index in done]
    _write_run_artifacts(fs, root, results, fence)
    if len(results) == len(parts):
        # Every part is written and this driver is their only writer: a partial file still
        # here lost its writer to a kill.
        remove_partials(fs, root, OUTPUTS)
    ended = time.time()
    wall = ended - started
    segments_this_run = sum(done[p.index].rows for p in todo if p.index in done)
    audio_this_run = sum(done[p.index].audio_seconds for p in todo if p.index in done)
    summary = TokenizeSummary(
        codec=codec,
        shards=sum(len(p.shards) for p in parts),
        parts=len(parts),
        parts_run=len(todo),
        parts_already_done=len(parts) - len(todo),
        parts_unfinished=len(unfinished),
        failures=failures,
        segments=sum(r.rows for r in results),
        audio_hours=sum(r.audio_seconds for r in results) / 3600,
        tokens=sum(r.tokens for r in results),
        rejects=sum(len(r.rejects) for r in results),
        wall_seconds=wall,
        segments_per_second=segments_this_run / wall if wall else 0.0,
        audio_hours_per_hour=audio_this_run / wall if wall else 0.0,
        actors=actors,
        device=device,
        timing=StageTiming.of(clock, started, flowing, ended),
    )
    write_json(fs, join(root, "summary.json"), summary.to_dict(), fence)
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
    """How the stage splits the cluster between each codec's actors and the shard readers."""

    actors: int  # Actors of each codec's pool.
    actor_cpus: float  # Ray CPUs each actor reserves.
    torch_threads: int  # Threads each actor's model runs on.
    reader_cpus: float = 1.0  # Ray CPUs each shard-reading task reserves.
    actor_gpus: float = 1.0  # GPUs (or a share of one) each actor reserves, on a GPU cluster.
    calls_per_actor: int = 1  # Batches an actor works on at once (2: staging beside device).
    fixed_size: bool = False  # Never grow the pool: each simulated actor is one more device.

    @property
    def memory_share(self) -> float:
        """The share of its GPU's free memory one encode call may fill."""
        return self.actor_gpus / self.calls_per_actor


# A device actor's own CPU work (staging PCM, launching kernels, rows in and out) is small.
DEVICE_ACTOR_CPUS = 0.5
CPU_BATCH = 16  # Segments per batch by default on CPUs ...
GPU_BATCH = 128  # ... and on GPUs, where each actor splits it as its memory allows.


def actor_pool_shape(
    config: TokenizeConfig, gpus: int, cpus: int, pools: int = 1, simulated: bool = False
) -> PoolShape:
    """`pools` actor pools for a cluster of `gpus` GPUs and `cpus` CPUs, leaving CPU for readers.

    Actors whose model runs on a device (a GPU, or the simulated one) take two batches at a
    time, so the next batch's PCM is staged while the device encodes, and reserve little
    CPU: readers, one per CPU, get the rest. CPU actors reserve their model's threads; if
    they reserved every CPU they would starve the readers that feed them and the pipeline
    would wait forever. A cluster with no more CPUs than pools (a laptop, or what is left
    after losing a node) runs one actor per pool and the readers on an equal share of the
    CPUs: they take turns. With fewer GPUs than pools, the pools share them.
    """
    actor_gpus = 1.0 if gpus >= pools or not gpus else gpus / pools
    if gpus or simulated:
        per_actor = config.cpus_per_actor or DEVICE_ACTOR_CPUS
        actors = config.actors or max(1, gpus // pools)
        held = actors * per_actor * pools
        if held >= cpus:
            raise InvalidSetting(
                f"{pools} pools x {actors} actors x {per_actor} CPUs leave none of the {cpus} "
                "CPUs for reading shards; lower --actors"
            )
        readers = math.ceil(cpus - held)  # One per CPU, sharing what the actors leave.
        return PoolShape(actors, per_actor, 1, reader_cpus=(cpus - held) / readers,
                         actor_gpus=actor_gpus, calls_per_actor=2,
                         fixed_size=simulated and not gpus)  # fmt: skip
    per_actor = config.cpus_per_actor or (1 if cpus <= 4 else 2)
    actors = config.actors or max(1, (cpus - 1) // (per_actor * pools))
    if actors * per_actor * pools < cpus:
        return PoolShape(actors, per_actor, per_actor)
    if actors == 1 and cpus <= pools:
        share = cpus / (pools + 1)
        return PoolShape(1, share, 1, reader_cpus=share)
    raise InvalidSetting(
        f"{pools} pools x {actors} actors x {per_actor} CPUs leave none of the {cpus} CPUs "
        "for reading shards; lower --actors"
    )


# Shard bytes one reading task takes: each task costs ~0.1 s of Ray Data's own work, which
# halved the feed on shards of 5 segments read one per task (measured, docs/benchmarks.md).
TASK_BYTES = 64 << 20


def reading_tasks(shards: list[ShardRef], cpus: int) -> int:
    """How many tasks read `shards` (each task a run of consecutive shards): about
    `TASK_BYTES` each, but at least two per CPU while there are shards enough, so every
    reader has work to the end."""
    total = sum(s.size for s in shards)
    return max(1, min(len(shards), max(math.ceil(total / TASK_BYTES), 2 * cpus)))


def _build_dataset(
    pending: list[Part],
    config: TokenizeConfig,
    chain: list[CodecSpec],
    skip: dict[str, list[str]],
    shape: PoolShape,
    use_gpu: bool,
    cpus: int,
):
    """The shard readers, then one actor pool per codec of `chain`, in order."""
    import ray

    shards = [s for p in pending for s in p.shards]
    tasks = reading_tasks(shards, cpus)
    dataset = ray.data.from_items(
        [ShardTask(s.name, s.url).to_dict() for s in shards], override_num_blocks=tasks
    ).flat_map(read_shard_rows, fn_kwargs={"storage": config.storage}, num_cpus=shape.reader_cpus)
    for position, spec in enumerate(chain):
        constructor = {
            "spec": spec,
            "device": config.device,
            "torch_threads": shape.torch_threads,
            "skip_shards": skip[spec.codec],
            "keep_audio": position < len(chain) - 1,
            # Given a batch size, the user chose it; else each call fits the GPU's memory.
            "memory_share": None if config.batch_size else shape.memory_share,
        }
        batch_size = config.batch_size or (GPU_BATCH if use_gpu else CPU_BATCH)
        # A batch holds the rows of the codecs before too: as many audio rows as the first.
        dataset = dataset.map_batches(
            TokenizeBatch,
            fn_constructor_kwargs=constructor,
            batch_size=batch_size * (position + 1),
            batch_format="pyarrow",
            compute=_actor_pool(config, shape),
            num_gpus=shape.actor_gpus if use_gpu else 0,
            num_cpus=shape.actor_cpus,
        )
    return dataset


def _actor_pool(config: TokenizeConfig, shape: PoolShape):
    """`--actors` fixes the pool; by default it starts at the planned size and Ray Data adds
    actors as nodes join (within the stage's resource budget, so readers keep theirs) and
    drops them when they no longer fit."""
    import ray

    calls = shape.calls_per_actor
    if config.actors or shape.fixed_size:
        return ray.data.ActorPoolStrategy(size=shape.actors, max_concurrent_calls_per_actor=calls)
    return ray.data.ActorPoolStrategy(
        min_size=1, max_size=None, initial_size=shape.actors, max_concurrent_calls_per_actor=calls
    )


def _claim_output(
    fs, root: str, shards_url: str, spec: CodecSpec, config: TokenizeConfig, force: bool
) -> Fence:
    claim = {
        "shards_url": shards_url,
        "tokenizer": spec_identity(spec),
        "shards_per_part": config.shards_per_part,
    }
    return claim_output(
        fs, root, RUN_FILE, claim, OUTPUTS, force,
        describe=lambda previous: (
            f"tokens of {previous['shards_url']!r} made by {previous['tokenizer']}"
        ),
    )  # fmt: skip


def _write_run_artifacts(
    fs, root: str, results: list[PartResult], fence: Callable[[], None]
) -> None:
    rejects = [r.to_row() for result in results for r in result.rejects]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), buffer)
    with atomic_write(fs, join(root, "rejects.parquet"), fence) as handle:
        handle.write(buffer.getvalue())
    histograms = [CodebookHistogram.from_dict(r.histogram) for r in results if r.histogram]
    if not histograms:
        return
    total = histograms[0]
    for other in histograms[1:]:
        total.merge(other)
    report = codebook_report(total, results[0].token_rate)
    write_json(fs, join(root, "codebook_stats.json"), report, fence)
    with atomic_write(fs, join(root, "codebook_stats.png"), fence) as handle:
        handle.write(plot_codebook_usage(total, report))
