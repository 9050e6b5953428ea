"""The spot-check stage: sample token rows, decode them, measure, and report.

Sampling is reproducible and stratified over songs: songs are visited in a seeded order and
each contributes one segment per round (its segments also in seeded order) until the target
count is reached, so a sample of N covers min(N, songs) songs before any song repeats.

Steps on Ray Data: the driver reads the sampled rows from the token tables; CPU tasks fetch
the original segments from their shards (each shard read once); an actor pool (GPU when
present) decodes, measures and writes each sample's files; the driver writes the metrics
table and the report.

Like prepare and tokenize, the stage claims its output (`_spotcheck/run.json`) with the
settings that decide each sample's files: the token and shard inputs and the decoder (its
weights, steps, guidance, precision and noise seed). A rerun with the same settings resumes,
skipping samples whose `metrics.json` exists; other settings are refused unless `force`,
which deletes the old output first. The sample choice (count, fraction, seed) is not part
of the claim: a sample's files do not depend on which others were chosen, so a rerun that
chooses more reuses those already decoded.

Output layout under the output URL:
    samples/<key>/{original.wav, reconstruction.wav, spectrogram.png, metrics.json}
    metrics.parquet     one row of metrics per sample
    distributions.png   metric histograms
    report.html         summary, distributions, and per-sample spectrograms and players
    summary.json
    _spotcheck/run.json the inputs and decoder this output belongs to
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mucodec.config import JsonConfig
from pipeline.claims import claim_output
from pipeline.io import (
    StorageOptions,
    atomic_write,
    exists,
    filesystem,
    join,
    read_json,
    read_parquet,
)
from pipeline.shard_reader import find_shards, iter_shard_samples, sample_row
from pipeline.spotcheck.actor import SAMPLES_DIR, DecoderSpec, SpotcheckDecode
from pipeline.spotcheck.report import distributions_png, render_report, summary_rows
from pipeline.spotcheck.rows import (
    SAMPLED_COLUMNS,
    DecodeRow,
    SampledRow,
    SampleMetrics,
    SpotcheckTask,
)
from pipeline.tokenize.dataset import token_files
from schemas.metrics import METRICS_SCHEMA, check_metrics_schema
from schemas.run import versioned_summary
from schemas.tokens import check_tokens_schema_version

RUN_FILE = "_spotcheck/run.json"
# Everything a run writes under its output (a `--force` claim deletes these).
OUTPUTS = (SAMPLES_DIR, "_spotcheck", "metrics.parquet", "distributions.png", "report.html",
           "summary.json")  # fmt: skip


@dataclass(frozen=True)
class SpotcheckConfig:
    """What to decode and how: the decoder, the sample (exactly one of `count` and
    `fraction`, chosen with `seed`), and how to run (batch size, actors, storage)."""

    decoder: DecoderSpec
    count: int | None = None
    fraction: float | None = None
    seed: int = 0
    batch_size: int = 4
    actors: int | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)

    def __post_init__(self) -> None:
        """Refuse a sample size given twice, not at all, or as a fraction outside (0, 1]."""
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of count or fraction")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")


@dataclass
class SpotcheckSummary(JsonConfig):
    """What a spot-check did; written (with its schema version) to `summary.json`.

    `metrics` holds the mean of each metric over the decoded samples.
    """

    rows_in_tables: int
    sampled: int
    songs_sampled: int
    decoded_now: int
    already_done: int
    missing: list[str]  # Sampled keys whose original could not be read from the shards.
    wall_seconds: float
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The `summary.json` content, with its schema version."""
        return versioned_summary("spotcheck", super().to_dict())


def choose_keys(index: list[tuple[str, str]], count: int, seed: int) -> list[str]:
    """Seeded, song-stratified choice of `count` keys from `(key, song_id)` pairs."""
    by_song: dict[str, list[str]] = defaultdict(list)
    for key, song in sorted(index):
        by_song[song].append(key)
    rng = random.Random(seed)
    songs = sorted(by_song)
    rng.shuffle(songs)
    queues = {song: rng.sample(keys, len(keys)) for song, keys in sorted(by_song.items())}
    chosen: list[str] = []
    while len(chosen) < count and any(queues.values()):
        for song in songs:
            if queues[song] and len(chosen) < count:
                chosen.append(queues[song].pop())
    return chosen


def _read_index(files: list[str], storage: StorageOptions) -> list[tuple[str, str, str]]:
    """(key, song_id, file) of every token row: only the two small columns are read."""
    index = []
    for url in files:
        fs, path = filesystem(url, storage)
        table = read_parquet(fs, path, ["key", "song_id"])
        check_tokens_schema_version(table.schema, url)
        keys, songs = table.column("key").to_pylist(), table.column("song_id").to_pylist()
        index.extend((key, song, url) for key, song in zip(keys, songs, strict=True))
    return index


def _read_rows(keys_by_file: dict[str, list[str]], storage: StorageOptions) -> list[SampledRow]:
    """The sampled rows, reading only their files; parts are sorted by key, so row-group
    statistics skip most of each file."""
    rows = []
    for url, keys in sorted(keys_by_file.items()):
        fs, path = filesystem(url, storage)
        table = read_parquet(fs, path, list(SAMPLED_COLUMNS), keys=keys)
        check_tokens_schema_version(table.schema, url)
        rows.extend(SampledRow.from_table(table))
    return rows


def originals(task: SpotcheckTask, storage: StorageOptions) -> Iterator[DecodeRow]:
    """One shard's sampled token rows, each with its original PCM from the shard.

    A sample missing from its shard or unreadable is skipped (the driver reports it as
    missing) rather than raised: one bad sample must not fail the whole job.
    """
    wanted = {r.key: r for r in task.sampled_rows()}
    for key, members in iter_shard_samples(task.url, storage):
        if key not in wanted:
            continue
        original = sample_row(task.name, key, members)
        if not original.error:
            yield DecodeRow.of(wanted[key], original.pcm, original.song_peak, original.gain)


def attach_originals(row: dict[str, Any], storage: StorageOptions) -> Iterator[dict[str, Any]]:
    """Ray Data flat_map edge of `originals`: a `SpotcheckTask` dict -> `DecodeRow` dicts."""
    for decode_row in originals(SpotcheckTask.from_dict(row), storage):
        yield decode_row.to_dict()


def read_metrics(url: str, storage: StorageOptions | None = None) -> pa.Table:
    """A spot-check's `metrics.parquet` (`url` is the file or the spot-check output).

    Raises:
        UnsupportedVersion: The table has a schema version this code does not read.
    """
    if not url.endswith(".parquet"):
        url = join(url, "metrics.parquet")
    fs, path = filesystem(url, storage or StorageOptions())
    table = read_parquet(fs, path)
    check_metrics_schema(table.schema, url)
    return table


def spotcheck(
    tokens_url: str,
    shards_url: str,
    output_url: str,
    config: SpotcheckConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    force: bool = False,
) -> SpotcheckSummary:
    """Decode a reproducible sample of token rows and write metrics and a report.

    Args:
        tokens_url: Tokenize's output (or its token tables).
        shards_url: Prepare's output, for the original segments.
        output_url: Where to write the samples, metrics and report.
        config: The decoder and the sample.
        progress: Called as `progress(decoded, to_decode)` as the actors finish samples.
        force: Replace an output that holds a spot-check with other inputs or decoder
            settings instead of refusing it.

    Returns:
        The run's summary (also written to `summary.json`).

    Raises:
        FileNotFoundError: There are no token tables under `tokens_url`.
        OutputInUse: `output_url` holds a spot-check of other settings and not `force`.
        UnsupportedVersion: A token table or prepare's manifest has an unknown version.
    """
    import ray

    started = time.perf_counter()
    files = token_files(tokens_url, config.storage)
    if not files:
        raise FileNotFoundError(f"no token tables under {tokens_url}")
    index = _read_index(files, config.storage)
    count = config.count or max(1, math.ceil(config.fraction * len(index)))
    keys = choose_keys([(k, song) for k, song, _ in index], min(count, len(index)), config.seed)

    fs, root = filesystem(output_url, config.storage)
    _claim_output(fs, root, tokens_url, shards_url, config.decoder, force)
    done = {k for k in keys if exists(fs, join(root, SAMPLES_DIR, k, "metrics.json"))}
    file_of = {key: url for key, _, url in index}
    keys_by_file: dict[str, list[str]] = defaultdict(list)
    for key in sorted(set(keys) - done):
        keys_by_file[file_of[key]].append(key)
    pending = _read_rows(keys_by_file, config.storage)
    if progress:
        progress(0, len(pending))
    if pending:
        shard_urls = {s.name: s.url for s in find_shards(shards_url, config.storage)}
        by_shard: dict[str, list[SampledRow]] = defaultdict(list)
        for row in pending:
            by_shard[row.shard].append(row)
        items = [
            SpotcheckTask.of(name, shard_urls[name], rows).to_dict()
            for name, rows in sorted(by_shard.items())
        ]
        gpus = int(ray.cluster_resources().get("GPU", 0))
        dataset = (
            ray.data.from_items(items, override_num_blocks=len(items))
            .flat_map(attach_originals, fn_kwargs={"storage": config.storage}, num_cpus=1)
            .map_batches(
                SpotcheckDecode,
                fn_constructor_kwargs={
                    "spec": config.decoder, "output_url": output_url, "storage": config.storage,
                },
                batch_size=config.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=config.actors or max(1, gpus)),
                num_gpus=1 if gpus else 0,
                num_cpus=1,
            )
        )  # fmt: skip
        decoded = 0
        # The actors write each sample's files; the driver only counts them.
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            decoded += batch.num_rows
            if progress:
                progress(decoded, len(pending))

    finished = [k for k in keys if exists(fs, join(root, SAMPLES_DIR, k, "metrics.json"))]
    records = [
        SampleMetrics.from_dict(read_json(fs, join(root, SAMPLES_DIR, k, "metrics.json")))
        for k in finished
    ]
    _write_outputs(fs, root, records, tokens_url, shards_url, config)
    metric_means = {r["metric"]: r["mean"] for r in summary_rows([r.to_dict() for r in records])}
    summary = SpotcheckSummary(
        rows_in_tables=len(index),
        sampled=len(keys),
        songs_sampled=len({r.song_id for r in records}),
        decoded_now=len(finished) - len(done),
        already_done=len(done),
        missing=sorted(set(keys) - set(finished)),
        wall_seconds=time.perf_counter() - started,
        metrics=metric_means,
    )
    with atomic_write(fs, join(root, "summary.json")) as handle:
        handle.write(json.dumps(summary.to_dict(), indent=2).encode())
    return summary


def _claim_output(
    fs, root: str, tokens_url: str, shards_url: str, decoder: DecoderSpec, force: bool
) -> None:
    """Claim `root` for these inputs and decoder settings (what decides a sample's files)."""
    claim = {"tokens_url": tokens_url, "shards_url": shards_url, "decoder": asdict(decoder)}
    claim_output(
        fs, root, RUN_FILE, claim, OUTPUTS, force,
        describe=lambda previous: (
            f"a spot-check of {previous['tokens_url']!r} with other inputs or decoder settings "
            f"({_differences(previous, claim)})"
        ),
    )  # fmt: skip


def _differences(previous: dict[str, Any], claim: dict[str, Any]) -> str:
    """The claim's settings that differ, as `name: old -> new`, for the refusal."""

    def flat(data: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in data.items() if k != "decoder"}, **data.get("decoder", {})}

    old, new = flat(previous), flat(claim)
    return ", ".join(
        f"{name}: {old.get(name)!r} -> {new.get(name)!r}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )


def _write_outputs(
    fs, root, records: list[SampleMetrics], tokens_url, shards_url, config: SpotcheckConfig
) -> None:
    table = SampleMetrics.to_table(records).cast(METRICS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with atomic_write(fs, join(root, "metrics.parquet")) as handle:
        handle.write(buffer.getvalue())
    dicts = [r.to_dict() for r in records]
    with atomic_write(fs, join(root, "distributions.png")) as handle:
        handle.write(distributions_png(dicts))
    spec = config.decoder
    context = {
        "token tables": tokens_url,
        "shards": shards_url,
        "decoder": spec.checkpoint
        or spec.official_mucodec
        or f"preset {spec.preset} (random weights, seed {spec.seed})",
        "steps / guidance / dtype": f"{spec.steps} / {spec.guidance} / {spec.dtype}",
        "sample": f"{len(records)} segments, seed {config.seed}",
    }
    with atomic_write(fs, join(root, "report.html")) as handle:
        handle.write(render_report(dicts, context, SAMPLES_DIR).encode())
