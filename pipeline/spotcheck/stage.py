"""The spot-check stage: sample token rows, decode them, measure, and report.

Sampling is reproducible and stratified over songs: songs are visited in a seeded order and
each contributes one segment per round (its segments also in seeded order) until the target
count is reached, so a sample of N covers min(N, songs) songs before any song repeats.

Steps on Ray Data: the driver reads the sampled rows from the token tables; CPU tasks fetch
the original segments from their shards (each shard read once); an actor pool (GPU when
present) decodes, measures and writes each sample's files; the driver writes the metrics
table and the report. A rerun skips samples whose `metrics.json` exists.

Output layout under the output URL:
    samples/<key>/{original.wav, reconstruction.wav, spectrogram.png, metrics.json}
    metrics.parquet     one row of metrics per sample
    distributions.png   metric histograms
    report.html         summary, distributions, and per-sample spectrograms and players
    summary.json
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import (
    StorageOptions,
    atomic_write,
    exists,
    filesystem,
    join,
    read_json,
    read_parquet,
)
from pipeline.shard_reader import iter_shard_samples, sample_row
from pipeline.spotcheck.actor import SAMPLES_DIR, DecoderSpec, SpotcheckDecode
from pipeline.spotcheck.report import distributions_png, render_report, summary_rows
from pipeline.tokenize.dataset import token_files
from pipeline.tokenize.stage import find_shards

_ROW_COLUMNS = [
    "key", "song_id", "segment_index", "start_s", "duration_s", "n_frames", "codes", "shard",
    "tokenizer_config",
]  # fmt: skip


@dataclass(frozen=True)
class SpotcheckConfig:
    decoder: DecoderSpec
    count: int | None = None
    fraction: float | None = None
    seed: int = 0
    batch_size: int = 4
    actors: int | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of count or fraction")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")


@dataclass
class SpotcheckSummary:
    rows_in_tables: int
    sampled: int
    songs_sampled: int
    decoded_now: int
    already_done: int
    missing: list[str]  # Sampled keys whose original could not be read from the shards.
    wall_seconds: float
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
        keys, songs = table.column("key").to_pylist(), table.column("song_id").to_pylist()
        index.extend((key, song, url) for key, song in zip(keys, songs, strict=True))
    return index


def _read_rows(keys_by_file: dict[str, list[str]], storage: StorageOptions) -> list[dict]:
    """The sampled rows, reading only their files; parts are sorted by key, so row-group
    statistics skip most of each file."""
    rows = []
    for url, keys in sorted(keys_by_file.items()):
        fs, path = filesystem(url, storage)
        table = read_parquet(fs, path, _ROW_COLUMNS, keys=keys)
        rows.extend(table.to_pylist())
    return rows


def attach_originals(row: dict[str, Any], storage: StorageOptions):
    """Ray Data flat_map: one shard's sampled token rows, each with its original PCM.

    A sample missing from its shard or unreadable is skipped (the driver reports it as
    missing) rather than raised: one bad sample must not fail the whole job.
    """
    wanted = {r["key"]: r for r in json.loads(row["rows"])}
    for key, members in iter_shard_samples(row["url"], storage):
        if key not in wanted:
            continue
        original = sample_row(row["name"], key, members)
        if not original["error"]:
            token_row = wanted[key]
            yield {**token_row, **{k: original[k] for k in ("pcm", "song_peak", "gain")}}


def spotcheck(
    tokens_url: str,
    shards_url: str,
    output_url: str,
    config: SpotcheckConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SpotcheckSummary:
    """Decode a reproducible sample of token rows and write metrics and a report.

    `progress(decoded, to_decode)` is called as the actors finish samples.
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
        by_shard: dict[str, list[dict]] = defaultdict(list)
        for row in pending:
            by_shard[row["shard"]].append(row)
        items = [
            {"name": name, "url": shard_urls[name], "rows": json.dumps(rows)}
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
    records = [read_json(fs, join(root, SAMPLES_DIR, k, "metrics.json")) for k in finished]
    _write_outputs(fs, root, records, tokens_url, shards_url, config)
    metric_means = {r["metric"]: r["mean"] for r in summary_rows(records)}
    summary = SpotcheckSummary(
        rows_in_tables=len(index),
        sampled=len(keys),
        songs_sampled=len({r["song_id"] for r in records}),
        decoded_now=len(finished) - len(done),
        already_done=len(done),
        missing=sorted(set(keys) - set(finished)),
        wall_seconds=time.perf_counter() - started,
        metrics=metric_means,
    )
    with atomic_write(fs, join(root, "summary.json")) as handle:
        handle.write(json.dumps(summary.to_json(), indent=2).encode())
    return summary


def _write_outputs(fs, root, records, tokens_url, shards_url, config: SpotcheckConfig) -> None:
    table = pa.Table.from_pylist(records)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with atomic_write(fs, join(root, "metrics.parquet")) as handle:
        handle.write(buffer.getvalue())
    with atomic_write(fs, join(root, "distributions.png")) as handle:
        handle.write(distributions_png(records))
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
        handle.write(render_report(records, context, SAMPLES_DIR).encode())
