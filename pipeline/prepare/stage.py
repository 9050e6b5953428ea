"""The prepare stage end to end: discover, run pending units on Ray Data, write run artifacts.

Output layout under the output URL:
    shards/<unit>-<part>.tar    WebDataset shards
    rejects.parquet             every unusable input (path, stage, reason, song_id)
    manifest.json               the complete shards with sample counts, and the run config
    summary.json                counts, hours, throughput, splits, drops per reason
    quality.parquet             the measures of every song and segment (schemas/quality.py)
    duplicates.parquet          near-duplicate groups (pipeline/prepare/curation.py)
    card.json, card.html        the dataset card (pipeline/card/)
    _prepare/run.json           the input and config this output belongs to
    _prepare/fingerprints.parquet  the sha256 of each source file, reused while it is unchanged
    _prepare/survey.parquet     fingerprints, bandwidth and tags per file (survey.py)
    _prepare/units/<unit>.json  per-unit completion markers (results, rejects)
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.config import JsonConfig
from pipeline.claims import Fence, claim_output
from pipeline.io import filesystem, join, remove_partials, write_json
from pipeline.parquet_files import write_parquet
from pipeline.path_text import path_text
from pipeline.prepare.card import CARD_HTML, CARD_JSON, write_card
from pipeline.prepare.corpus import discover
from pipeline.prepare.curation import DUPLICATES_FILE, curate, earlier_songs
from pipeline.prepare.fingerprint import fingerprint_songs
from pipeline.prepare.isolation import run_unit_isolated
from pipeline.prepare.records import Reject
from pipeline.prepare.shards import ShardInfo
from pipeline.prepare.survey import SURVEY_FILE, read_survey, update_survey
from pipeline.prepare.unit import (
    SHARDS_DIR,
    PrepareConfig,
    Unit,
    UnitResult,
    load_markers,
    plan_units,
)
from schemas.manifest import MANIFEST_VERSION
from schemas.quality import QUALITY_FILE, QUALITY_SCHEMA
from schemas.rejects import REJECTS_SCHEMA
from schemas.run import versioned_summary

log = logging.getLogger(__name__)

RUN_FILE = "_prepare/run.json"
# Everything a run writes under its output (a `--force` claim deletes these).
OUTPUTS = (
    SHARDS_DIR, "_prepare", "rejects.parquet", "manifest.json", "summary.json", QUALITY_FILE,
    DUPLICATES_FILE, CARD_JSON, CARD_HTML,
)  # fmt: skip


@dataclass
class PrepareSummary(JsonConfig):
    """What a prepare run did; written as `summary.json` and returned to the job."""

    songs_in: int
    songs_ok: int
    songs_rejected: int
    rejects: int
    audio_hours: float
    segments: int
    shards: int
    units: int
    units_run: int
    units_already_done: int
    units_failed: int
    files_hashed: int  # Source files read and hashed this run; the others were cached.
    fingerprint_seconds: float
    files_surveyed: int  # Files decoded for fingerprints and tags this run (others cached).
    # The survey's cost, summed over workers: part of fingerprint_seconds, apart from units.
    survey_seconds: float
    duplicate_groups: int
    splits: dict[str, dict[str, float]]  # split -> songs, segments, hours kept.
    drops: dict[str, int]  # Songs or segments dropped, per filter (and near_duplicate).
    wall_seconds: float
    audio_seconds_this_run: float
    throughput_realtime: float  # Audio seconds prepared per wall second, this run.
    throughput_per_core: float
    cores: int  # CPUs that had work: min(cluster CPUs, concurrency, units run).
    peak_worker_rss_bytes: int
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The summary as written to `summary.json`, with its schema version."""
        return versioned_summary("prepare", super().to_dict())


def run_unit_row(
    row: dict[str, Any], config: PrepareConfig, output_url: str, fence: Fence
) -> dict[str, Any]:
    """Ray Data map function: one unit per row; errors come back as data, never raised."""
    unit = Unit.from_json(row["unit"])
    try:
        result = run_unit_isolated(unit, config, output_url, fence)
    except Exception as error:  # Ray Data fails the whole job on one raised row.
        return {"index": unit.index, "result": "", "error": f"{type(error).__name__}: {error}"}
    return {"index": unit.index, "result": result.to_json(), "error": ""}


def prepare_corpus(
    input_url: str,
    output_url: str,
    config: PrepareConfig,
    *,
    concurrency: int | None = None,
    force: bool = False,
    progress: Callable[[int, int, UnitResult | None], None] | None = None,
    fingerprint_progress: Callable[[int, int], None] | None = None,
) -> PrepareSummary:
    """Prepare `input_url` into shards at `output_url`, resuming any earlier run there.

    `fingerprint_progress(files_done, files)` follows the hashing and survey of the sources
    (pipeline/prepare/survey.py), then `progress(units_finished, units, result or None when
    the unit failed)` the units.

    Args:
        input_url: The catalog: a directory, a URL prefix or a manifest.
        output_url: Where shards, rejects, manifest and summary go.
        config: What shapes the output (recorded in the manifest and the run claim).
        concurrency: Units (and hashing tasks) at once; None: one per CPU.
        force: Replace an output that holds a different run.
        progress: See above.
        fingerprint_progress: See above.

    Returns:
        The run's summary, also written as `summary.json`. Units that failed are counted
        in it (`units_failed`, `failures`), not raised: a rerun finishes them.

    Raises:
        OutputInUse: if the output holds another run and `force` is not set.
        FileNotFoundError: if the input does not exist.
        InvalidManifest: if the input manifest cannot be read.
    """
    import ray  # Imported here so the plain functions above stay usable without Ray.

    started = time.perf_counter()
    fs, root = filesystem(output_url, config.storage)
    fence = _claim_output(fs, root, input_url, config, force)
    guard = fence.guard(fs)

    discovery = discover(input_url, config.storage, config.allowed_roots)
    surveyed = read_survey(fs, join(root, SURVEY_FILE))
    fingerprints = fingerprint_songs(
        discovery.songs, output_url, config.storage,
        surveyed=frozenset(surveyed), concurrency=concurrency, progress=fingerprint_progress,
    )  # fmt: skip
    survey = update_survey(fs, root, surveyed, fingerprints.songs, fingerprints.surveys,
                           fingerprints.survey_seconds)  # fmt: skip
    earlier = earlier_songs(config.dedupe_against, config.storage)
    curation = curate(fingerprints.songs, survey.rows, config.splits, config.dedupe, earlier)
    units = plan_units(curation.songs, config.songs_per_unit)
    done = load_markers(output_url, units, config.storage)
    pending = [u for u in units if u.index not in done]
    log.info(
        "%d songs in %d units; %d already done", len(fingerprints.songs), len(units), len(done)
    )

    failures: list[str] = []
    # A song the environment kept from being hashed may be a duplicate: its unit waits.
    unhashed = {u.index: why for u in pending for s in u.songs
                if (why := fingerprints.unhashed.get(s.song_id))}  # fmt: skip
    for finished, (index, why) in enumerate(sorted(unhashed.items()), start=1):
        failures.append(f"unit {index}: {why}")
        if progress:
            progress(finished, len(pending), None)
    runnable = [u for u in pending if u.index not in unhashed]
    audio_this_run = 0.0
    cores = int(ray.cluster_resources().get("CPU", 1))
    if runnable:
        rows = [{"unit": u.to_json()} for u in runnable]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            run_unit_row,
            fn_kwargs={"config": config, "output_url": output_url, "fence": fence},
            num_cpus=1,
            concurrency=concurrency,
        )
        for finished, row in enumerate(dataset.iter_rows(), start=len(unhashed) + 1):
            if row["error"]:
                failures.append(f"unit {row['index']}: {row['error']}")
                log.error("unit %d failed: %s", row["index"], row["error"])
                if progress:
                    progress(finished, len(pending), None)
                continue
            result = UnitResult.from_json(row["result"])
            done[result.index] = result
            audio_this_run += result.audio_seconds
            if progress:
                progress(finished, len(pending), result)

    results = [done[u.index] for u in units if u.index in done]
    rejects = [*discovery.rejects, *fingerprints.rejects, *curation.rejects]
    rejects += [r for result in results for r in result.rejects]
    # A run replaced meanwhile (--force) stops at its first fenced write, before it deletes.
    _write_rejects(fs, join(root, "rejects.parquet"), rejects, guard)
    quality = pa.Table.from_pylist([row for r in results for row in r.quality],
                                   schema=QUALITY_SCHEMA)  # fmt: skip
    write_parquet(fs, join(root, QUALITY_FILE), quality, guard)
    write_parquet(fs, join(root, DUPLICATES_FILE), curation.duplicates, guard)
    card = write_card(fs, root, path_text(input_url), quality, rejects, curation.duplicates,
                      guard)  # fmt: skip
    shards = [shard for result in results for shard in result.shards]
    complete = len(results) == len(units)
    _write_manifest(fs, root, input_url, config, shards, complete, guard)
    if complete:
        _remove_orphan_shards(fs, join(root, SHARDS_DIR), {s.name for s in shards})
        # Every unit has finished: a partial file still here lost its writer to a kill.
        remove_partials(fs, root, OUTPUTS)

    wall = time.perf_counter() - started
    # Units run one per CPU; with fewer units than CPUs the rest sat idle.
    cores_used = max(1, min(cores, concurrency or cores, len(runnable)))
    # Every discovery reject is one input turned away (a row without a path, a duplicate id,
    # a location outside the allowed roots), except refused lyrics: their song is kept.
    songs_in = len(discovery.songs) + sum(r.stage == "discover" for r in discovery.rejects)
    songs_ok = sum(r.songs_ok for r in results)
    # A song counts once however many of its rejects; a dropped segment leaves its song in,
    # unless the filters dropped all its segments (its quality row says the song is out).
    # The card's own tally per split, less its artist counts.
    splits = {name: {key: split[key] for key in ("songs", "segments", "hours")}
              for name, split in card["splits"].items()}  # fmt: skip
    rejected_songs = {(path_text(r.path), r.song_id) for r in rejects
                      if r.stage != "lyrics" and r.segment_index is None}  # fmt: skip
    dropped = quality.filter(pc.and_(pc.equal(quality.column("level"), "song"),
                                     pc.invert(quality.column("kept"))))  # fmt: skip
    rejected_songs |= set(zip(dropped.column("source").to_pylist(),
                              dropped.column("song_id").to_pylist(), strict=True))  # fmt: skip
    summary = PrepareSummary(
        songs_in=songs_in,
        songs_ok=songs_ok,
        songs_rejected=len(rejected_songs),
        rejects=len(rejects),
        audio_hours=sum(r.audio_seconds for r in results) / 3600,
        segments=sum(r.segments for r in results),
        shards=len(shards),
        units=len(units),
        units_run=len(pending),
        units_already_done=len(units) - len(pending),
        units_failed=len(failures),
        files_hashed=fingerprints.hashed,
        fingerprint_seconds=fingerprints.seconds,
        files_surveyed=survey.surveyed,
        survey_seconds=survey.seconds,
        duplicate_groups=curation.groups,
        splits=splits,
        drops=dict(sorted(Counter(r.rule for r in rejects if r.rule).items())),
        wall_seconds=wall,
        audio_seconds_this_run=audio_this_run,
        throughput_realtime=audio_this_run / wall if wall else 0.0,
        throughput_per_core=audio_this_run / wall / cores_used if wall else 0.0,
        cores=cores_used,
        peak_worker_rss_bytes=max((r.peak_rss_bytes for r in results), default=0),
        failures=failures,
    )
    write_json(fs, join(root, "summary.json"), summary.to_dict(), guard)
    return summary


def _claim_output(fs, root: str, input_url: str, config: PrepareConfig, force: bool) -> Fence:
    shaping = _output_shaping(config)
    # Allowed roots decide which songs are admitted, as the catalog's contents do, not how
    # they are written: a rerun that allows what the last one refused resumes (its units
    # with new songs are redone), it is not another run.
    del shaping["allowed_roots"]
    return claim_output(
        fs, root, RUN_FILE, {"input_url": input_url, "config": shaping},
        owned=OUTPUTS,
        force=force,
        describe=lambda previous: f"a prepare run of {previous['input_url']!r} with another config",
    )  # fmt: skip


def _output_shaping(config: PrepareConfig) -> dict[str, Any]:
    """The config fields that change what is written (not where scratch files go)."""
    data = config.to_dict()
    data.pop("scratch_dir")
    data.pop("storage")
    return data


def _write_rejects(fs, path: str, rejects: list[Reject], fence: Callable[[], None]) -> None:
    table = pa.Table.from_pylist([r.to_row() for r in rejects], schema=REJECTS_SCHEMA)
    write_parquet(fs, path, table, fence)


def _write_manifest(
    fs, root: str, input_url: str, config: PrepareConfig, shards: list[ShardInfo], complete: bool,
    fence: Callable[[], None],
) -> None:  # fmt: skip
    write_json(
        fs,
        join(root, "manifest.json"),
        {
            "version": MANIFEST_VERSION,
            "complete": complete,
            "input_url": input_url,
            "config": _output_shaping(config),
            "shards": [s.to_dict() for s in shards],
            "samples": sum(s.samples for s in shards),
        },
        fence,
    )


def _remove_orphan_shards(fs, shards_dir: str, keep: set[str]) -> None:
    """Shards of units that no longer exist (the corpus shrank) or never finished."""
    fs.invalidate_cache(shards_dir)
    if not fs.exists(shards_dir):
        return
    for path in fs.ls(shards_dir, detail=False):
        if os.path.basename(path) not in keep:
            fs.rm_file(path)
