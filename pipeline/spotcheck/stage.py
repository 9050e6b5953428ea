"""The spot-check stage: sample segments, decode them with every codec, measure, and report.

The codecs are those with token tables under the tokens input (`<tokens>/<codec>/tokens`,
see `pipeline.spotcheck.codecs`). Sampling is reproducible and stratified over songs, and
made once from the keys every codec's tables hold, so every codec decodes the same segments:
songs are visited in a seeded order and each contributes one segment per round (its
segments also in seeded order) until the target count is reached, so a sample of N covers
min(N, songs) songs before any song repeats.

Steps on Ray Data: the driver reads the sampled rows from each codec's tables; CPU tasks
fetch the original segments from their shards (each shard read once) and write each
sample's original; an actor pool (GPU when present) decodes every codec's rows, measures
and writes their files; the driver writes the metrics table and the report.

Like prepare and tokenize, the stage claims its output (`_spotcheck/run.json`) with the
settings that decide each sample's files: the token and shard inputs, each codec's
identity (preset, mode, weights, bitrate, checkpoint) and its decoder settings (MuCodec's
decoder: its weights, steps, guidance, precision, noise seed and window). A rerun with the
same settings resumes, skipping samples whose `metrics.json` exists; other settings are
refused unless `force`, which deletes the old output first. The sample choice (count,
fraction, seed) is not part of the claim: a sample's files do not depend on which others
were chosen, so a rerun that chooses more reuses those already decoded.

Output layout under the output URL:
    samples/<key>/{original.wav, original.png}
    samples/<key>/<codec>/{reconstruction.wav, spectrogram.png, metrics.json}
    metrics.parquet     one row of metrics per sample and codec
    report.html         per-codec comparison, plots, and per-segment spectrograms and players
    summary.json        per-codec means
    _spotcheck/run.json the inputs, codecs and decoders this output belongs to
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audio_codecs import registry
from audio_codecs.base import RANDOM_WEIGHTS
from core.config import JsonConfig
from core.errors import MissingInput
from pipeline.claims import claim_output
from pipeline.io import StorageOptions, atomic_write, exists, filesystem, join, read_json
from pipeline.parquet_files import read_parquet
from pipeline.shard_reader import find_shards, iter_shard_samples, sample_row
from pipeline.spotcheck.actor import (
    SAMPLES_DIR,
    SpotcheckDecode,
    stored_audio,
    wav_bytes,
)
from pipeline.spotcheck.codecs import TableCodec, find_codec_tables
from pipeline.spotcheck.report import codec_summaries, render_report
from pipeline.spotcheck.rows import (
    SAMPLED_COLUMNS,
    DecodeRow,
    SampledRow,
    SampleMetrics,
    SpotcheckTask,
)
from pipeline.spotcheck.spectrogram import mel_png
from schemas.codebook_stats import check_codebook_stats
from schemas.metrics import METRICS_SCHEMA, METRICS_SCHEMA_VERSION, check_metrics_schema
from schemas.run import versioned_summary
from schemas.tokens import check_tokens_schema_version
from schemas.version import json_version

RUN_FILE = "_spotcheck/run.json"
# Everything a run writes under its output (a `--force` claim deletes these; version 1
# runs also wrote distributions.png).
OUTPUTS = (SAMPLES_DIR, "_spotcheck", "metrics.parquet", "distributions.png", "report.html",
           "summary.json")  # fmt: skip


@dataclass(frozen=True)
class SpotcheckConfig:
    """What to decode and how: each codec's decoder settings (`(codec, settings)` pairs, the
    plugins' `decoder_options`), the checkpoints codecs' tables were made from (`(codec,
    path)` pairs), the sample (exactly one of `count` and `fraction`, chosen with `seed`),
    and how to run (batch size, actors, storage)."""

    decoders: tuple[tuple[str, dict[str, Any]], ...] = ()
    checkpoints: tuple[tuple[str, str], ...] = ()
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

    `rows_in_tables` counts the segments every codec's tables hold (the sampling frame);
    `metrics` holds, per codec, the mean of each metric over its decoded samples.
    """

    codecs: list[str]
    rows_in_tables: int
    sampled: int
    songs_sampled: int
    decoded_now: int
    already_done: int
    missing: list[str]  # Sampled keys not decoded by every codec (original unreadable).
    wall_seconds: float
    metrics: dict[str, dict[str, float]]

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


def sample_keys(
    indexes: dict[str, list[tuple[str, str]]], count: int | None, fraction: float | None, seed: int
) -> tuple[list[str], int]:
    """The keys every codec decodes, and how many keys all codecs' tables share.

    Args:
        indexes: Per codec, `(key, song_id)` of every row of its tables.
        count: How many keys to choose, or None for `fraction` of the shared keys.
        fraction: The share of the shared keys to choose (with `count` None).
        seed: Seed of `choose_keys` over the shared keys.
    """
    shared = set.intersection(*(set(index) for index in indexes.values())) if indexes else set()
    wanted = count or max(1, math.ceil(fraction * len(shared)))
    return choose_keys(sorted(shared), min(wanted, len(shared)), seed), len(shared)


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
    """One shard's sampled token rows (of every codec), each with its original PCM.

    A sample missing from its shard or unreadable is skipped (the driver reports it as
    missing) rather than raised: one bad sample must not fail the whole job.
    """
    wanted: dict[str, list[SampledRow]] = defaultdict(list)
    for row in task.sampled_rows():
        wanted[row.key].append(row)
    for key, members in iter_shard_samples(task.url, storage):
        if key not in wanted:
            continue
        original = sample_row(task.name, key, members)
        if not original.error:
            for row in sorted(wanted[key], key=lambda r: r.codec):
                yield DecodeRow.of(row, original.pcm, original.song_peak, original.gain)


def write_original(row: DecodeRow, output_url: str, storage: StorageOptions) -> None:
    """`samples/<key>/original.wav` and `original.png` (its log mel), unless already there."""
    fs, root = filesystem(output_url, storage)
    folder = join(root, SAMPLES_DIR, row.key)
    if exists(fs, join(folder, "original.png")):
        return
    stored = stored_audio(row.pcm)
    files = {"original.wav": wav_bytes(stored.numpy()), "original.png": mel_png(stored, row.key)}
    for name, data in files.items():  # The picture last: it marks both written.
        with atomic_write(fs, join(folder, name)) as handle:
            handle.write(data)


def attach_originals(
    row: dict[str, Any], storage: StorageOptions, output_url: str
) -> Iterator[dict[str, Any]]:
    """Ray Data flat_map edge of `originals`: a `SpotcheckTask` dict -> `DecodeRow` dicts;
    writes each sample's original once on the way."""
    written: set[str] = set()
    for decode_row in originals(SpotcheckTask.from_dict(row), storage):
        if decode_row.key not in written:
            write_original(decode_row, output_url, storage)
            written.add(decode_row.key)
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

    started = time.perf_counter()
    tables = find_codec_tables(
        tokens_url, config.storage, dict(config.checkpoints), dict(config.decoders)
    )
    if not tables:
        raise MissingInput(f"no token tables under {tokens_url}/<codec>/tokens")
    indexes = {t.codec: _read_index(list(t.files), config.storage) for t in tables}
    keys, shared = sample_keys(
        {c: [(k, song) for k, song, _ in index] for c, index in indexes.items()},
        config.count, config.fraction, config.seed,
    )  # fmt: skip

    fs, root = filesystem(output_url, config.storage)
    _claim_output(fs, root, tokens_url, shards_url, tables, force)

    def done(key: str, codec: str) -> bool:
        return exists(fs, join(root, SAMPLES_DIR, key, codec, "metrics.json"))

    done_before = {(k, t.codec) for k in keys for t in tables if done(k, t.codec)}
    pending: list[SampledRow] = []
    for table in tables:
        file_of = {key: url for key, _, url in indexes[table.codec]}
        keys_by_file: dict[str, list[str]] = defaultdict(list)
        for key in sorted(k for k in keys if (k, table.codec) not in done_before):
            keys_by_file[file_of[key]].append(key)
        pending.extend(_read_rows(keys_by_file, config.storage))
    if progress:
        progress(0, len(pending))
    if pending:
        _decode(pending, shards_url, output_url, tables, config, progress)

    finished = [(k, t.codec) for k in keys for t in tables if done(k, t.codec)]
    records = [
        read_sample_metrics(fs, join(root, SAMPLES_DIR, k, c, "metrics.json")) for k, c in finished
    ]
    _write_outputs(fs, root, records, tokens_url, shards_url, tables, config)
    summary = SpotcheckSummary(
        codecs=[t.codec for t in tables],
        rows_in_tables=shared,
        sampled=len(keys),
        songs_sampled=len({r.song_id for r in records}),
        decoded_now=len({k for k, c in finished} - {k for k, c in done_before}),
        already_done=len({k for k, c in done_before}),
        missing=sorted(set(keys) - {k for k, c in finished if _all_done(k, finished, tables)}),
        wall_seconds=time.perf_counter() - started,
        metrics={
            codec: {r["metric"]: r["mean"] for r in rows}
            for codec, rows in codec_summaries([r.to_dict() for r in records]).items()
        },
    )
    with atomic_write(fs, join(root, "summary.json")) as handle:
        handle.write(json.dumps(summary.to_dict(), indent=2).encode())
    return summary


def _all_done(key: str, finished: list[tuple[str, str]], tables: list[TableCodec]) -> bool:
    return all((key, t.codec) in finished for t in tables)


def _decode(
    pending: list[SampledRow],
    shards_url: str,
    output_url: str,
    tables: list[TableCodec],
    config: SpotcheckConfig,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Decode `pending` rows on Ray: shard readers attach originals, actors decode."""
    import ray

    shard_urls = {s.name: s.url for s in find_shards(shards_url, config.storage)}
    by_shard: dict[str, list[SampledRow]] = defaultdict(list)
    for row in pending:
        by_shard[row.shard].append(row)
    items = [
        SpotcheckTask.of(name, shard_urls[name], rows).to_dict()
        for name, rows in sorted(by_shard.items())
    ]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    codecs = [table.to_dict() for table in tables]
    dataset = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(
            attach_originals,
            fn_kwargs={"storage": config.storage, "output_url": output_url},
            num_cpus=1,
        )
        .map_batches(
            SpotcheckDecode,
            fn_constructor_kwargs={
                "codecs": codecs, "output_url": output_url, "storage": config.storage,
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


def _claim_output(
    fs,
    root: str,
    tokens_url: str,
    shards_url: str,
    tables: list[TableCodec],
    force: bool,
) -> None:
    """Claim `root` for these inputs, codecs and their decoders (what decides the files)."""
    claim = {
        "tokens_url": tokens_url,
        "shards_url": shards_url,
        "codecs": {t.codec: t.identity() for t in tables},
    }
    claim_output(
        fs, root, RUN_FILE, claim, OUTPUTS, force,
        describe=lambda previous: (
            f"a spot-check of {previous['tokens_url']!r} with other inputs, codecs or decoder "
            "settings "
            f"({_differences(previous, claim)})"
        ),
    )  # fmt: skip


def _differences(previous: dict[str, Any], claim: dict[str, Any]) -> str:
    """The claim's settings that differ, as `name: old -> new`, for the refusal."""

    def flat(data: dict[str, Any]) -> dict[str, Any]:
        codecs = data.get("codecs", {})
        plain = {k: v for k, v in data.items() if k != "codecs"}
        per_codec = {f"{c}.{k}": v for c, d in codecs.items() for k, v in d.items()}
        decoders = {
            f"{c}.{k}": v for c, d in codecs.items() for k, v in d.get("decoder", {}).items()
        }
        per_codec = {k: v for k, v in per_codec.items() if not k.endswith(".decoder")}
        return {**plain, "codecs": sorted(codecs), **per_codec, **decoders}

    old, new = flat(previous), flat(claim)
    return ", ".join(
        f"{name}: {old.get(name)!r} -> {new.get(name)!r}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )


def _write_outputs(
    fs, root, records, tokens_url, shards_url, tables: list[TableCodec], config: SpotcheckConfig
) -> None:
    """metrics.parquet and report.html from every decoded (sample, codec)'s metrics."""
    table = SampleMetrics.to_table(records).cast(METRICS_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with atomic_write(fs, join(root, "metrics.parquet")) as handle:
        handle.write(buffer.getvalue())
    context = {
        "token tables": tokens_url,
        "shards": shards_url,
        **{
            f"codec {t.codec}": f"{t.recorded.preset or 'checkpoint'} {t.recorded.mode}, "
            f"{t.recorded.bitrate_kbps:.2f} kbps, weights {_weights(t.recorded.weights_sha256)}"
            for t in tables
        },
        **{
            line: text
            for t in tables
            for line, text in registry.plugin(t.codec).decoder_facts(t.decoder).items()
        },
        "sample": f"{len({r.key for r in records})} segments, seed {config.seed}",
    }
    stats = {t.codec: _codebook_stats(tokens_url, t.codec, config.storage) for t in tables}
    page = render_report([r.to_dict() for r in records], context, stats, SAMPLES_DIR)
    with atomic_write(fs, join(root, "report.html")) as handle:
        handle.write(page.encode())


def _weights(sha256: str) -> str:
    """Random weights in full (they name their seed), a file's sha256 cut short."""
    return sha256 if sha256.startswith(RANDOM_WEIGHTS) else sha256[:12]


def _codebook_stats(tokens_url: str, codec: str, storage: StorageOptions) -> dict | None:
    """Tokenize's `<codec>/codebook_stats.json`, or None when that run wrote none."""
    url = join(tokens_url, codec, "codebook_stats.json")
    fs, path = filesystem(url, storage)
    return check_codebook_stats(read_json(fs, path), url) if exists(fs, path) else None


def read_sample_metrics(fs, path: str) -> SampleMetrics:
    """One sample's `metrics.json`, after checking its version.

    Raises:
        UnsupportedVersion: The file carries a version other than `METRICS_SCHEMA_VERSION`.
    """
    data = read_json(fs, path)
    json_version(data, METRICS_SCHEMA_VERSION, "sample metrics", path)
    return SampleMetrics.from_dict({k: v for k, v in data.items() if k != "version"})
